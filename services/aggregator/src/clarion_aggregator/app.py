"""The aggregator application: a FastStream app around the pipeline.

``faststream run clarion_aggregator.app:create_app --factory`` runs it. Start-up
creates the topics (registry + DLQs), loads the rules, connects Redis, rebuilds
the Redis state from the topics when it is missing (:mod:`.handlers.rebuild`), serves
``/healthz``, ``/readyz`` and ``/metrics`` on ``settings.http_port`` (8003) and
starts the digest flusher once the broker consumes; shutdown stops the flusher,
lets the broker commit what it finished, then closes Redis.
"""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.kafka import KafkaBroker

from clarion_aggregator.adapters.kafka import KafkaPublisher, create_broker, ensure_topics
from clarion_aggregator.adapters.rebuild_store import RebuildStore
from clarion_aggregator.adapters.redis_store import RedisStateStore
from clarion_aggregator.domain.clock import Clock, SystemClock
from clarion_aggregator.domain.rendering import Renderer
from clarion_aggregator.domain.rules import load_rules
from clarion_aggregator.handlers.digest import DigestFlusher
from clarion_aggregator.handlers.pipeline import Pipeline
from clarion_aggregator.handlers.rebuild import StateRebuilder
from clarion_aggregator.handlers.subscribers import register
from clarion_aggregator.metrics import AggregatorMetrics
from clarion_aggregator.settings import AggregatorSettings
from clarion_kit.health import HealthChecks, HealthServer, health_app
from clarion_kit.kafka import ping as kafka_ping
from clarion_kit.logging import configure_logging, get_logger
from clarion_kit.redis import create_redis

log = get_logger(__name__)


@dataclass
class AggregatorService:
    """Every running part of one aggregator instance (built by :func:`build_service`)."""

    settings: AggregatorSettings
    broker: KafkaBroker
    redis: aioredis.Redis
    store: RedisStateStore
    publisher: KafkaPublisher
    pipeline: Pipeline
    flusher: DigestFlusher
    rebuilder: StateRebuilder
    checks: HealthChecks
    app: FastStream
    health_server: HealthServer | None = None


def build_service(
    settings: AggregatorSettings | None = None,
    *,
    clock: Clock | None = None,
    serve_http: bool = True,
    start_flusher: bool = True,
    create_topics: bool = True,
) -> AggregatorService:
    """Build (without connecting) one aggregator instance.

    Args:
        settings: configuration (default: from the environment).
        clock: wall clock (default :class:`SystemClock`; tests pass a ``ManualClock``).
        serve_http: serve health and metrics on ``settings.http_port``.
        start_flusher: run the periodic digest flusher.
        create_topics: create missing topics at start-up.
    """
    settings = settings or AggregatorSettings()
    clock = clock or SystemClock()
    metrics = AggregatorMetrics.create()
    broker = create_broker(settings)
    redis = create_redis(settings)
    store = RedisStateStore(redis, settings.redis_prefix, settings.state_ttl_seconds)
    publisher = KafkaPublisher(broker)
    pipeline = Pipeline(
        settings,
        store,
        publisher,
        load_rules(settings.rules_path),
        Renderer(settings.templates_dir),
        clock,
        metrics,
    )
    flusher = DigestFlusher(settings, store, publisher, clock, metrics)
    rebuilder = StateRebuilder(
        settings, store, RebuildStore(redis, settings.redis_prefix), clock, metrics
    )
    register(broker, settings, pipeline, store, publisher, metrics, rebuilder)
    checks = HealthChecks()
    checks.add("redis", redis.ping)
    checks.add("kafka", lambda: kafka_ping(broker))
    app = FastStream(broker)
    service = AggregatorService(
        settings, broker, redis, store, publisher, pipeline, flusher, rebuilder, checks, app
    )

    @app.on_startup
    async def _startup() -> None:
        configure_logging(settings)
        if create_topics:
            await ensure_topics(settings)
        # Rules are re-read at each start so an operator's edit applies on restart.
        pipeline.rules = load_rules(settings.rules_path)
        await redis.ping()
        # No event is aggregated before Redis holds complete state (first start on an
        # empty Redis, or a restart after it lost its data).
        await rebuilder.ensure()
        if serve_http:
            service.health_server = HealthServer(
                health_app(checks), settings.http_host, settings.http_port
            )
            await service.health_server.start()

    @app.after_startup
    async def _started() -> None:
        if start_flusher:
            flusher.start()
        log.info("aggregator_started", instance=settings.instance_id)

    @app.on_shutdown
    async def _shutdown() -> None:
        await flusher.stop()
        if service.health_server is not None:
            await service.health_server.stop()
            service.health_server = None

    @app.after_shutdown
    async def _closed() -> None:
        await redis.aclose()

    return service


def create_app(settings: AggregatorSettings | None = None) -> FastStream:
    """FastStream application factory (``faststream run ... --factory``)."""
    return build_service(settings).app
