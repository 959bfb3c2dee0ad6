"""Shared fixtures and builders of the aggregator tests.

Integration fixtures use the ``devstack``, ``topic_prefix`` and ``redis_prefix``
fixtures of the clarion_devstack pytest plugin (embedded Tansu broker and Redis).
"""

from __future__ import annotations

import time
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.v1 import DomainEvent

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def make_event(
    *,
    actor: str = "alice",
    actor_name: str | None = None,
    recipients: list[str] | None = None,
    audience: dict[str, Any] | None = None,
    event_type: str = "post.liked",
    obj: tuple[str, str] = ("post", "p1"),
    title: str | None = "Hello",
    at: datetime = T0,
    event_id: uuid.UUID | None = None,
    priority: str | None = None,
    data: dict[str, Any] | None = None,
) -> DomainEvent:
    """A valid domain event with sensible defaults (recipient ``bob``)."""
    body: dict[str, Any] = {
        "event_id": str(event_id or uuid.uuid4()),
        "type": event_type,
        "occurred_at": at.isoformat(),
        "actor": {"id": actor, "name": actor_name or actor},
        "object": {"type": obj[0], "id": obj[1], "title": title},
        "data": data or {},
    }
    if audience is not None:
        body["audience"] = audience
    else:
        body["recipients"] = recipients or ["bob"]
    if priority is not None:
        body["priority"] = priority
    return DomainEvent.model_validate(body)


@pytest.fixture
def settings_factory(
    devstack: Any, topic_prefix: str, redis_prefix: str
) -> Callable[..., AggregatorSettings]:
    """Settings pointing at the embedded stack with this test's prefixes."""

    def build(**overrides: Any) -> AggregatorSettings:
        values: dict[str, Any] = {
            "kafka_bootstrap_servers": devstack.kafka_bootstrap_servers,
            "redis_url": devstack.redis_url,
            "topic_prefix": topic_prefix,
            "redis_prefix": redis_prefix,
            "kafka_partitions_override": 3,
            "http_port": 0,
            "digest_interval_seconds": 0.2,
            "environment": "test",
            "log_json": False,
        }
        values.update(overrides)
        return AggregatorSettings(**values)

    return build


@pytest.fixture
async def producer(devstack: Any) -> AsyncIterator[AIOKafkaProducer]:
    """A raw aiokafka producer on the embedded broker (acks=all, no idempotence)."""
    prod = AIOKafkaProducer(
        bootstrap_servers=devstack.kafka_bootstrap_servers,
        acks="all",
        enable_idempotence=False,
        linger_ms=2,
    )
    await prod.start()
    try:
        yield prod
    finally:
        await prod.stop()


class TopicReader:
    """Reads every record of one topic from the beginning (no consumer group)."""

    def __init__(self, bootstrap: str, topic: str, fetch_max_wait_ms: int = 10) -> None:
        self.topic = topic
        self.records: list[bytes] = []
        self._consumer = AIOKafkaConsumer(
            topic,
            bootstrap_servers=bootstrap,
            auto_offset_reset="earliest",
            enable_auto_commit=False,
            fetch_max_wait_ms=fetch_max_wait_ms,
            group_id=None,
        )

    async def start(self) -> None:
        """Connect."""
        await self._consumer.start()

    async def stop(self) -> None:
        """Disconnect."""
        await self._consumer.stop()

    async def poll(self) -> None:
        """Fetch what is available now."""
        batches = await self._consumer.getmany(timeout_ms=100, max_records=5000)
        for recs in batches.values():
            self.records.extend(r.value for r in recs if r.value is not None)

    async def wait_for(
        self, predicate: Callable[[list[bytes]], bool], timeout: float = 30.0
    ) -> list[bytes]:
        """Poll until ``predicate(records)`` holds; fail the test after ``timeout`` seconds."""
        deadline = time.monotonic() + timeout
        while not predicate(self.records):
            if time.monotonic() > deadline:
                pytest.fail(f"{self.topic}: condition not met, {len(self.records)} records")
            await self.poll()
        return self.records

    async def settle(self, quiet: float = 1.0) -> list[bytes]:
        """Poll until nothing new arrived for ``quiet`` seconds."""
        last = -1
        idle_since = time.monotonic()
        while time.monotonic() - idle_since < quiet:
            await self.poll()
            if len(self.records) != last:
                last = len(self.records)
                idle_since = time.monotonic()
        return self.records


@pytest.fixture
async def reader(devstack: Any) -> AsyncIterator[Callable[[str], Any]]:
    """Factory of started :class:`TopicReader` objects, stopped after the test."""
    readers: list[TopicReader] = []

    async def open_reader(topic: str, fetch_max_wait_ms: int = 10) -> TopicReader:
        r = TopicReader(devstack.kafka_bootstrap_servers, topic, fetch_max_wait_ms)
        await r.start()
        readers.append(r)
        return r

    yield open_reader
    for r in readers:
        await r.stop()


@pytest.fixture
def event() -> Callable[..., DomainEvent]:
    """:func:`make_event` as a fixture (test modules cannot import conftest)."""
    return make_event
