"""The live resources of one running ingest-api app (built in the lifespan)."""

from __future__ import annotations

from dataclasses import dataclass

import redis.asyncio as aioredis
from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from clarion_ingest.adapters.kafka import BrokerConnection, EventPublisher
from clarion_ingest.adapters.redis_store import CountsCache, RateLimiter
from clarion_ingest.adapters.relay import OutboxRelay
from clarion_ingest.settings import IngestSettings
from clarion_kit.health import HealthChecks


@dataclass
class Runtime:
    """Everything request handlers and consumers share: settings, stores, broker, relay.

    ``store_engine`` is the pool of ``api.common.store`` (no pre-ping: see there).
    """

    settings: IngestSettings
    engine: AsyncEngine
    store_engine: AsyncEngine
    redis: aioredis.Redis
    broker: KafkaBroker
    connection: BrokerConnection
    publisher: EventPublisher
    counts: CountsCache
    limiter: RateLimiter
    health: HealthChecks
    relay: OutboxRelay
