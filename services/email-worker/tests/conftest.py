"""Fixtures of email-worker's tests: an aiosmtpd sink, a movable clock, the running worker."""

from __future__ import annotations

import asyncio
import contextlib
import inspect
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from clarion_email.sink import MailSink, SinkServer


async def eventually(predicate: Any, timeout: float = 20.0, interval: float = 0.05) -> Any:
    """Poll ``predicate`` (sync or async) until it returns something truthy; fail after timeout."""
    deadline = time.monotonic() + timeout
    while True:
        result = predicate()
        if inspect.isawaitable(result):
            result = await result
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(interval)


@pytest.fixture
def wait_until() -> Any:
    """The :func:`eventually` poller."""
    return eventually


class FlakySink(MailSink):
    """A sink that answers ``451`` to the first ``failures`` DATA commands."""

    def __init__(self, failures: int = 0) -> None:
        super().__init__(maildir=None)
        self.failures = failures
        self.refused = 0

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        if self.refused < self.failures:
            self.refused += 1
            return "451 4.3.0 Temporary failure, try again later"
        return await super().handle_DATA(server, session, envelope)


@pytest.fixture
async def smtp_sink() -> Any:
    """A loopback SMTP sink (aiosmtpd) whose messages the test can read."""
    server = SinkServer(FlakySink(), smtp_port=0, web_port=0, serve_web=False)
    await server.start()
    yield server
    await server.stop()


class MovableClock:
    """An aware clock tests move forward by hand."""

    def __init__(self) -> None:
        self.offset = timedelta()

    def __call__(self) -> datetime:
        return datetime.now(UTC) + self.offset

    def advance(self, delta: timedelta) -> None:
        self.offset += delta


@dataclass
class TopicTap:
    """Collects every record of some topics (no consumer group, from the start)."""

    bootstrap: str
    topics: list[str]
    records: list[Any] = field(default_factory=list)

    async def start(self) -> None:
        from aiokafka import AIOKafkaConsumer

        self._consumer = AIOKafkaConsumer(
            *self.topics,
            bootstrap_servers=self.bootstrap,
            group_id=None,
            auto_offset_reset="earliest",
            fetch_max_wait_ms=5,
        )
        await self._consumer.start()
        self._task = asyncio.create_task(self._run())

    async def _run(self) -> None:
        async for record in self._consumer:
            self.records.append(record)

    async def stop(self) -> None:
        self._task.cancel()
        with contextlib.suppress(BaseException):
            await self._task
        await self._consumer.stop()


@dataclass
class Harness:
    """A running email-worker, a producer, the SMTP sink and a tap on delivery statuses."""

    settings: Any
    worker: Any
    producer: Any
    tap: TopicTap
    sink: MailSink
    clock: MovableClock

    async def publish(self, spec: Any, key: str, value: bytes) -> None:
        await self.producer.send_and_wait(self.settings.topic(spec), value=value, key=key.encode())

    async def profile(self, user_id: str, name: str, email: str | None, **extra: Any) -> None:
        """Publish a profile and wait until email-worker stored it."""
        from clarion_contracts.registry import USER_PROFILES
        from clarion_contracts.v1 import UserProfile, utc_now

        profile = UserProfile(
            user_id=user_id, name=name, email=email, updated_at=utc_now(), **extra
        )
        await self.publish(USER_PROFILES, user_id, profile.to_bytes())
        profiles = self.worker.dispatcher.profiles
        await eventually(lambda: profiles.profile(user_id))

    def statuses(self) -> list[Any]:
        from clarion_contracts.v1 import DeliveryStatus

        return [DeliveryStatus.from_bytes(r.value) for r in self.tap.records]


@pytest.fixture
async def harness(
    devstack: Any, topic_prefix: str, redis_prefix: str, smtp_sink: SinkServer
) -> Any:
    """email-worker on the embedded stack, sending to ``smtp_sink``."""
    from aiokafka import AIOKafkaProducer

    from clarion_contracts.registry import DELIVERY_STATUS
    from clarion_email.app import create_app
    from clarion_email.settings import EmailSettings

    settings = EmailSettings(
        kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
        redis_url=devstack.redis_url,
        topic_prefix=topic_prefix,
        redis_prefix=redis_prefix,
        environment="test",
        smtp_port=smtp_sink.smtp_port,
        smtp_timeout_seconds=10,
        public_api_url="https://api.clarion.test",
        from_address="notifications@clarion.test",
        message_id_domain="clarion.test",
        schedule_poll_seconds=0.05,
        backoff_base_seconds=0.2,
        backoff_max_seconds=1.0,
        max_attempts=3,
        http_port=0,
        kafka_session_timeout_ms=2000,
    )
    clock = MovableClock()
    app = create_app(settings, clock=clock)
    await app.start()
    worker = app.context.get("email_worker")
    producer = AIOKafkaProducer(
        bootstrap_servers=devstack.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    tap = TopicTap(devstack.kafka_bootstrap_servers, [settings.topic(DELIVERY_STATUS)])
    await tap.start()
    try:
        yield Harness(settings, worker, producer, tap, smtp_sink.sink, clock)
    finally:
        await tap.stop()
        await producer.stop()
        await app.stop()
