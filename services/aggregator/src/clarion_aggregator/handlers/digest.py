"""The digest flusher: sends due email digests as ``EmailRequest(kind=digest)``.

Every ``digest_interval_seconds`` it claims the digests due at ``clock.now()``
(a lease, so two instances never send the same digest at once and a crash
re-sends it after the lease), publishes one request per digest with every
buffered item of the period (newest first) and then removes exactly the items
it sent. ``request_id`` is ``digest:<recipient>:<period key>``, so a re-send
after a crash is recognised by the email-worker's send log. Quiet hours at
flush time become ``not_before``.
"""

from __future__ import annotations

import asyncio
import contextlib

from clarion_aggregator.adapters.kafka import KafkaPublisher, OutRecord
from clarion_aggregator.adapters.redis_store import RedisStateStore
from clarion_aggregator.domain.clock import Clock, from_ms, to_ms
from clarion_aggregator.domain.routing import effective_timezone
from clarion_aggregator.domain.schedule import quiet_hours_end, zone
from clarion_aggregator.metrics import AggregatorMetrics
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.registry import EMAIL_REQUESTS
from clarion_contracts.v1 import EmailItem, EmailKind, EmailRequest
from clarion_kit.logging import get_logger

log = get_logger(__name__)


class DigestFlusher:
    """Periodic task sending due digests (see the module docstring)."""

    def __init__(
        self,
        settings: AggregatorSettings,
        store: RedisStateStore,
        publisher: KafkaPublisher,
        clock: Clock,
        metrics: AggregatorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.clock = clock
        self.metrics = metrics or AggregatorMetrics.create()
        self._topic = settings.topic(EMAIL_REQUESTS)
        self._task: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    async def flush_due(self, limit: int = 500) -> int:
        """Send every digest due now (up to ``limit`` per call); returns how many were sent.

        Raises:
            redis.exceptions.RedisError, aiokafka.errors.KafkaError: nothing is
                removed from the buffer for digests whose send was not confirmed.
        """
        now = self.clock.now()
        now_ms = to_ms(now)
        claimed = await self.store.claim_due_digests(
            now_ms, int(self.settings.digest_lease_seconds * 1000), limit
        )
        if not claimed:
            return 0
        users = await self.store.load_contexts(d.recipient_id for d in claimed)
        records: list[OutRecord] = []
        sent = []
        for digest in claimed:
            if not digest.items:
                await self.store.finish_digest(digest, now_ms)
                continue
            items = sorted(
                (EmailItem.model_validate_json(v) for v in digest.items.values()),
                key=lambda i: (i.occurred_at, i.notification_id),
                reverse=True,
            )
            user = users[digest.recipient_id]
            tz = zone(effective_timezone(user.prefs, user.timezone))
            quiet = user.prefs.quiet_hours if user.prefs else None
            period_key = digest.member.rsplit("|", 1)[1]
            request = EmailRequest(
                request_id=f"digest:{digest.recipient_id}:{period_key}",
                recipient_id=digest.recipient_id,
                kind=EmailKind.DIGEST,
                category="digest",
                items=items,
                period_start=from_ms(digest.period_start_ms) if digest.period_start_ms else None,
                period_end=from_ms(digest.period_end_ms) if digest.period_end_ms else None,
                created_at=now,
                not_before=quiet_hours_end(now, quiet, tz),
            )
            records.append(OutRecord(self._topic, digest.recipient_id, request.to_bytes()))
            sent.append(digest)
        await self.publisher.publish_many(records)
        for digest in sent:
            await self.store.finish_digest(digest, now_ms)
            self.metrics.digests.inc(len(digest.items))
            self.metrics.emails.labels(kind="digest").inc()
        return len(sent)

    async def run(self) -> None:
        """Flush forever, every ``digest_interval_seconds``, until :meth:`stop`."""
        while not self._stop.is_set():
            try:
                while await self.flush_due() > 0 and not self._stop.is_set():
                    pass
            except Exception:  # a broken flush must not stop future flushes
                log.exception("digest_flush_failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), self.settings.digest_interval_seconds)

    def start(self) -> None:
        """Run :meth:`run` as a background task."""
        self._stop.clear()
        self._task = asyncio.create_task(self.run(), name="clarion-aggregator-digests")

    async def stop(self) -> None:
        """Stop the background task after its current flush."""
        self._stop.set()
        if self._task is not None:
            await self._task
            self._task = None
