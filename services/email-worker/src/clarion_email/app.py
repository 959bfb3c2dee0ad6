"""email-worker's FastStream application.

Run it with ``clarion-email-worker`` or
``faststream run clarion_email.app:create_app --factory``. It materialises
``clarion.user-profiles.v1`` and ``clarion.preferences.v1`` into Redis,
consumes ``clarion.email-requests.v1`` (group ``email-worker``), polls the
schedule of deferred requests and retries, and serves ``/healthz``,
``/readyz`` and ``/metrics`` on ``http_port`` (8005).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

import jinja2
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from redis.asyncio import Redis

from clarion_contracts.registry import (
    DELIVERY_STATUS,
    EMAIL_REQUESTS,
    PREFERENCES,
    USER_PROFILES,
)
from clarion_contracts.v1 import EmailRequest, Preferences, UserProfile
from clarion_email.adapters.kafka import KafkaEventSink
from clarion_email.adapters.smtp import SmtpSender
from clarion_email.adapters.store import ProfileStore, Schedule, SendLog
from clarion_email.dispatcher import EmailDispatcher
from clarion_email.domain.ratelimit import DomainRateLimiter
from clarion_email.domain.templates import TemplateRenderer
from clarion_email.settings import EmailSettings
from clarion_kit.auth import issue_token
from clarion_kit.health import HealthChecks, HealthServer, health_app
from clarion_kit.kafka import create_broker, ensure_topics, subscriber_options
from clarion_kit.kafka import ping as kafka_ping
from clarion_kit.logging import configure_logging, get_logger
from clarion_kit.redis import create_redis

log = get_logger(__name__)


def _utcnow() -> datetime:
    return datetime.now(UTC)


def make_renderer(settings: EmailSettings) -> TemplateRenderer:
    """The template renderer: ``templates_dir`` (when set) before the built-in templates."""
    builtin = jinja2.PackageLoader("clarion_email", "templates")
    loader: jinja2.BaseLoader = builtin
    if settings.templates_dir:
        loader = jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(Path(settings.templates_dir)), builtin]
        )
    return TemplateRenderer(loader, product_name=settings.product_name)


class EmailWorker:
    """The running parts of email-worker, built at start-up and closed at shutdown.

    Args:
        settings: the service settings.
        broker: the Kafka broker the subscribers are registered on.
        clock: the current aware time; tests inject one to move time.
        serve_http: serve the health/metrics endpoints.
    """

    def __init__(
        self,
        settings: EmailSettings,
        broker: KafkaBroker,
        clock: Callable[[], datetime] = _utcnow,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.serve_http = serve_http
        self.checks = HealthChecks()
        self.redis: Redis | None = None
        self.dispatcher: EmailDispatcher | None = None
        self.health_server: HealthServer | None = None
        self._poller: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()

    def _token_for(self, user_id: str, category: str) -> str:
        return issue_token(
            self.settings,
            subject=user_id,
            scopes=(f"unsubscribe:{category}",),
            ttl=self.settings.unsubscribe_token_ttl_seconds,
        )

    async def on_startup(self) -> None:
        """Connect Redis, build the dispatcher, make sure the topics exist."""
        s = self.settings
        self.redis = create_redis(s)
        self.dispatcher = EmailDispatcher(
            profiles=ProfileStore(self.redis, s.redis_prefix),
            send_log=SendLog(self.redis, s.redis_prefix),
            schedule=Schedule(self.redis, s.redis_prefix),
            sender=SmtpSender(s),
            renderer=make_renderer(s),
            limiter=DomainRateLimiter(s.domain_rate_per_second, s.domain_burst, s.rate_overrides()),
            events=KafkaEventSink(self.broker, s),
            policy=s.backoff(),
            token_for=self._token_for,
            from_address=s.from_address,
            from_name=s.from_name,
            message_id_domain=s.message_id_domain,
            public_api_url=s.public_api_url,
            clock=self.clock,
            lease_seconds=s.send_lease_seconds,
            log_ttl_seconds=s.send_log_ttl_seconds,
            profile_wait_attempts=s.profile_wait_attempts,
            max_inline_wait=s.max_inline_rate_wait_seconds,
        )
        redis = self.redis
        self.checks.add("redis", lambda: redis.ping(), timeout=1.0)
        self.checks.add("kafka", lambda: kafka_ping(self.broker), timeout=2.5)
        await ensure_topics(s, specs=(EMAIL_REQUESTS, USER_PROFILES, PREFERENCES, DELIVERY_STATUS))

    async def after_startup(self) -> None:
        """Start the schedule poller and the health/metrics server."""
        self._poller = asyncio.create_task(self._poll(), name="email-schedule-poller")
        if self.serve_http:
            self.health_server = HealthServer(
                health_app(self.checks), self.settings.http_host, self.settings.http_port
            )
            await self.health_server.start()

    async def on_shutdown(self) -> None:
        """Stop polling (finishing the current job) before the broker stops."""
        self.checks.set_ready(False)
        self._stopping.set()
        if self._poller is not None:
            with contextlib.suppress(asyncio.CancelledError, TimeoutError):
                await asyncio.wait_for(self._poller, timeout=self.settings.smtp_timeout_seconds)

    async def after_shutdown(self) -> None:
        """Close Redis and the health server."""
        if self.health_server is not None:
            await self.health_server.stop()
        if self.redis is not None:
            await self.redis.aclose()

    async def _poll(self) -> None:
        assert self.dispatcher is not None
        while not self._stopping.is_set():
            try:
                claimed = await self.dispatcher.run_due()
            except Exception as exc:  # Redis hiccup: the jobs stay scheduled
                log.error("email.poll_failed", error=repr(exc))
                claimed = 0
            if claimed == 0:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(
                        self._stopping.wait(), timeout=self.settings.schedule_poll_seconds
                    )

    async def on_profile(self, msg: KafkaMessage) -> None:
        """Materialise a profile (an empty value deletes the key's profile).

        Raises:
            pydantic.ValidationError: not a :class:`UserProfile` (dead-lettered at once).
        """
        assert self.dispatcher is not None
        if not msg.body:
            key = msg.raw_message.key  # type: ignore[union-attr]
            if key:
                await self.dispatcher.profiles.delete("profile", key.decode())
            return
        await self.dispatcher.profiles.apply_profile(UserProfile.from_bytes(msg.body))

    async def on_preferences(self, msg: KafkaMessage) -> None:
        """Materialise preferences (an empty value deletes the key's preferences).

        Raises:
            pydantic.ValidationError: not :class:`Preferences` (dead-lettered at once).
        """
        assert self.dispatcher is not None
        if not msg.body:
            key = msg.raw_message.key  # type: ignore[union-attr]
            if key:
                await self.dispatcher.profiles.delete("prefs", key.decode())
            return
        await self.dispatcher.profiles.apply_preferences(Preferences.from_bytes(msg.body))

    async def on_request(self, msg: KafkaMessage) -> None:
        """Send (or defer) one email request.

        Raises:
            pydantic.ValidationError: not an :class:`EmailRequest` (dead-lettered at once).
        """
        assert self.dispatcher is not None
        await self.dispatcher.handle(EmailRequest.from_bytes(msg.body))


def create_app(
    settings: EmailSettings | None = None,
    *,
    clock: Callable[[], datetime] = _utcnow,
    serve_http: bool = True,
) -> FastStream:
    """Build the email-worker application (nothing connects until it starts).

    Args:
        settings: defaults to :class:`EmailSettings` read from the environment.
        clock: the current aware time (injectable for tests).
        serve_http: serve /healthz, /readyz and /metrics on ``settings.http_port``.
    """
    settings = settings or EmailSettings()
    configure_logging(settings)
    broker = create_broker(settings)
    worker = EmailWorker(settings, broker, clock=clock, serve_http=serve_http)
    # One consumer group per topic: members of one group subscribed to different topics
    # make every join rebalance all of them.
    name = settings.service_name
    broker.subscriber(
        settings.topic(USER_PROFILES),
        **subscriber_options(settings, group_id=f"{name}-profiles", background=True),
    )(worker.on_profile)
    broker.subscriber(
        settings.topic(PREFERENCES),
        **subscriber_options(settings, group_id=f"{name}-preferences", background=True),
    )(worker.on_preferences)
    broker.subscriber(
        settings.topic(EMAIL_REQUESTS), **subscriber_options(settings, background=True)
    )(worker.on_request)
    app = FastStream(broker)
    app.on_startup(worker.on_startup)
    app.after_startup(worker.after_startup)
    app.on_shutdown(worker.on_shutdown)
    app.after_shutdown(worker.after_shutdown)
    app.context.set_global("email_worker", worker)
    return app
