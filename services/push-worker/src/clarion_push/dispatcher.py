"""The push delivery flow: one push request → one message per subscription of the user.

For each subscription the dispatcher claims the (request, subscription) pair in
the delivery log, encrypts and POSTs the payload and turns the push service's
answer into an outcome (see :mod:`clarion_push.domain.retry`):

* 2xx: delivered, remembered so a redelivered request does not send it again;
* 404/410: the subscription is removed and an ``active=False`` tombstone is
  published on the subscriptions topic;
* 413: the body is shortened and the message sent once more;
* 429/5xx/no answer: a retry is scheduled after an exponential backoff that
  honours ``Retry-After``; after ``max_attempts`` the request goes to the DLQ;
* anything else: failed.

Nothing here waits for a delay: a request with ``not_before`` in the future and
every retry are scheduled jobs (:func:`~clarion_push.adapters.store.job_schedule`)
that :meth:`PushDispatcher.run_due` runs when due, so one slow or rate-limited
push service never blocks a Kafka partition. Every outcome is published as a
:class:`DeliveryStatus` on channel ``push``.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable, Sequence
from datetime import datetime

from clarion_contracts.base import Channel
from clarion_contracts.v1 import (
    DeliveryState,
    DeliveryStatus,
    PushRequest,
    PushSubscription,
    utc_now,
)
from clarion_kit.logging import get_logger
from clarion_kit.metrics import get_or_create_counter, metric_name
from clarion_kit.scheduling import JobSchedule
from clarion_push.adapters.kafka import EventSink
from clarion_push.adapters.store import Claim, DeliveryLog, Job, SubscriptionStore
from clarion_push.adapters.webpush import PushResponse, WebPushClient
from clarion_push.domain.headers import derive_topic
from clarion_push.domain.payload import build_payload, trimmed_payload
from clarion_push.domain.retry import BackoffPolicy, Outcome, classify, parse_retry_after

log = get_logger(__name__)

_OUTCOMES = get_or_create_counter(
    metric_name("push-worker", "deliveries_total"),
    "Web Push delivery outcomes per subscription",
    ("status", "reason"),
)


class PushDispatcher:
    """Delivers push requests; all I/O goes through the injected adapters.

    Args:
        store: materialised subscriptions.
        schedule: deferred requests and pending retries.
        delivery_log: the idempotency record per (request, subscription).
        client: the Web Push HTTP client.
        events: where statuses, tombstones and dead letters go.
        policy: retry bounds and backoff.
        clock: the current aware time (injectable for tests).
        lease_seconds: how long a claim or a claimed job is held by one worker.
        sent_ttl_seconds: how long a delivery is remembered against redelivery.
        jitter: a source of ``[0, 1)`` backoff jitter.
        max_concurrent: requests delivered at once by background tasks; the Kafka
            handler waits for a free slot (back-pressure on the partition).
    """

    def __init__(
        self,
        *,
        store: SubscriptionStore,
        schedule: JobSchedule[Job],
        delivery_log: DeliveryLog,
        client: WebPushClient,
        events: EventSink,
        policy: BackoffPolicy,
        clock: Callable[[], datetime] = utc_now,
        lease_seconds: float = 60.0,
        sent_ttl_seconds: int = 7 * 86400,
        jitter: Callable[[], float] = random.random,
        max_concurrent: int = 256,
    ) -> None:
        self.store = store
        self.schedule = schedule
        self._log = delivery_log
        self._client = client
        self._events = events
        self._policy = policy
        self._clock = clock
        self._lease = lease_seconds
        self._sent_ttl = sent_ttl_seconds
        self._jitter = jitter
        self._slots = asyncio.Semaphore(max_concurrent)
        self._tasks: set[asyncio.Task[None]] = set()

    async def handle_batch(self, requests: Sequence[PushRequest]) -> None:
        """Process one consumer batch of push requests.

        Recipients without any subscription are the common case (most users never
        enable Web Push) and are settled for the whole batch at once: one Redis round
        trip finds them, and their ``skipped`` / ``no_subscription`` statuses are
        produced together, acknowledged before the handler returns (so before the
        offsets are committed). Every other request goes through :meth:`handle`, in
        batch order. A redelivered batch reports the same statuses again under the
        same ``status_id``, which their consumers deduplicate.

        Raises:
            redis.exceptions.RedisError / aiokafka.errors.KafkaError: Redis or the
                broker failed; nothing of the batch is committed and it is consumed
                again.
        """
        now = self._clock()
        due = [r for r in requests if r.not_before is None or r.not_before <= now]
        subscribed = await self.store.users_with_subscriptions(r.recipient_id for r in due)
        skipped = [r for r in due if r.recipient_id not in subscribed]
        if skipped:
            await self._events.statuses(
                [
                    self._status_record(
                        r, None, DeliveryState.SKIPPED, reason="no_subscription", now=now
                    )
                    for r in skipped
                ]
            )
            _OUTCOMES.labels(DeliveryState.SKIPPED.value, "no_subscription").inc(len(skipped))
            log.debug("push.skipped", requests=len(skipped), reason="no_subscription")
        settled = {id(r) for r in skipped}
        for request in requests:
            if id(request) not in settled:
                await self.handle(request)

    async def handle(self, request: PushRequest) -> None:
        """Process one push request from Kafka: defer it, or start its fan-out.

        The request is first written to the schedule as a job claimed by this
        worker (due after the lease), then delivered by a background task: the
        Kafka handler returns at once, so many requests are in flight together
        (at most ``max_concurrent``), while a worker that dies mid-delivery leaves
        the job to be claimed again when the lease ends.
        """
        now = self._clock()
        job = Job(
            job_id=f"{request.request_id}|*",
            request=request.model_dump(mode="json"),
            subscription_id=None,
            attempt=1,
        )
        if request.not_before is not None and request.not_before > now:
            await self.schedule.add(job, due=request.not_before.timestamp())
            await self._status(
                request,
                None,
                DeliveryState.DEFERRED,
                reason="not_before",
                detail=f"deferred until {request.not_before.isoformat()}",
            )
            return
        await self.schedule.add(job, due=now.timestamp() + self._lease)
        await self._slots.acquire()
        task = asyncio.create_task(self._run_in_slot(job))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _run_in_slot(self, job: Job) -> None:
        try:
            await self._run(job)
        except Exception as exc:  # left in the schedule: claimed again after the lease
            log.error("push.job_failed", job_id=job.job_id, error=repr(exc))
        finally:
            self._slots.release()

    async def drain(self, timeout: float | None = None) -> None:
        """Wait until the background deliveries started by :meth:`handle` finish."""
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=timeout)

    async def _fan_out(self, request: PushRequest) -> None:
        subscriptions = await self.store.for_user(request.recipient_id)
        if not subscriptions:
            await self._status(request, None, DeliveryState.SKIPPED, reason="no_subscription")
            return
        await asyncio.gather(*(self.deliver(request, sub, 1) for sub in subscriptions))

    async def deliver(
        self, request: PushRequest, subscription: PushSubscription, attempt: int
    ) -> Outcome | None:
        """Send ``request`` to one subscription (attempt number ``attempt``, 1-based).

        Returns:
            The outcome, or None when nothing was sent (already delivered, or
            another worker holds the claim and the attempt was rescheduled).
        """
        sub_id = subscription.subscription_id
        claim = await self._log.claim(request.request_id, sub_id, self._lease)
        if claim is Claim.SENT:
            _OUTCOMES.labels("duplicate", "already_delivered").inc()
            log.info("push.duplicate", request_id=request.request_id, subscription_id=sub_id)
            return None
        if claim is Claim.BUSY:
            now = self._clock().timestamp()
            await self.schedule.add(
                Job(
                    job_id=f"{request.request_id}|{sub_id}|{attempt}|busy{int(now)}",
                    request=request.model_dump(mode="json"),
                    subscription_id=sub_id,
                    attempt=attempt,
                ),
                due=now + self._lease,
            )
            return None

        payload = build_payload(request)
        topic = request.topic or derive_topic(request.notification_id)
        trimmed = False
        while True:
            try:
                response = await self._client.send(
                    subscription,
                    payload,
                    ttl_seconds=request.ttl_seconds,
                    urgency=request.urgency,
                    topic=topic,
                )
            except ValueError as exc:
                await self._log.release(request.request_id, sub_id)
                await self._status(
                    request,
                    subscription,
                    DeliveryState.FAILED,
                    reason="invalid_subscription",
                    detail=str(exc),
                    attempt=attempt,
                )
                return Outcome.FAILED
            outcome = classify(response.status_code)
            if outcome is Outcome.TOO_LARGE and not trimmed:
                payload = trimmed_payload(request, len(payload))
                trimmed = True
                continue
            break

        if outcome is Outcome.DELIVERED:
            await self._log.mark_sent(request.request_id, sub_id, self._sent_ttl)
            await self._status(
                request,
                subscription,
                DeliveryState.DELIVERED,
                reason="trimmed" if trimmed else None,
                attempt=attempt,
            )
            return outcome

        await self._log.release(request.request_id, sub_id)
        code = response.status_code
        if outcome is Outcome.GONE:
            await self.store.remove(sub_id)
            await self._events.tombstone(
                subscription.model_copy(
                    update={
                        "active": False,
                        "reason": f"push_service_{code}",
                        "updated_at": self._clock(),
                    }
                )
            )
            await self._status(
                request,
                subscription,
                DeliveryState.FAILED,
                reason="gone",
                attempt=attempt,
                detail=f"push service answered {code}; subscription removed",
            )
        elif outcome is Outcome.TOO_LARGE:
            await self._status(
                request,
                subscription,
                DeliveryState.FAILED,
                reason="payload_too_large",
                attempt=attempt,
                detail="413 after trimming the body",
            )
        elif outcome is Outcome.RETRY:
            await self._retry_or_dead_letter(request, subscription, attempt, response)
        else:
            await self._status(
                request,
                subscription,
                DeliveryState.FAILED,
                reason=f"http_{code}",
                attempt=attempt,
                detail=response.body or None,
            )
        return outcome

    async def _retry_or_dead_letter(
        self,
        request: PushRequest,
        subscription: PushSubscription,
        attempt: int,
        response: PushResponse,
    ) -> None:
        sub_id = subscription.subscription_id
        reason = (
            "rate_limited"
            if response.status_code == 429
            else (f"http_{response.status_code}" if response.status_code else "unreachable")
        )
        detail = response.error or response.body or None
        if self._policy.exhausted(attempt):
            await self._events.dead_letter(
                request,
                error=detail or reason,
                error_type=reason,
                attempts=attempt,
                extra=sub_id,
            )
            await self._status(
                request,
                subscription,
                DeliveryState.FAILED,
                reason="retries_exhausted",
                attempt=attempt,
                detail=f"last answer: {reason}; sent to the DLQ",
            )
            return
        now = self._clock()
        delay = self._policy.delay(
            attempt, parse_retry_after(response.retry_after, now), self._jitter()
        )
        await self.schedule.add(
            Job(
                job_id=f"{request.request_id}|{sub_id}|{attempt + 1}",
                request=request.model_dump(mode="json"),
                subscription_id=sub_id,
                attempt=attempt + 1,
            ),
            due=now.timestamp() + delay,
        )
        await self._status(
            request,
            subscription,
            DeliveryState.RETRYING,
            reason=reason,
            attempt=attempt,
            detail=f"retry {attempt + 1} in {delay:.1f}s",
        )

    async def run_due(self, limit: int = 100) -> int:
        """Run the scheduled jobs that are due; returns how many were claimed.

        A job that raises stays in the schedule and is claimed again after the lease.
        """
        jobs = await self.schedule.claim_due(self._clock().timestamp(), self._lease, limit)
        if jobs:
            results = await asyncio.gather(
                *(self._run(job) for job in jobs), return_exceptions=True
            )
            for job, result in zip(jobs, results, strict=True):
                if isinstance(result, BaseException):
                    log.error("push.job_failed", job_id=job.job_id, error=repr(result))
        return len(jobs)

    async def _run(self, job: Job) -> None:
        request = PushRequest.model_validate(job.request)
        if job.subscription_id is None:
            await self._fan_out(request)
        else:
            subscription = await self.store.get(job.subscription_id)
            if subscription is None:
                await self._status(
                    request,
                    None,
                    DeliveryState.SKIPPED,
                    reason="subscription_removed",
                    attempt=job.attempt,
                    detail=f"subscription {job.subscription_id}",
                )
            else:
                await self.deliver(request, subscription, job.attempt)
        await self.schedule.complete(job.job_id)

    async def _status(
        self,
        request: PushRequest,
        subscription: PushSubscription | None,
        state: DeliveryState,
        *,
        reason: str | None = None,
        detail: str | None = None,
        attempt: int = 1,
    ) -> None:
        _OUTCOMES.labels(state.value, reason or "").inc()
        log.info(
            "push.outcome",
            request_id=request.request_id,
            subscription_id=subscription.subscription_id if subscription else "-",
            status=state.value,
            reason=reason,
            attempt=attempt,
        )
        await self._events.status(
            self._status_record(
                request, subscription, state, reason=reason, detail=detail, attempt=attempt
            )
        )

    def _status_record(
        self,
        request: PushRequest,
        subscription: PushSubscription | None,
        state: DeliveryState,
        *,
        reason: str | None = None,
        detail: str | None = None,
        attempt: int = 1,
        now: datetime | None = None,
    ) -> DeliveryStatus:
        """The ``clarion.delivery-status.v1`` record of one outcome (``status_id`` is
        deterministic, so a repeated outcome is recognised downstream)."""
        sub_id = subscription.subscription_id if subscription else "-"
        if subscription is not None:
            detail = f"subscription {sub_id}" + (f": {detail}" if detail else "")
        return DeliveryStatus(
            status_id=f"push:{request.request_id}:{sub_id}:{state.value}:{attempt}",
            notification_id=request.notification_id,
            version=request.version,
            recipient_id=request.recipient_id,
            channel=Channel.PUSH,
            status=state,
            type=request.type,
            reason=reason,
            detail=detail[:2000] if detail else None,
            attempt=attempt,
            request_id=request.request_id,
            notification_created_at=request.created_at,
            occurred_at=now or self._clock(),
        )
