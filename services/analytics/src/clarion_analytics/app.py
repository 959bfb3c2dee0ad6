"""The analytics application: FastAPI (API, dashboard, probes, metrics) + Kafka consumers.

One process serves HTTP with uvicorn and runs the FastStream broker inside the
FastAPI lifespan: start-up migrates the database, creates missing topics, opens
the repository and only then starts consuming; shutdown first marks the service
not ready, stops the broker (in-flight batches finish and commit, nothing else
is committed) and closes the database pool.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from datetime import timedelta
from pathlib import Path

from fastapi import FastAPI
from prometheus_client import CollectorRegistry

from clarion_analytics.adapters.kafka import CONSUMED, build_broker
from clarion_analytics.adapters.postgres import AnalyticsRepository
from clarion_analytics.api import dashboard, dev, routes
from clarion_analytics.handlers.consume import BatchHandler
from clarion_analytics.handlers.metrics import AnalyticsMetrics
from clarion_analytics.settings import AnalyticsSettings
from clarion_contracts.v1 import utc_now
from clarion_kit import db
from clarion_kit.health import HealthChecks, health_router
from clarion_kit.kafka import ensure_topics
from clarion_kit.kafka import ping as kafka_ping
from clarion_kit.logging import configure_logging, get_logger
from clarion_kit.metrics import instrument_fastapi
from clarion_kit.problems import install_problem_handlers
from clarion_kit.retry import RecordLike
from clarion_kit.tracing import configure_tracing, http_telemetry

MIGRATIONS_DIR = Path(__file__).resolve().parent / "migrations"
PRUNE_INTERVAL_SECONDS = 3600.0

log = get_logger(__name__)


async def _prune(repo: AnalyticsRepository, settings: AnalyticsSettings) -> None:
    """Hourly: drop dedup keys and per-notification facts past their retention.

    Dedup keys must outlive topic retention (7 days) so a redelivery is still
    recognised; facts bound how late a read or click may arrive and still count.
    """
    while True:
        try:
            pruned = await repo.prune(
                dedup_before=utc_now() - timedelta(days=settings.processed_retention_days),
                facts_before=utc_now() - timedelta(days=settings.facts_retention_days),
            )
            if pruned:
                log.info("analytics state pruned", rows=pruned)
        except Exception as exc:
            log.warning("pruning analytics state failed", error_type=type(exc).__name__)
        await asyncio.sleep(PRUNE_INTERVAL_SECONDS)


def create_app(
    settings: AnalyticsSettings | None = None,
    *,
    registry: CollectorRegistry | None = None,
) -> FastAPI:
    """Build the analytics app (nothing connects until the lifespan starts).

    Args:
        settings: configuration; default read from ``CLARION_ANALYTICS_*`` / ``CLARION_*``.
        registry: Prometheus registry (default: the process one); tests pass their own.
    """
    cfg = settings or AnalyticsSettings()
    checks = HealthChecks()
    metrics = AnalyticsMetrics(registry)
    handler_ref: dict[str, BatchHandler] = {}

    def get_handler() -> BatchHandler:
        return handler_ref["handler"]

    broker = build_broker(cfg, get_handler, registry=registry) if cfg.consume else None

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        configure_logging(cfg)
        configure_tracing(cfg)
        if cfg.migrate_on_start:
            await db.upgrade(cfg.database_url, MIGRATIONS_DIR)
        engine = db.create_engine(cfg)
        repo = AnalyticsRepository(engine)
        checks.add("postgres", lambda: db.ping(engine))
        prune = asyncio.create_task(_prune(repo, cfg))
        try:
            if broker is not None:
                if cfg.create_topics:
                    await ensure_topics(cfg, CONSUMED)
                dlq = broker.clarion_dlq  # type: ignore[attr-defined]

                async def dead_letter(record: RecordLike, exc: BaseException) -> None:
                    await dlq.send(record, exc, 1)

                handler_ref["handler"] = BatchHandler(repo, dead_letter, metrics)
                await broker.start()
                checks.add("kafka", lambda: kafka_ping(broker))
            app.state.repo = repo
            log.info("analytics started", port=cfg.http_port, consuming=broker is not None)
            yield
        finally:
            checks.set_ready(False)
            app.state.repo = None
            if broker is not None:
                await broker.stop()
            prune.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await prune
            await engine.dispose()
            log.info("analytics stopped")

    # The schema maps every endpoint: only development and test serve it by default.
    docs = cfg.serves_api_docs
    app = FastAPI(
        title="Clarion analytics",
        version="1.0.0",
        description="Delivery funnel, latency percentiles, failures and online users.",
        lifespan=lifespan,
        telemetry=http_telemetry(),
        docs_url="/docs" if docs else None,
        redoc_url="/redoc" if docs else None,
        openapi_url="/openapi.json" if docs else None,
    )
    app.state.settings = cfg
    app.state.repo = None
    app.state.broker = broker
    install_problem_handlers(app)
    instrument_fastapi(app, cfg.service_name, registry=registry)
    app.include_router(health_router(checks))
    app.include_router(routes.router)
    app.include_router(dev.router)
    app.include_router(dashboard.router)
    app.mount("/static", dashboard.static_files(), name="static")
    return app
