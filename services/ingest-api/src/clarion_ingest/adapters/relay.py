"""The outbox relay: produces ``ingest.outbox`` rows to Kafka, in ``id`` order, at least once.

One relay runs in every ingest-api process, but only the one holding a
PostgreSQL session-level advisory lock (:func:`clarion_ingest.adapters.outbox.try_lock`)
produces; the others stand by and retry the lock every poll interval, so there is
one producer at a time and per-key order holds across replicas. The active relay:

1. reads up to ``outbox_batch_size`` pending rows, oldest ``id`` first;
2. produces them (``acks=all``) and waits for every acknowledgement, retrying the
   same batch with capped exponential backoff while the broker fails (nothing is
   dropped; the failure is counted and reported by ``/readyz``);
3. marks the rows relayed and reads the next batch, in one statement.

A crash between 2 and 3 sends the batch again from the next active relay:
delivery is at least once, and consumers deduplicate by ``event_id`` or version.
When nothing is pending it waits for a ``NOTIFY`` on
:data:`clarion_ingest.adapters.outbox.CHANNEL` (sent by the inserting transaction
at commit), or the poll interval if notifications are lost. A PostgreSQL failure
ends the session (the lock goes with the connection) and a new one starts after
a backoff.
"""

from __future__ import annotations

import asyncio
import contextlib
import sys
import time
from collections.abc import Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clarion_ingest.adapters import outbox
from clarion_ingest.adapters.kafka import EventPublisher
from clarion_ingest.domain.outbox import RelayState, RelayStatus
from clarion_ingest.settings import IngestSettings
from clarion_kit.logging import get_logger
from clarion_kit.metrics import get_or_create_counter, get_or_create_gauge, metric_name
from clarion_kit.retry import RetryPolicy, retry_call

_log = get_logger(__name__)

PRUNE_INTERVAL_SECONDS = 30.0
"""How often the active relay deletes relayed rows older than the retention."""


class _Metrics:
    def __init__(self, service: str) -> None:
        self.pending = get_or_create_gauge(
            metric_name(service, "outbox_pending"), "Outbox rows not relayed to Kafka yet"
        )
        self.oldest = get_or_create_gauge(
            metric_name(service, "outbox_oldest_pending_age_seconds"),
            "Age of the oldest outbox row not relayed yet (0 when none)",
        )
        self.relayed = get_or_create_counter(
            metric_name(service, "outbox_relayed_total"),
            "Outbox records produced and acknowledged by the broker, by topic",
            ("topic",),
        )
        self.failures = get_or_create_counter(
            metric_name(service, "outbox_relay_failures_total"),
            "Failed relay attempts (broker or PostgreSQL), each followed by a backoff",
        )


class OutboxRelay:
    """Drains the outbox to Kafka while this replica holds the relay lock.

    Args:
        engine: the service's engine (one connection is held while running).
        publisher: produces and waits for acknowledgements (``send_timeout_seconds``).
        settings: batch size, poll interval, retention, backoff and topic prefix.
    """

    def __init__(
        self, engine: AsyncEngine, publisher: EventPublisher, settings: IngestSettings
    ) -> None:
        self.engine = engine
        self.publisher = publisher
        self.settings = settings
        self._metrics = _Metrics(settings.service_name)
        self._status = RelayStatus(RelayState.STARTING)
        self._wake = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._stats: asyncio.Task[None] | None = None
        self._pruned_at = float("-inf")
        self._policy = RetryPolicy(
            max_attempts=sys.maxsize,
            initial_backoff_seconds=settings.retry_initial_backoff_seconds,
            max_backoff_seconds=settings.retry_max_backoff_seconds,
        )

    @property
    def status(self) -> RelayStatus:
        """The relay's current state, last error and backlog."""
        return self._status

    async def check(self) -> str:
        """Readiness check (reported, not required): the relay's state.

        Raises:
            RelayUnhealthyError: the relay is failing or stopped.
        """
        return self._status.check()

    def start(self) -> None:
        """Start relaying in a background task (idempotent)."""
        if self._task is None or self._task.done():
            self._task = asyncio.create_task(self._run(), name="outbox-relay")
        if self._stats is None or self._stats.done():
            self._stats = asyncio.create_task(self._stats_loop(), name="outbox-stats")

    async def stop(self) -> None:
        """Stop the relay; rows not marked relayed yet are sent again by the next one."""
        for task in (self._task, self._stats):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._stats = None
        self._set(RelayState.STOPPED)

    def _set(self, state: RelayState, error: str | None = None) -> None:
        s = self._status
        self._status = RelayStatus(state, error, s.pending, s.oldest_age_seconds)

    def _failed(self, exc: BaseException, attempt: int) -> None:
        self._metrics.failures.inc()
        self._set(RelayState.FAILING, f"{type(exc).__name__}: {exc}"[:200])
        _log.warning("outbox relay attempt failed", attempt=attempt, error=self._status.error)

    def _notified(self, *_: Any) -> None:
        self._wake.set()

    async def _run(self) -> None:
        try:
            await retry_call(self._session, self._policy, on_retry=self._failed)
        except Exception as exc:
            _log.error("outbox relay stopped", error=f"{type(exc).__name__}: {exc}")
            self._set(RelayState.STOPPED, str(exc))
            raise

    async def _session(self) -> None:
        async with self.engine.connect() as conn:
            try:
                await conn.execution_options(isolation_level="AUTOCOMMIT")
                raw = await conn.get_raw_connection()
                driver: Any = raw.driver_connection  # asyncpg's connection
                await driver.add_listener(outbox.CHANNEL, self._notified)
                while not await outbox.try_lock(conn):
                    if self._status.state is not RelayState.STANDBY:
                        _log.info("outbox relay standing by: another replica relays")
                    self._set(RelayState.STANDBY)
                    await asyncio.sleep(self.settings.outbox_poll_interval_seconds)
                _log.info("outbox relay active")
                self._set(RelayState.RELAYING)
                await self._lead(conn)
            finally:
                # The advisory lock and LISTEN belong to this session: never hand the
                # connection back to the pool with them.
                with contextlib.suppress(Exception):
                    await conn.invalidate()

    async def _lead(self, conn: AsyncConnection) -> None:
        size = self.settings.outbox_batch_size
        self._wake.clear()
        batch = await outbox.fetch_pending(conn, size)
        while True:
            if batch:
                await self._produce(batch)
                prefix = self.settings.topic_prefix
                for pending in batch:
                    self._metrics.relayed.labels(pending.record.topic.removeprefix(prefix)).inc()
                # Cleared before the read: a row committed after it sets the event again.
                self._wake.clear()
                batch = await self._mark_and_fetch(conn, [p.id for p in batch], size)
                continue
            await self._prune(conn)
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.settings.outbox_poll_interval_seconds):
                    await self._wake.wait()
            self._wake.clear()
            batch = await outbox.fetch_pending(conn, size)

    async def _produce(self, batch: Sequence[outbox.PendingRecord]) -> None:
        records = [p.record for p in batch]
        await retry_call(lambda: self.publisher.send(records), self._policy, on_retry=self._failed)
        if self._status.state is not RelayState.RELAYING:
            _log.info("outbox relay recovered")
            self._set(RelayState.RELAYING)

    async def _mark_and_fetch(
        self, conn: AsyncConnection, ids: Sequence[int], limit: int
    ) -> list[outbox.PendingRecord]:
        return await outbox.mark_and_fetch(conn, ids, limit)

    async def _stats_loop(self) -> None:
        # Apart from the relay loop, so the backlog is measured while a batch waits
        # for the broker, and on standby replicas too.
        while True:
            try:
                async with self.engine.connect() as conn:
                    stats = await outbox.stats(conn)
            except Exception as exc:
                _log.debug("outbox stats unavailable", error=f"{type(exc).__name__}: {exc}")
            else:
                self._metrics.pending.set(stats.pending)
                self._metrics.oldest.set(stats.oldest_age_seconds)
                s = self._status
                self._status = RelayStatus(
                    s.state, s.error, stats.pending, stats.oldest_age_seconds
                )
            await asyncio.sleep(self.settings.outbox_stats_interval_seconds)

    async def _prune(self, conn: AsyncConnection) -> None:
        now = time.monotonic()
        if now - self._pruned_at < PRUNE_INTERVAL_SECONDS:
            return
        self._pruned_at = now
        deleted = await outbox.prune(conn, self.settings.outbox_retention_seconds)
        if deleted:
            _log.info("outbox rows pruned", deleted=deleted)
