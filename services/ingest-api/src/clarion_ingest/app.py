"""The ingest-api FastAPI application: ``create_app(settings=None)`` and its lifespan.

Start-up order: alembic migrations (``clarion_kit.db.upgrade``), PostgreSQL
engine, Redis, the Kafka broker (topics created, consumers subscribed), then the
outbox relay. A Kafka outage does not stop the service from starting nor from
accepting writes (they are stored in the outbox and relayed once the broker is
back); ``/readyz`` reports Kafka and the relay without requiring them, and requires
PostgreSQL and Redis. Shutdown stops the relay and the consumers (committing what
they finished) before closing the stores.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from fastapi.openapi.utils import get_openapi
from fastapi.staticfiles import StaticFiles
from pydantic import BaseModel, Field
from pydantic.json_schema import models_json_schema

from clarion_contracts.v1 import DomainEvent
from clarion_ingest.adapters.consumers import InboxProjector, register_consumers
from clarion_ingest.adapters.kafka import BrokerConnection, EventPublisher
from clarion_ingest.adapters.redis_store import CountsCache, RateLimiter
from clarion_ingest.adapters.relay import OutboxRelay
from clarion_ingest.api import admin, dev, events, inbox, preferences, profiles
from clarion_ingest.api.middleware import BodySizeLimitMiddleware
from clarion_ingest.runtime import Runtime
from clarion_ingest.settings import IngestSettings
from clarion_kit import db as kit_db
from clarion_kit import redis as kit_redis
from clarion_kit.docs import serve_api_docs
from clarion_kit.health import HealthChecks, health_router
from clarion_kit.kafka import create_broker, ensure_topics
from clarion_kit.logging import get_logger
from clarion_kit.metrics import instrument_fastapi
from clarion_kit.problems import install_problem_handlers
from clarion_kit.retry import RecordLike
from clarion_kit.tracing import http_telemetry

PACKAGE_DIR = Path(__file__).resolve().parent
MIGRATIONS_DIR = PACKAGE_DIR / "alembic"
WEB_DIR = PACKAGE_DIR / "web"

_log = get_logger(__name__)


class EventBatch(BaseModel):
    """Body of ``POST /v1/events:batch`` (documentation model; parsing is stricter)."""

    events: list[DomainEvent] = Field(min_length=1, max_length=500)


def _lifespan(settings: IngestSettings) -> Any:
    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        if settings.run_migrations:
            await kit_db.upgrade(settings.database_url, MIGRATIONS_DIR)
        engine = kit_db.create_engine(settings)
        # Connections are kept, not opened per burst: a new one costs a connect, type
        # introspection and re-preparing the statements, several times a request's work.
        store_engine = kit_db.create_engine(
            settings, pool_pre_ping=False, pool_size=settings.store_pool_size, max_overflow=8
        )
        redis = kit_redis.create_redis(settings)
        counts = CountsCache(redis, settings.redis_prefix, settings.counts_cache_ttl_seconds)
        limiter = RateLimiter(
            redis,
            settings.redis_prefix,
            settings.rate_limit_strategy,
            settings.rate_limit_window_seconds,
        )
        broker = create_broker(settings)
        dlq = broker.clarion_dlq  # type: ignore[attr-defined]

        async def dead_letter(record: RecordLike, exc: BaseException) -> None:
            await dlq.send(record, exc, 1)

        projector = InboxProjector(engine, counts, settings.service_name, dead_letter=dead_letter)
        register_consumers(broker, settings, projector)

        async def before_connect() -> None:
            if settings.create_topics:
                await ensure_topics(settings, timeout=settings.send_timeout_seconds * 2)

        connection = BrokerConnection(
            broker,
            attempt_timeout=max(10.0, settings.send_timeout_seconds * 3),
            before_start=before_connect,
        )
        publisher = EventPublisher(broker, connection, settings.send_timeout_seconds)
        relay = OutboxRelay(engine, publisher, settings)
        health = HealthChecks()
        health.add("postgres", lambda: kit_db.ping(engine))
        health.add("redis", lambda: kit_redis.ping(redis))
        # Writes go to the outbox: the service accepts them while the broker is away.
        health.add("kafka", connection.check, required=False)
        if settings.outbox_relay:
            health.add("outbox", relay.check, required=False)
        runtime = Runtime(
            settings=settings,
            engine=engine,
            store_engine=store_engine,
            redis=redis,
            broker=broker,
            connection=connection,
            publisher=publisher,
            counts=counts,
            limiter=limiter,
            health=health,
            relay=relay,
        )
        app.state.health.delegate = health
        await connection.start()
        if settings.outbox_relay:
            relay.start()
        app.state.runtime = runtime
        _log.info("ingest-api started", kafka_connected=connection.connected)
        try:
            yield
        finally:
            health.set_ready(False)
            app.state.runtime = None
            await relay.stop()
            await connection.stop()
            await redis.aclose()
            await store_engine.dispose()
            await engine.dispose()

    return lifespan


class _DelegatingChecks(HealthChecks):
    """Health checks whose real set is attached by the lifespan (before that: not ready)."""

    def __init__(self) -> None:
        super().__init__()
        self.delegate: HealthChecks | None = None

    async def run(self) -> list[Any]:
        if self.delegate is None:
            from clarion_kit.health import CheckResult

            return [CheckResult("startup", False, 0.0, "the service is starting")]
        return await self.delegate.run()


def _openapi(app: FastAPI) -> Any:
    def build() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        schema = get_openapi(
            title=app.title,
            version=app.version,
            description=app.description,
            routes=app.routes,
        )
        _, defs = models_json_schema(
            [(DomainEvent, "validation"), (EventBatch, "validation")],
            ref_template="#/components/schemas/{model}",
        )
        components = schema.setdefault("components", {}).setdefault("schemas", {})
        for name, definition in defs.get("$defs", {}).items():
            components.setdefault(name, definition)
        app.openapi_schema = schema
        return schema

    return build


def create_app(settings: IngestSettings | None = None) -> FastAPI:
    """Build the ingest-api application (nothing connects until the lifespan runs).

    Args:
        settings: the configuration; read from the environment when None.

    In development the demo inbox page is served at ``/`` from ``web/`` and
    ``GET /v1/config`` tells it where the realtime gateway is. ``/docs``, ``/redoc``
    and ``/openapi.json`` exist only when ``settings.serves_api_docs``.
    """
    settings = settings or IngestSettings()
    docs = settings.serves_api_docs
    app = FastAPI(
        title="Clarion ingest-api",
        version="1.0.0",
        description="Domain events in; users' inboxes, preferences and push subscriptions.",
        lifespan=_lifespan(settings),
        telemetry=http_telemetry(),
        # The built-in pages load their assets from a CDN: blank offline.
        docs_url=None,
        redoc_url=None,
        openapi_url="/openapi.json" if docs else None,
    )
    if docs:
        serve_api_docs(app)
    app.state.runtime = None
    checks = _DelegatingChecks()
    app.state.health = checks
    install_problem_handlers(app)
    for module in (events, profiles, inbox, preferences, admin):
        app.include_router(module.router)
    development = settings.environment == "development"
    if development:
        app.include_router(dev.router)
    app.include_router(health_router(checks))
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=settings.max_body_bytes)
    instrument_fastapi(app, settings.service_name)
    app.openapi = _openapi(app)  # type: ignore[method-assign]
    if development and settings.serve_demo and WEB_DIR.is_dir():
        app.mount("/", StaticFiles(directory=WEB_DIR, html=True), name="demo")
    return app
