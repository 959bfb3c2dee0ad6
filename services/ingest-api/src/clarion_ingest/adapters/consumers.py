"""Kafka consumers of ingest-api: the inbox read model and per-channel delivery status.

Both consume in batches (FastStream batch subscribers: up to ``batch_max_records``
records, handed over as soon as the fetch returns) and each batch is applied with
ONE statement in ONE transaction:

1. every record value is parsed into its contract; a record that cannot be parsed
   (poison) is produced to ``<topic>.dlq`` with the kit's ``x-clarion-*`` headers
   (:mod:`clarion_kit.retry`) and is not retried: retrying cannot fix it;
2. the valid records are applied (notifications: the newest version per id,
   ``INSERT ... ON CONFLICT DO UPDATE ... WHERE excluded.version > inbox.version``;
   delivery status: the latest status per channel merged into ``deliveries``). A
   transient failure (database unreachable, serialization failure) is retried with
   capped exponential backoff for as long as the service runs, so valid data is
   never dead-lettered because of an outage; the partition waits meanwhile. A batch
   the database refuses because of a value in it (SQLSTATE class 22, 23 or 54) is
   applied record by record and only the records refused on their own are
   dead-lettered;
3. the counts cache of every user whose inbox changed is dropped with one Redis
   ``DEL`` (rebuilt from PostgreSQL on the next read);
4. only then does the handler return and the offsets get committed (at-least-once,
   ``AckPolicy.NACK_ON_ERROR``). Redelivered batches are harmless: the upsert
   ignores a version it already holds and a status overwrite is idempotent.

Notifications are consumed in group ``consumer_group`` (``ingest-api``), delivery
status in ``<consumer_group>-delivery-status``.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, TypeVar

from faststream.kafka import KafkaBroker
from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError
from sqlalchemy.ext.asyncio import AsyncEngine

from clarion_contracts.base import ContractModel
from clarion_contracts.registry import DELIVERY_STATUS, NOTIFICATIONS
from clarion_contracts.v1 import DeliveryStatus, Notification
from clarion_ingest.adapters import postgres
from clarion_ingest.adapters.redis_store import CountsCache
from clarion_ingest.domain.inbox import delivery_patches, newest_versions
from clarion_ingest.settings import IngestSettings
from clarion_kit.kafka import raw_records, subscriber_options
from clarion_kit.logging import get_logger
from clarion_kit.metrics import get_or_create_counter, get_or_create_histogram, metric_name
from clarion_kit.retry import RecordLike

_log = get_logger(__name__)

M = TypeVar("M", bound=ContractModel)

DeadLetter = Callable[[RecordLike, BaseException], Awaitable[None]]
"""Produces a poison record to its DLQ; returns once the broker acknowledged it."""

REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
"""PostgreSQL SQLSTATE classes meaning "this data cannot be stored": data exception (22),
integrity constraint violation (23), program limit exceeded (54). Anything else
(connection loss, serialization failure, shutdown) is transient and retried."""


class Sleeper(Protocol):
    """``asyncio.sleep``-compatible wait, replaceable in tests."""

    def __call__(self, seconds: float, /) -> Awaitable[Any]: ...


def refused_by_database(exc: BaseException) -> bool:
    """True if ``exc`` is a database error caused by the data itself.

    That is a SQLSTATE of :data:`REFUSED_SQLSTATE_CLASSES` or a value the driver
    could not encode (``DataError``); retrying such a batch cannot succeed.
    """
    if not isinstance(exc, DBAPIError):
        return False
    if isinstance(exc, DataError):
        return True
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(code, str) and code[:2] in REFUSED_SQLSTATE_CLASSES


class _RefusedError(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


@dataclass(frozen=True)
class Backoff:
    """Waits between attempts to apply a batch: ``initial * 2**(n-1)`` seconds, capped."""

    initial_seconds: float = 0.2
    max_seconds: float = 10.0

    def delay(self, attempt: int) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (>= 1)."""
        return float(min(self.max_seconds, self.initial_seconds * 2 ** (attempt - 1)))


async def _no_dead_letter(record: RecordLike, exc: BaseException) -> None:
    raise RuntimeError("no dead-letter producer configured") from exc


class InboxProjector:
    """Applies batches of notification versions and delivery statuses to the inbox.

    Args:
        engine: the PostgreSQL engine.
        counts: the counts cache, invalidated for users whose inbox changed.
        service: service name for metric names.
        dead_letter: produces a poison record to its DLQ (the broker's
            ``clarion_dlq.send``); without it a poison record fails the batch.
        backoff: waits between attempts of a batch that failed transiently.
        sleep: the wait function.
    """

    def __init__(
        self,
        engine: AsyncEngine,
        counts: CountsCache,
        service: str,
        *,
        dead_letter: DeadLetter | None = None,
        backoff: Backoff | None = None,
        sleep: Sleeper = asyncio.sleep,
    ) -> None:
        self.engine = engine
        self.counts = counts
        self.dead_letter: DeadLetter = dead_letter or _no_dead_letter
        self.backoff = backoff or Backoff()
        self.sleep = sleep
        self.applied = get_or_create_counter(
            metric_name(service, "inbox_versions_total"),
            "Notification versions consumed, by outcome (applied or stale)",
            ("outcome",),
        )
        self.deliveries = get_or_create_counter(
            metric_name(service, "delivery_statuses_total"),
            "Delivery statuses consumed, by outcome (recorded or unknown notification)",
            ("outcome",),
        )
        self.poison = get_or_create_counter(
            metric_name(service, "poison_records_total"),
            "Records dead-lettered by the inbox consumers, by topic and error type",
            ("topic", "error_type"),
        )
        self.batch_seconds = get_or_create_histogram(
            metric_name(service, "consumer_batch_seconds"),
            "Seconds to apply one consumer batch (parse, PostgreSQL, Redis)",
            ("topic",),
            buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0),
        )
        self.batch_failures = get_or_create_counter(
            metric_name(service, "consumer_batch_failures_total"),
            "Failed attempts to apply a consumer batch (each is retried), by error type",
            ("topic", "error_type"),
        )

    # ---- one transaction per batch ---------------------------------------------------

    async def apply_notifications(self, batch: Sequence[Notification]) -> set[str]:
        """Upsert the newest version of each notification in ``batch`` (one statement).

        Redelivered or older versions are ignored; the cached counts of every user
        with an applied version are dropped once the transaction committed.

        Returns:
            The user ids whose inbox changed.

        Raises:
            sqlalchemy.exc.DBAPIError: the statement failed (nothing was written).
        """
        newest = newest_versions(batch)
        async with self.engine.begin() as conn:
            applied = await postgres.upsert_notifications(conn, newest)
        self.applied.labels("applied").inc(len(applied))
        self.applied.labels("stale").inc(len(batch) - len(applied))
        users = {user for _, user in applied}
        await self.counts.invalidate_many(users)
        return users

    async def apply_notification(self, notification: Notification) -> bool:
        """Upsert one version; True if it was newer than the stored one."""
        return bool(await self.apply_notifications([notification]))

    async def apply_deliveries(self, batch: Sequence[DeliveryStatus]) -> int:
        """Record the latest status per channel on the inbox rows (one statement).

        Returns:
            How many inbox rows were updated (statuses of unknown rows change nothing).

        Raises:
            sqlalchemy.exc.DBAPIError: the statement failed (nothing was written).
        """
        patches = delivery_patches(batch)
        async with self.engine.begin() as conn:
            updated = await postgres.record_deliveries(conn, patches)
        self.deliveries.labels("recorded").inc(updated)
        self.deliveries.labels("unknown").inc(len(patches) - updated)
        return updated

    async def apply_delivery(self, status: DeliveryStatus) -> bool:
        """Record one status; False if the inbox row is unknown."""
        return bool(await self.apply_deliveries([status]))

    # ---- raw consumer batches -------------------------------------------------------

    async def consume_notifications(self, records: Sequence[RecordLike]) -> None:
        """Handle one consumer batch of ``clarion.notifications.v1`` (see the module doc).

        Raises:
            asyncio.CancelledError: shutdown interrupted the retries; nothing of the
                batch is committed and it will be consumed again.
            aiokafka.errors.KafkaError: a poison record could not be dead-lettered.
        """
        await self._consume(records, Notification, self.apply_notifications, NOTIFICATIONS.name)

    async def consume_delivery_status(self, records: Sequence[RecordLike]) -> None:
        """Handle one consumer batch of ``clarion.delivery-status.v1`` (see the module doc).

        Raises:
            asyncio.CancelledError / aiokafka.errors.KafkaError: as
                :meth:`consume_notifications`.
        """
        await self._consume(records, DeliveryStatus, self.apply_deliveries, DELIVERY_STATUS.name)

    async def _consume(
        self,
        records: Sequence[RecordLike],
        model: type[M],
        apply: Callable[[Sequence[M]], Awaitable[object]],
        topic: str,
    ) -> None:
        started = time.perf_counter()
        pairs: list[tuple[RecordLike, M]] = []
        for record in records:
            try:
                if record.value is None:
                    raise ValueError("record has no value (tombstone)")
                pairs.append((record, model.from_bytes(record.value)))
            except (ValidationError, ValueError) as exc:
                await self._poison(topic, record, exc)
        try:
            await self._apply_retrying(topic, apply, [m for _, m in pairs])
        except _RefusedError as refused:
            _log.warning(
                "batch refused by the database, applying record by record",
                topic=topic,
                size=len(pairs),
                error_type=type(refused.error).__name__,
            )
            for record, item in pairs:
                try:
                    await self._apply_retrying(topic, apply, [item])
                except _RefusedError as alone:
                    await self._poison(topic, record, alone.error)
        self.batch_seconds.labels(topic).observe(time.perf_counter() - started)

    async def _apply_retrying(
        self, topic: str, apply: Callable[[Sequence[M]], Awaitable[object]], items: Sequence[M]
    ) -> None:
        if not items:
            return
        attempt = 0
        while True:
            attempt += 1
            try:
                await apply(items)
                return
            except Exception as exc:
                self.batch_failures.labels(topic, type(exc).__name__).inc()
                if refused_by_database(exc):
                    raise _RefusedError(exc) from exc
                delay = self.backoff.delay(attempt)
                _log.warning(
                    "batch not applied, retrying",
                    topic=topic,
                    size=len(items),
                    attempt=attempt,
                    retry_in_s=delay,
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                )
                await self.sleep(delay)

    async def _poison(self, topic: str, record: RecordLike, exc: BaseException) -> None:
        _log.warning(
            "poison record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error_type=type(exc).__name__,
        )
        await self.dead_letter(record, exc)
        self.poison.labels(topic, type(exc).__name__).inc()


def register_consumers(
    broker: KafkaBroker, settings: IngestSettings, projector: InboxProjector
) -> None:
    """Subscribe ``projector`` to the notifications (and delivery-status) topics in batches.

    Batches hold up to ``settings.batch_max_records`` records; the consumer long-polls
    at most ``settings.kafka_fetch_max_wait_ms`` (delivery status: the background wait,
    off the live path) and waits ``settings.batch_timeout_ms``
    when nothing arrived, so a lone record is applied within milliseconds.
    """
    batch: dict[str, Any] = {
        "batch": True,
        "max_records": settings.batch_max_records,
        "batch_timeout_ms": settings.batch_timeout_ms,
        "decoder": raw_records,
    }
    if settings.consume_notifications:
        options = subscriber_options(
            settings,
            group_id=settings.consumer_group,
        )

        async def on_notifications(records: list[Any]) -> None:
            await projector.consume_notifications(records)

        broker.subscriber(
            settings.topic(NOTIFICATIONS), title="ingest-api-inbox", **batch, **options
        )(on_notifications)

    if settings.consume_delivery_status:
        # A group of its own: one group subscribed to different topics by different
        # members rebalances both on every change.
        delivery_options = subscriber_options(
            settings,
            group_id=f"{settings.consumer_group}-delivery-status",
            background=True,
        )

        async def on_delivery_status(records: list[Any]) -> None:
            await projector.consume_delivery_status(records)

        broker.subscriber(
            settings.topic(DELIVERY_STATUS),
            title="ingest-api-delivery-status",
            **batch,
            **delivery_options,
        )(on_delivery_status)
