"""Fixtures of ingest-api tests: an app served over real HTTP on the embedded stack.

``ingest`` starts ``create_app`` under uvicorn (lifespan on, an ephemeral
loopback port) against the session's Kafka/Redis/PostgreSQL with this test's
topic and key prefixes and a fresh database, and yields an :class:`Ingest` with
an HTTP client and helpers to read and write topics.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from sqlalchemy import NullPool, text
from sqlalchemy.ext.asyncio import create_async_engine as create_engine

from clarion_contracts.registry import TopicSpec
from clarion_ingest.app import create_app
from clarion_ingest.settings import IngestSettings
from clarion_kit.auth import dev_api_key, issue_token

WAIT_SECONDS = 20.0


class Server:
    """A uvicorn server running an ASGI app inside the test's event loop."""

    def __init__(self, app: Any) -> None:
        config = uvicorn.Config(
            app, host="127.0.0.1", port=0, lifespan="on", log_config=None, access_log=False
        )
        self.server = uvicorn.Server(config)
        self.task: asyncio.Task[None] | None = None
        self.port = 0

    async def start(self) -> None:
        self.task = asyncio.create_task(self.server.serve())
        deadline = time.monotonic() + 60
        while not self.server.started:
            if self.task.done():
                self.task.result()
                raise RuntimeError("uvicorn exited during start-up")
            if time.monotonic() > deadline:
                raise RuntimeError("uvicorn did not start")
            await asyncio.sleep(0.02)
        self.port = self.server.servers[0].sockets[0].getsockname()[1]

    async def stop(self) -> None:
        if self.task is None:
            return
        self.server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(self.task, 30)


@dataclass
class Ingest:
    """A running ingest-api plus the helpers tests use to observe its effects."""

    settings: IngestSettings
    http: httpx.AsyncClient
    app: Any

    @property
    def api_key(self) -> str:
        return dev_api_key(self.settings)

    def producer_headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.api_key}"}

    def user_headers(self, user_id: str, *scopes: str) -> dict[str, str]:
        token = issue_token(self.settings, user_id, scopes=scopes, ttl=600)
        return {"Authorization": f"Bearer {token}"}

    eventually = staticmethod(lambda *a, **k: eventually(*a, **k))

    def topic(self, spec: TopicSpec) -> str:
        return self.settings.topic(spec)

    async def produce(
        self,
        spec: TopicSpec,
        records: list[tuple[bytes | None, bytes]],
        *,
        together: bool = False,
    ) -> None:
        """Produce ``records`` one after the other, or (``together``) in one produce
        request per partition so a consumer fetches them as one batch."""
        producer = AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            acks="all",
            linger_ms=50 if together else 0,
        )
        await producer.start()
        try:
            if together:
                futures = [
                    await producer.send(self.topic(spec), value, key=key) for key, value in records
                ]
                await asyncio.gather(*futures)
            else:
                for key, value in records:
                    await producer.send_and_wait(self.topic(spec), value, key=key)
        finally:
            await producer.stop()

    async def query(self, sql: str, **params: Any) -> list[Any]:
        """Rows of ``sql`` run on this service's database (a connection of its own)."""
        engine = create_engine(self.settings.database_url, poolclass=NullPool)
        try:
            async with engine.connect() as conn:
                return list((await conn.execute(text(sql), params)).all())
        finally:
            await engine.dispose()

    async def read_topic(
        self, spec: TopicSpec, expect: int, timeout: float = WAIT_SECONDS, *, dlq: bool = False
    ) -> list[Any]:
        """Every record of the topic (or its DLQ) from the start, once ``expect`` arrived
        (or on timeout)."""
        topic = self.settings.dlq(spec) if dlq else self.topic(spec)
        consumer = AIOKafkaConsumer(
            bootstrap_servers=self.settings.kafka_bootstrap_servers,
            enable_auto_commit=False,
            fetch_max_wait_ms=5,
            auto_offset_reset="earliest",
        )
        await consumer.start()
        try:
            parts = consumer.partitions_for_topic(topic)
            if parts is None:
                await consumer._client.force_metadata_update()
                parts = consumer.partitions_for_topic(topic) or set()
            tps = [TopicPartition(topic, p) for p in sorted(parts)]
            if not tps:
                return []
            consumer.assign(tps)
            await consumer.seek_to_beginning(*tps)
            records: list[Any] = []
            deadline = time.monotonic() + timeout
            while len(records) < expect and time.monotonic() < deadline:
                batch = await consumer.getmany(timeout_ms=200)
                for msgs in batch.values():
                    records.extend(msgs)
            return records
        finally:
            await consumer.stop()


async def eventually(
    check: Callable[[], Any], timeout: float = WAIT_SECONDS, interval: float = 0.05
) -> Any:
    """Await ``check()`` until it returns a truthy value; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        last = await check()
        if last:
            return last
        await asyncio.sleep(interval)
    raise AssertionError(f"condition not met within {timeout}s (last value: {last!r})")


def make_settings(
    devstack: Any, topic_prefix: str, redis_prefix: str, database_url: str, **overrides: Any
) -> IngestSettings:
    """Settings pointing at the embedded stack with this test's prefixes and database."""
    options: dict[str, Any] = {
        "environment": "development",
        "kafka_bootstrap_servers": devstack.kafka_bootstrap_servers,
        "redis_url": devstack.redis_url,
        "database_url": database_url,
        "topic_prefix": topic_prefix,
        "redis_prefix": redis_prefix,
        "kafka_partitions_override": 1,
        "log_json": False,
        "instance_id": f"test-{uuid.uuid4().hex[:6]}",
        # Joining a consumer group takes seconds on the embedded broker: tests that
        # read the inbox turn the consumers on.
        "consume_notifications": False,
        # A group per test: a group shared across tests waits for departed members.
        "consumer_group": f"ingest-api-{topic_prefix.rstrip('.')}",
        "consume_delivery_status": False,
    }
    options.update(overrides)
    return IngestSettings(**options)


@contextlib.asynccontextmanager
async def running(settings: IngestSettings) -> AsyncIterator[Ingest]:
    """Serve ``create_app(settings)`` over HTTP for the duration of the block."""
    app = create_app(settings)
    server = Server(app)
    await server.start()
    try:
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{server.port}", timeout=30
        ) as http:
            yield Ingest(settings=settings, http=http, app=app)
    finally:
        await server.stop()


StartIngest = Callable[..., contextlib.AbstractAsyncContextManager[Ingest]]


@pytest.fixture
def start_ingest(
    devstack: Any, topic_prefix: str, redis_prefix: str, fresh_database_url: str
) -> StartIngest:
    """``async with start_ingest(**setting_overrides) as ingest``: a service for this test."""

    def start(**overrides: Any) -> contextlib.AbstractAsyncContextManager[Ingest]:
        database_url = overrides.pop("database_url", fresh_database_url)
        settings = make_settings(devstack, topic_prefix, redis_prefix, database_url, **overrides)
        return running(settings)

    return start


async def _connected(service: Ingest) -> Ingest:
    runtime = service.app.state.runtime

    async def connected() -> bool:
        return bool(runtime.connection.connected)

    await eventually(connected, timeout=60)
    return service


@pytest.fixture
async def ingest(start_ingest: StartIngest) -> AsyncIterator[Ingest]:
    """ingest-api on the embedded stack with Kafka connected (no consumers)."""
    async with start_ingest() as service:
        yield await _connected(service)


@pytest.fixture
async def inbox_service(start_ingest: StartIngest) -> AsyncIterator[Ingest]:
    """ingest-api with its notifications consumer running."""
    async with start_ingest(consume_notifications=True) as service:
        yield await _connected(service)
