"""email-worker's FastStream application.

Run it with ``clarion-email-worker`` or
``faststream run clarion_email.app:create_app --factory``. It materialises
``clarion.user-profiles.v1`` and ``clarion.preferences.v1`` into Redis,
consumes ``clarion.email-requests.v1`` (group ``email-worker``), polls the
schedule of deferred requests and retries, and serves ``/healthz``,
``/readyz`` and ``/metrics`` on ``http_port`` (8005).
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path

import jinja2
from faststream import FastStream
from faststream.kafka.annotations import KafkaMessage
from redis.asyncio import Redis

from clarion_contracts.registry import (
    DELIVERY_STATUS,
    EMAIL_REQUESTS,
    PREFERENCES,
    USER_PROFILES,
)
from clarion_contracts.v1 import EmailRequest, Preferences, UserProfile, utc_now
from clarion_email.adapters.kafka import KafkaEventSink
from clarion_email.adapters.smtp import SmtpSender
from clarion_email.adapters.store import ProfileStore, SendLog, job_schedule
from clarion_email.dispatcher import EmailDispatcher
from clarion_email.domain.ratelimit import DomainRateLimiter
from clarion_email.domain.templates import TemplateRenderer
from clarion_email.settings import EmailSettings
from clarion_kit.kafka import create_broker
from clarion_kit.logging import configure_logging, get_logger
from clarion_kit.scheduling import SchedulePoller
from clarion_kit.unsubscribe_tokens import issue_unsubscribe_token
from clarion_kit.worker import ChannelWorker, materialise

log = get_logger(__name__)


def make_renderer(settings: EmailSettings) -> TemplateRenderer:
    """The template renderer: ``templates_dir`` (when set) before the built-in templates."""
    builtin = jinja2.PackageLoader("clarion_email", "templates")
    loader: jinja2.BaseLoader = builtin
    if settings.templates_dir:
        loader = jinja2.ChoiceLoader(
            [jinja2.FileSystemLoader(Path(settings.templates_dir)), builtin]
        )
    return TemplateRenderer(loader, product_name=settings.product_name)


class EmailWorker(ChannelWorker[EmailSettings]):
    """The running parts of email-worker, built at start-up and closed at shutdown.

    The life cycle (Redis, checks, topics, poller, health server) is
    :class:`~clarion_kit.worker.ChannelWorker`'s; constructor arguments as there.
    """

    topics = (EMAIL_REQUESTS, USER_PROFILES, PREFERENCES, DELIVERY_STATUS)
    dispatcher: EmailDispatcher | None = None

    def _token_for(self, user_id: str, category: str) -> str:
        # A single-purpose unsubscribe token, never an access token: it sits in a
        # mailbox (and its provider's logs) for weeks.
        return issue_unsubscribe_token(
            self.settings, user_id, category, self.settings.unsubscribe_token_ttl_seconds
        )

    def build(self, redis: Redis) -> None:
        """Build the dispatcher and its adapters."""
        s = self.settings
        self.dispatcher = EmailDispatcher(
            profiles=ProfileStore(redis, s.redis_prefix),
            send_log=SendLog(redis, s.redis_prefix),
            schedule=job_schedule(redis, s.redis_prefix),
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

    def poller(self) -> SchedulePoller:
        """Runs the due jobs one round after another while any were due."""
        assert self.dispatcher is not None
        return SchedulePoller(
            self.dispatcher.run_due,
            interval=self.settings.schedule_poll_seconds,
            name="email-schedule-poller",
            log=log,
            failure_event="email.poll_failed",
        )

    @property
    def shutdown_timeout(self) -> float:
        """One SMTP transaction: the poller's current job may finish sending."""
        return self.settings.smtp_timeout_seconds

    async def on_profile(self, msg: KafkaMessage) -> None:
        """Materialise a profile (an empty value deletes the key's profile).

        Raises:
            pydantic.ValidationError: not a :class:`UserProfile` (dead-lettered at once).
        """
        assert self.dispatcher is not None
        profiles = self.dispatcher.profiles
        await materialise(
            msg,
            apply=lambda body: profiles.apply_profile(UserProfile.from_bytes(body)),
            delete=lambda key: profiles.delete("profile", key),
        )

    async def on_preferences(self, msg: KafkaMessage) -> None:
        """Materialise preferences (an empty value deletes the key's preferences).

        Raises:
            pydantic.ValidationError: not :class:`Preferences` (dead-lettered at once).
        """
        assert self.dispatcher is not None
        profiles = self.dispatcher.profiles
        await materialise(
            msg,
            apply=lambda body: profiles.apply_preferences(Preferences.from_bytes(body)),
            delete=lambda key: profiles.delete("prefs", key),
        )

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
    clock: Callable[[], datetime] = utc_now,
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
    worker = EmailWorker(settings, create_broker(settings), clock=clock, serve_http=serve_http)
    # One consumer group per topic: members of one group subscribed to different topics
    # make every join rebalance all of them.
    worker.subscribe(USER_PROFILES, worker.on_profile, group_suffix="profiles")
    worker.subscribe(PREFERENCES, worker.on_preferences, group_suffix="preferences")
    worker.subscribe(EMAIL_REQUESTS, worker.on_request)
    return worker.application("email_worker")
