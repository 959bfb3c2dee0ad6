"""The email delivery flow: one email request → at most one accepted SMTP transaction.

For each request the dispatcher claims the request id in the send log, looks
up the recipient's profile (address, name, locale, timezone) and preferences,
takes a token from the recipient domain's rate limiter, renders the text and
HTML parts, builds the headers (Message-ID, List-Unsubscribe one-click...) and
sends it over SMTP. Then:

* accepted (250): the send log says ``sent``; ``delivered`` for each item;
* 5yz: permanent; the log says ``failed``; ``failed`` (``smtp_<code>``) for each item;
* 4yz, connection error, timeout: the claim is released and a retry scheduled
  with exponential backoff; after ``max_attempts`` the request goes to the DLQ
  and each item is ``failed`` (``retries_exhausted``).

Requests with ``not_before`` in the future, retries and sends held back by a
domain's rate limit are jobs in the Redis schedule that :meth:`run_due` runs
when due; the Kafka partition is never blocked by a wait.

Guarantee (also in docs/email.md): at most one SMTP transaction accepted per
``request_id``, except when the worker dies, or its Redis write is lost,
between the server's ``250`` reply to ``DATA`` and the send-log write. Then the
claim's lease expires and the redelivered (or rescheduled) request is sent once
more, with the same ``Message-ID``, which lets mail systems that deduplicate by
Message-ID show it once.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from datetime import datetime
from email.message import EmailMessage

import jinja2

from clarion_contracts.base import Channel
from clarion_contracts.v1 import (
    DeliveryState,
    DeliveryStatus,
    EmailRequest,
    Preferences,
    UserProfile,
    utc_now,
)
from clarion_email.adapters.kafka import EventSink
from clarion_email.adapters.smtp import SendFailure, SmtpSender
from clarion_email.adapters.store import Job, ProfileStore, SendLog, SendState
from clarion_email.domain.message import build_message, message_id, unsubscribe_url
from clarion_email.domain.ratelimit import DomainRateLimiter, recipient_domain
from clarion_email.domain.retry import BackoffPolicy, SmtpFailure
from clarion_email.domain.templates import Recipient, TemplateRenderer
from clarion_kit.logging import get_logger
from clarion_kit.metrics import get_or_create_counter, metric_name
from clarion_kit.scheduling import JobSchedule

log = get_logger(__name__)

_OUTCOMES = get_or_create_counter(
    metric_name("email-worker", "emails_total"),
    "Email request outcomes",
    ("status", "reason"),
)


def email_enabled(preferences: Preferences | None, category: str) -> bool:
    """False only when the user switched email off for ``category`` (None: the default)."""
    if preferences is None:
        return True
    channel = preferences.categories.get(category)
    return channel is None or channel.email is not False


class EmailDispatcher:
    """Sends email requests; all I/O goes through the injected adapters.

    Args:
        profiles: materialised profiles and preferences.
        send_log: the idempotency record per request id.
        schedule: deferred requests, retries and rate-limited sends.
        sender: the SMTP client.
        renderer: the templates.
        limiter: per-recipient-domain token buckets.
        events: where statuses and dead letters go.
        policy: SMTP retry bounds.
        token_for: ``(user_id, category) -> unsubscribe token`` for the unsubscribe link
            (:func:`clarion_kit.unsubscribe_tokens.issue_unsubscribe_token`).
        from_address / from_name: the sender.
        message_id_domain: right-hand side of Message-IDs.
        public_api_url: base URL of ingest-api for the unsubscribe link.
        clock: the current aware time (injectable for tests).
        monotonic: seconds for the rate limiter.
        lease_seconds / log_ttl_seconds / profile_wait_attempts / max_inline_wait:
            see :class:`~clarion_email.settings.EmailSettings`.
        jitter: a source of ``[0, 1)`` backoff jitter.
    """

    def __init__(
        self,
        *,
        profiles: ProfileStore,
        send_log: SendLog,
        schedule: JobSchedule[Job],
        sender: SmtpSender,
        renderer: TemplateRenderer,
        limiter: DomainRateLimiter,
        events: EventSink,
        policy: BackoffPolicy,
        token_for: Callable[[str, str], str],
        from_address: str,
        from_name: str,
        message_id_domain: str,
        public_api_url: str,
        clock: Callable[[], datetime] = utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        lease_seconds: float = 120.0,
        log_ttl_seconds: int = 30 * 86400,
        profile_wait_attempts: int = 3,
        max_inline_wait: float = 1.0,
        jitter: Callable[[], float] = random.random,
    ) -> None:
        self.profiles = profiles
        self.send_log = send_log
        self.schedule = schedule
        self._sender = sender
        self._renderer = renderer
        self._limiter = limiter
        self._events = events
        self._policy = policy
        self._token_for = token_for
        self._from_address = from_address
        self._from_name = from_name
        self._mid_domain = message_id_domain
        self._api_url = public_api_url
        self._clock = clock
        self._monotonic = monotonic
        self._lease = lease_seconds
        self._log_ttl = log_ttl_seconds
        self._profile_waits = profile_wait_attempts
        self._max_inline_wait = max_inline_wait
        self._jitter = jitter

    async def handle(self, request: EmailRequest) -> None:
        """Process one email request from Kafka: defer it or send it now."""
        now = self._clock()
        if request.not_before is not None and request.not_before > now:
            job = Job(job_id=request.request_id, request=request.model_dump(mode="json"))
            await self.schedule.add(job, due=request.not_before.timestamp())
            await self._statuses(
                request,
                DeliveryState.DEFERRED,
                reason="not_before",
                detail=f"deferred until {request.not_before.isoformat()}",
            )
            return
        await self._process(request, Job(job_id=request.request_id, request={}))

    async def run_due(self, limit: int = 100) -> int:
        """Run the scheduled jobs that are due, one after another; returns how many.

        A job that raises stays scheduled and is claimed again after the lease.
        """
        jobs = await self.schedule.claim_due(self._clock().timestamp(), self._lease, limit)
        for job in jobs:
            try:
                await self._process(EmailRequest.model_validate(job.request), job)
                await self.schedule.complete(job.job_id)
            except Exception as exc:
                log.error("email.job_failed", job_id=job.job_id, error=repr(exc))
        return len(jobs)

    async def _later(self, request: EmailRequest, job: Job, job_id: str, delay: float) -> None:
        await self.schedule.add(
            Job(
                job_id=job_id,
                request=request.model_dump(mode="json"),
                attempt=job.attempt,
                profile_misses=job.profile_misses,
            ),
            due=self._clock().timestamp() + delay,
        )

    async def _process(self, request: EmailRequest, job: Job) -> None:
        rid = request.request_id
        state = await self.send_log.claim(rid, self._lease)
        if state in (SendState.SENT, SendState.FAILED):
            _OUTCOMES.labels("duplicate", state.value).inc()
            log.info("email.duplicate", request_id=rid, state=state.value)
            return
        if state is SendState.BUSY:
            left = await self.send_log.lease_left(rid)
            stamp = int(self._clock().timestamp() * 1000)
            await self._later(request, job, f"{rid}|busy{stamp}", left + 1.0)
            return

        profile = await self.profiles.profile(request.recipient_id)
        if profile is None:
            await self.send_log.release(rid)
            misses = job.profile_misses + 1
            if misses < self._profile_waits:
                delay = self._policy.delay(misses, self._jitter())
                retry = Job(job.job_id, job.request, job.attempt, misses)
                await self._later(request, retry, f"{rid}|profile{misses}", delay)
                return
            await self._final(request, DeliveryState.SKIPPED, "no_profile", job.attempt)
            return
        if not profile.email:
            await self._final(request, DeliveryState.SKIPPED, "no_email_address", job.attempt)
            return
        preferences = await self.profiles.preferences(request.recipient_id)
        if not email_enabled(preferences, request.category):
            await self._final(request, DeliveryState.SKIPPED, "preference_off", job.attempt)
            return

        try:
            domain = recipient_domain(profile.email)
        except ValueError as exc:
            await self._final(
                request, DeliveryState.FAILED, "invalid_address", job.attempt, str(exc)
            )
            return
        while (wait := self._limiter.acquire(domain, self._monotonic())) > 0:
            if wait > self._max_inline_wait:
                await self.send_log.release(rid)
                stamp = int(self._clock().timestamp() * 1000)
                await self._later(request, job, f"{rid}|{job.attempt}|rate{stamp}", wait)
                _OUTCOMES.labels("rate_limited", "domain_rate").inc()
                return
            await asyncio.sleep(wait)

        try:
            message = self._message(request, profile, preferences)
        except (LookupError, ValueError, jinja2.TemplateError) as exc:
            log.error("email.render_failed", request_id=rid, error=repr(exc))
            await self._final(request, DeliveryState.FAILED, "render_error", job.attempt, str(exc))
            return

        try:
            reply = await self._sender.send(message, self._from_address, profile.email)
        except SendFailure as failure:
            await self._failed_send(request, job, failure)
            return
        await self.send_log.mark_sent(rid, self._log_ttl)
        await self._statuses(request, DeliveryState.DELIVERED, attempt=job.attempt, detail=reply)

    def _message(
        self, request: EmailRequest, profile: UserProfile, preferences: Preferences | None
    ) -> EmailMessage:
        assert profile.email is not None
        tz = (preferences.timezone if preferences else None) or profile.timezone
        link = unsubscribe_url(
            self._api_url, self._token_for(request.recipient_id, request.category)
        )
        rendered = self._renderer.render(
            kind=request.kind,
            items=request.items,
            recipient=Recipient(
                user_id=profile.user_id,
                name=profile.name,
                email=profile.email,
                locale=profile.locale,
                timezone=tz,
            ),
            category=request.category,
            unsubscribe_url=link,
            period_start=request.period_start,
            period_end=request.period_end,
        )
        return build_message(
            rendered=rendered,
            from_address=self._from_address,
            from_name=self._from_name,
            to_address=profile.email,
            to_name=profile.name,
            message_id=message_id(request.request_id, self._mid_domain),
            date=self._clock(),
            list_unsubscribe=link,
            extra_headers={
                "X-Clarion-Request-Id": request.request_id,
                "Auto-Submitted": "auto-generated",
            },
        )

    async def _failed_send(self, request: EmailRequest, job: Job, failure: SendFailure) -> None:
        rid = request.request_id
        reason = f"smtp_{failure.code}" if failure.code else "smtp_unreachable"
        if failure.kind is SmtpFailure.PERMANENT:
            await self._final(request, DeliveryState.FAILED, reason, job.attempt, failure.message)
            return
        await self.send_log.release(rid)
        if self._policy.exhausted(job.attempt):
            await self._events.dead_letter(
                request, error=str(failure), error_type=reason, attempts=job.attempt
            )
            await self._statuses(
                request,
                DeliveryState.FAILED,
                reason="retries_exhausted",
                attempt=job.attempt,
                detail=f"last error {failure}; sent to the DLQ",
            )
            return
        delay = self._policy.delay(job.attempt, self._jitter())
        retry = Job(job.job_id, job.request, job.attempt + 1, job.profile_misses)
        await self._later(request, retry, f"{rid}|{job.attempt + 1}", delay)
        await self._statuses(
            request,
            DeliveryState.RETRYING,
            reason=reason,
            attempt=job.attempt,
            detail=f"{failure}; retry in {delay:.0f}s",
        )

    async def _final(
        self,
        request: EmailRequest,
        state: DeliveryState,
        reason: str,
        attempt: int,
        detail: str | None = None,
    ) -> None:
        """A final outcome other than delivered: logged so a redelivery sends nothing."""
        await self.send_log.mark_failed(request.request_id, self._log_ttl)
        await self._statuses(request, state, reason=reason, attempt=attempt, detail=detail)

    async def _statuses(
        self,
        request: EmailRequest,
        state: DeliveryState,
        *,
        reason: str | None = None,
        attempt: int = 1,
        detail: str | None = None,
    ) -> None:
        _OUTCOMES.labels(state.value, reason or "").inc()
        log.info(
            "email.outcome",
            request_id=request.request_id,
            status=state.value,
            reason=reason,
            attempt=attempt,
            items=len(request.items),
        )
        now = self._clock()
        for item in request.items:
            await self._events.status(
                DeliveryStatus(
                    status_id=(
                        f"email:{request.request_id}:{item.notification_id}:{state.value}:{attempt}"
                    ),
                    notification_id=item.notification_id,
                    version=item.version,
                    recipient_id=request.recipient_id,
                    channel=Channel.EMAIL,
                    status=state,
                    type=item.type,
                    reason=reason,
                    detail=detail[:2000] if detail else None,
                    attempt=attempt,
                    request_id=request.request_id,
                    occurred_at=now,
                )
            )
