"""Batch handlers: raw Kafka records -> contracts -> the idempotent repository.

One call handles one consumer batch of one topic:

1. each record value is parsed into the topic's contract; a record that cannot
   be parsed (poison) is produced to the topic's DLQ with the ``x-clarion-*``
   headers and counted, and is not retried (retrying cannot fix it);
2. the valid records are applied in one transaction (see
   :mod:`clarion_analytics.adapters.postgres`); a transient failure (database
   down, deadlock) is retried with capped exponential backoff for as long as
   the service runs, so valid data is never dead-lettered because of an outage.
   The consumer does not advance meanwhile: lag grows and alerts fire. A batch
   the database refuses because of a value in it is split, and only the records
   refused on their own are dead-lettered;
3. only then does the handler return and the offsets get committed
   (at-least-once; redeliveries are absorbed by the dedup keys).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pydantic import ValidationError
from sqlalchemy.exc import DataError, DBAPIError

from clarion_analytics.adapters.postgres import AnalyticsRepository, Applied
from clarion_analytics.handlers.metrics import AnalyticsMetrics
from clarion_contracts.base import ContractModel
from clarion_contracts.registry import (
    DELIVERY_STATUS,
    INBOX_EVENTS,
    NOTIFICATIONS,
    PRESENCE,
    TopicSpec,
)
from clarion_kit.logging import get_logger
from clarion_kit.retry import RecordLike

log = get_logger(__name__)

DeadLetter = Callable[[RecordLike, BaseException], Awaitable[None]]
"""Produces a poison record to its DLQ and returns once the broker acknowledged it."""


class Sleeper(Protocol):
    """``asyncio.sleep``-compatible wait, injectable for tests."""

    def __call__(self, seconds: float, /) -> Awaitable[Any]: ...


@dataclass
class BackoffPolicy:
    """Waits between attempts to apply a batch: ``initial * 2**n`` seconds, capped."""

    initial_seconds: float = 0.2
    max_seconds: float = 10.0

    def delay(self, attempt: int) -> float:
        """Wait before attempt ``attempt + 1`` (``attempt`` >= 1)."""
        return float(min(self.max_seconds, self.initial_seconds * 2 ** (attempt - 1)))


@dataclass
class BatchHandler:
    """Applies consumer batches of the four analytics topics.

    Args:
        repo: the PostgreSQL repository.
        dead_letter: produces poison records to the DLQ.
        metrics: Prometheus metrics of the consumer.
        backoff: retry waits for batches that failed to apply.
        sleep: the wait function (``asyncio.sleep``).
    """

    repo: AnalyticsRepository
    dead_letter: DeadLetter
    metrics: AnalyticsMetrics
    backoff: BackoffPolicy = field(default_factory=BackoffPolicy)
    sleep: Sleeper = asyncio.sleep

    def _apply_fn(self, spec: TopicSpec) -> Callable[[Sequence[Any]], Awaitable[Applied]]:
        if spec is NOTIFICATIONS:
            return self.repo.apply_notifications
        if spec is DELIVERY_STATUS:
            return self.repo.apply_statuses
        if spec is INBOX_EVENTS:
            return self.repo.apply_inbox_events
        if spec is PRESENCE:
            return self.repo.apply_presence
        raise ValueError(f"analytics does not consume {spec.name}")

    async def handle(self, spec: TopicSpec, records: Sequence[RecordLike]) -> Applied:
        """Parse, dead-letter poison, apply the rest (retrying until it succeeds).

        A batch the database refuses for good (a value it cannot store: SQLSTATE class
        22, 23 or 54) is applied record by record, and only the records refused on their
        own are dead-lettered.

        Raises:
            asyncio.CancelledError: shutdown interrupted the retries; nothing of the
                batch was committed and it will be consumed again.
            aiokafka.errors.KafkaError: a poison record could not be dead-lettered.
        """
        pairs: list[tuple[RecordLike, ContractModel]] = []
        for record in records:
            try:
                if record.value is None:
                    raise ValueError("record has no value (tombstone)")
                pairs.append((record, spec.model.from_bytes(record.value)))
            except (ValidationError, ValueError) as exc:
                await self._poison(spec, record, exc)
        try:
            return await self._apply_retrying(spec, [model for _, model in pairs])
        except _RefusedError as refused:
            log.warning(
                "batch refused by the database, applying record by record",
                topic=spec.name,
                size=len(pairs),
                error_type=type(refused.error).__name__,
            )
        total = Applied()
        for record, model in pairs:
            try:
                applied = await self._apply_retrying(spec, [model])
            except _RefusedError as refused:
                await self._poison(spec, record, refused.error)
                continue
            total.applied += applied.applied
            total.duplicates += applied.duplicates
            total.statuses.extend(applied.statuses)
            total.samples.extend(applied.samples)
        return total

    async def _poison(self, spec: TopicSpec, record: RecordLike, exc: BaseException) -> None:
        log.warning(
            "poison record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            error_type=type(exc).__name__,
        )
        await self.dead_letter(record, exc)
        self.metrics.poison(spec.name, type(exc).__name__)

    async def _apply_retrying(self, spec: TopicSpec, models: Sequence[ContractModel]) -> Applied:
        """Apply ``models`` in one transaction, retrying transient failures forever.

        Raises:
            _RefusedError: the database refused the data itself (retrying cannot help).
        """
        apply = self._apply_fn(spec)
        attempt = 0
        while True:
            attempt += 1
            started = time.perf_counter()
            try:
                applied = await apply(models) if models else Applied()
            except Exception as exc:
                self.metrics.batch_failed(spec.name, type(exc).__name__)
                if refused_by_database(exc):
                    raise _RefusedError(exc) from exc
                delay = self.backoff.delay(attempt)
                log.warning(
                    "batch not applied, retrying",
                    topic=spec.name,
                    size=len(models),
                    attempt=attempt,
                    retry_in_s=delay,
                    error_type=type(exc).__name__,
                    error=str(exc)[:300],
                )
                await self.sleep(delay)
                continue
            self.metrics.batch_applied(spec.name, applied, time.perf_counter() - started)
            return applied


REFUSED_SQLSTATE_CLASSES = frozenset({"22", "23", "54"})
"""PostgreSQL SQLSTATE classes meaning "this data cannot be stored": data exception (22),
integrity constraint violation (23), program limit exceeded (54, e.g. an index row too
large). Everything else (connection loss, deadlock, shutdown) is transient."""


class _RefusedError(Exception):
    def __init__(self, error: BaseException) -> None:
        super().__init__(str(error))
        self.error = error


def refused_by_database(exc: BaseException) -> bool:
    """True if ``exc`` is a database error caused by the data (see
    :data:`REFUSED_SQLSTATE_CLASSES`), or a value the driver could not encode."""
    if not isinstance(exc, DBAPIError):
        return False
    if isinstance(exc, DataError):
        return True
    orig = exc.orig
    code = getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)
    return isinstance(code, str) and code[:2] in REFUSED_SQLSTATE_CLASSES
