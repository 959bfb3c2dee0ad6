"""Fixtures of email-worker's tests: an aiosmtpd sink, a movable clock, the running worker."""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiosmtpd.smtp import SMTP, Envelope, Session

from clarion_devstack.mailsink import MailSink, SinkServer
from clarion_devstack.testing import WorkerHarness, eventually, running_worker


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
class Harness(WorkerHarness):
    """A running email-worker, a producer, the SMTP sink and a tap on delivery statuses."""

    sink: MailSink
    clock: MovableClock

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


@pytest.fixture
async def harness(stack_settings: dict[str, Any], smtp_sink: SinkServer) -> AsyncIterator[Harness]:
    """email-worker on the embedded stack, sending to ``smtp_sink``."""
    from clarion_contracts.registry import DELIVERY_STATUS
    from clarion_email.app import create_app
    from clarion_email.settings import EmailSettings

    settings = EmailSettings(
        **stack_settings,
        smtp_port=smtp_sink.smtp_port,
        smtp_timeout_seconds=10,
        public_api_url="https://api.clarion.test",
        from_address="notifications@clarion.test",
        message_id_domain="clarion.test",
        schedule_poll_seconds=0.05,
        backoff_base_seconds=0.2,
        backoff_max_seconds=1.0,
        max_attempts=3,
    )
    clock = MovableClock()
    app = create_app(settings, clock=clock)
    status_topic = settings.topic(DELIVERY_STATUS)
    bootstrap = settings.kafka_bootstrap_servers
    async with running_worker(app, "email_worker", bootstrap, [status_topic]) as running:
        worker, producer, tap = running
        yield Harness(settings, worker, producer, tap, smtp_sink.sink, clock)
