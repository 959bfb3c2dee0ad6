"""PostgreSQL repository of analytics: idempotent batch writes and aggregate queries.

Every ``apply_*`` method takes one batch of decoded records and runs in ONE
transaction: it first inserts the batch's dedup keys (``ON CONFLICT DO NOTHING
RETURNING``), then only the records whose key was new update the per-notification
facts (rows locked ``FOR UPDATE`` in id order), the daily counters and the latency
histograms. A redelivered batch therefore changes nothing, and a crash before
commit leaves nothing half-written: Kafka redelivers the batch and it is applied
once. Rows are locked and upserted in sorted key order so concurrent batches
(another topic, another analytics instance) do not deadlock each other.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import date, datetime
from typing import Any

from sqlalchemy import Table, and_, bindparam, func, select, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from clarion_analytics.adapters.tables import (
    DailyCount,
    LatencyBucket,
    NotificationState,
    NotificationVersion,
    PendingDelivery,
    PresenceMinute,
    PresenceSession,
    ProcessedMessage,
)
from clarion_analytics.domain.counters import CounterBatch, inbox_counter
from clarion_analytics.domain.facts import (
    NotificationFacts,
    observe_notification,
    observe_read,
    observe_status,
)
from clarion_analytics.domain.presence import (
    OnlineTracker,
    SessionState,
    newer_state,
    user_online,
)
from clarion_analytics.domain.samples import (
    LatencySample,
    bucket_counts,
    delivery_sample,
    emitted_at,
    notification_samples,
)
from clarion_contracts.v1 import (
    DeliveryState,
    DeliveryStatus,
    InboxAction,
    InboxEvent,
    Notification,
    PresenceEvent,
    utc_now,
)


def _t(model: Any) -> Table:
    table: Table = model.__table__
    return table


PROCESSED = _t(ProcessedMessage)
VERSIONS = _t(NotificationVersion)
STATE = _t(NotificationState)
PENDING = _t(PendingDelivery)
COUNTS = _t(DailyCount)
LATENCY = _t(LatencyBucket)
SESSIONS = _t(PresenceSession)
MINUTES = _t(PresenceMinute)

FACT_COLUMNS = tuple(f.name for f in fields(NotificationFacts))


@dataclass
class Applied:
    """Outcome of one batch: records applied, duplicates skipped, and what was new.

    ``statuses`` and ``samples`` are the newly applied status reports and latency
    samples, for process metrics updated after the commit.
    """

    applied: int = 0
    duplicates: int = 0
    statuses: list[DeliveryStatus] = field(default_factory=list)
    samples: list[LatencySample] = field(default_factory=list)


class AnalyticsRepository:
    """Writes and reads the ``analytics`` schema.

    Args:
        engine: async SQLAlchemy engine (``postgresql+asyncpg``).
        clock: the current time (aware UTC), injectable for tests.
    """

    def __init__(self, engine: AsyncEngine, clock: Callable[[], datetime] = utc_now) -> None:
        self.engine = engine
        self.clock = clock

    # ---- dedup -----------------------------------------------------------------------------

    async def _claim(self, conn: AsyncConnection, topic: str, keys: Sequence[str]) -> set[str]:
        """Insert dedup keys; return those not seen before (this transaction owns them)."""
        now = self.clock()
        rows = [{"key": k, "topic": topic, "processed_at": now} for k in sorted(set(keys))]
        if not rows:
            return set()
        stmt = insert(PROCESSED).on_conflict_do_nothing().returning(PROCESSED.c.key)
        result = await conn.execute(stmt, rows)
        return set(result.scalars())

    # ---- notification facts ----------------------------------------------------------------

    async def _lock_facts(
        self, conn: AsyncConnection, ids: Iterable[str]
    ) -> dict[str, NotificationFacts]:
        """Create missing fact rows and lock all of ``ids`` in id order."""
        ordered = sorted(set(ids))
        if not ordered:
            return {}
        await conn.execute(
            insert(STATE).on_conflict_do_nothing(), [{"notification_id": i} for i in ordered]
        )
        result = await conn.execute(
            select(STATE)
            .where(STATE.c.notification_id.in_(ordered))
            .order_by(STATE.c.notification_id)
            .with_for_update()
        )
        return {
            row.notification_id: NotificationFacts(**{c: getattr(row, c) for c in FACT_COLUMNS})
            for row in result
        }

    async def _save_facts(self, conn: AsyncConnection, facts: Iterable[NotificationFacts]) -> None:
        rows = [
            {("b_" + c): getattr(f, c) for c in FACT_COLUMNS}
            for f in sorted(facts, key=lambda f: f.notification_id)
        ]
        if not rows:
            return
        stmt = (
            update(STATE)
            .where(STATE.c.notification_id == bindparam("b_notification_id"))
            .values({c: bindparam("b_" + c) for c in FACT_COLUMNS if c != "notification_id"})
        )
        await conn.execute(stmt, rows)

    async def _add_counters(self, conn: AsyncConnection, counters: CounterBatch) -> None:
        rows = [
            {
                "day": k.day,
                "type": k.type,
                "channel": k.channel,
                "metric": k.metric,
                "reason": k.reason,
                "count": n,
            }
            for k, n in counters.items()
        ]
        if rows:
            stmt = insert(COUNTS)
            stmt = stmt.on_conflict_do_update(
                index_elements=["day", "type", "channel", "metric", "reason"],
                set_={"count": COUNTS.c.count + stmt.excluded.count},
            )
            await conn.execute(stmt, rows)

    async def _add_samples(self, conn: AsyncConnection, samples: list[LatencySample]) -> None:
        rows = [
            {
                "minute": k.minute,
                "stage": k.stage,
                "channel": k.channel,
                "type": k.type,
                "bucket": k.bucket,
                "count": n,
            }
            for k, n in bucket_counts(samples)
        ]
        if rows:
            stmt = insert(LATENCY)
            stmt = stmt.on_conflict_do_update(
                index_elements=["minute", "stage", "channel", "type", "bucket"],
                set_={"count": LATENCY.c.count + stmt.excluded.count},
            )
            await conn.execute(stmt, rows)

    # ---- apply batches ---------------------------------------------------------------------

    async def apply_notifications(self, batch: Sequence[Notification]) -> Applied:
        """Apply notification versions; dedup key ``(notification_id, version)``."""
        out = Applied()
        async with self.engine.begin() as conn:
            unique: dict[tuple[str, int], Notification] = {}
            for n in batch:
                unique.setdefault((n.notification_id, n.version), n)
            rows = [
                {
                    "notification_id": n.notification_id,
                    "version": n.version,
                    "emitted_at": emitted_at(n),
                    "type": n.type,
                }
                for key, n in sorted(unique.items())
            ]
            stmt = (
                insert(VERSIONS)
                .on_conflict_do_nothing()
                .returning(VERSIONS.c.notification_id, VERSIONS.c.version)
            )
            fresh = {(r[0], r[1]) for r in await conn.execute(stmt, rows)} if rows else set()
            new = [unique[k] for k in sorted(fresh)]
            out.applied, out.duplicates = len(new), len(batch) - len(new)
            if not new:
                return out
            facts = await self._lock_facts(conn, (n.notification_id for n in new))
            counters = CounterBatch()
            now = self.clock()
            for n in new:
                for key in observe_notification(facts[n.notification_id], n, now):
                    counters.add(key)
                out.samples.extend(notification_samples(n))
            # Deliveries reported before their version arrived get their latency now.
            pending = await conn.execute(
                PENDING.delete()
                .where(
                    tuple_(PENDING.c.notification_id, PENDING.c.version).in_(
                        [(n.notification_id, n.version) for n in new]
                    )
                )
                .returning(
                    PENDING.c.notification_id,
                    PENDING.c.version,
                    PENDING.c.channel,
                    PENDING.c.delivered_at,
                )
            )
            by_key = {(n.notification_id, n.version): n for n in new}
            for nid, version, channel, delivered_at in pending:
                n = by_key[(nid, version)]
                out.samples.append(delivery_sample(n.type, channel, emitted_at(n), delivered_at))
            await self._save_facts(conn, facts.values())
            await self._add_counters(conn, counters)
            await self._add_samples(conn, out.samples)
        return out

    async def apply_statuses(self, batch: Sequence[DeliveryStatus]) -> Applied:
        """Apply delivery status reports; dedup key ``status_id``."""
        out = Applied()
        async with self.engine.begin() as conn:
            fresh = await self._claim(conn, "delivery-status", [f"s:{s.status_id}" for s in batch])
            new: list[DeliveryStatus] = []
            for s in batch:
                if f"s:{s.status_id}" in fresh:
                    fresh.discard(f"s:{s.status_id}")
                    new.append(s)
            out.applied, out.duplicates = len(new), len(batch) - len(new)
            if not new:
                return out
            new.sort(key=lambda s: (s.notification_id, s.occurred_at, s.status_id))
            facts = await self._lock_facts(conn, (s.notification_id for s in new))
            delivered = [s for s in new if s.status is DeliveryState.DELIVERED]
            versions: dict[tuple[str, int], datetime] = {}
            if delivered:
                result = await conn.execute(
                    select(
                        VERSIONS.c.notification_id, VERSIONS.c.version, VERSIONS.c.emitted_at
                    ).where(
                        tuple_(VERSIONS.c.notification_id, VERSIONS.c.version).in_(
                            sorted({(s.notification_id, s.version) for s in delivered})
                        )
                    )
                )
                versions = {(r[0], r[1]): r[2] for r in result}
            counters = CounterBatch()
            pending_rows: list[dict[str, Any]] = []
            for s in new:
                f = facts[s.notification_id]
                for key in observe_status(f, s):
                    counters.add(key)
                if s.status is not DeliveryState.DELIVERED:
                    continue
                base = versions.get((s.notification_id, s.version))
                if base is None and s.version == 1 and s.notification_created_at is not None:
                    base = s.notification_created_at
                type_ = f.type or s.type
                if base is not None and type_ is not None:
                    out.samples.append(delivery_sample(type_, s.channel.value, base, s.occurred_at))
                else:
                    pending_rows.append(
                        {
                            "status_id": s.status_id,
                            "notification_id": s.notification_id,
                            "version": s.version,
                            "channel": s.channel.value,
                            "delivered_at": s.occurred_at,
                        }
                    )
            if pending_rows:
                await conn.execute(insert(PENDING).on_conflict_do_nothing(), pending_rows)
            out.statuses = new
            await self._save_facts(conn, facts.values())
            await self._add_counters(conn, counters)
            await self._add_samples(conn, out.samples)
        return out

    async def apply_inbox_events(self, batch: Sequence[InboxEvent]) -> Applied:
        """Apply inbox events; dedup key ``event_id``. Reads set each notification's first read."""
        out = Applied()
        async with self.engine.begin() as conn:
            fresh = await self._claim(conn, "inbox-events", [f"i:{e.event_id}" for e in batch])
            new: list[InboxEvent] = []
            for e in batch:
                if f"i:{e.event_id}" in fresh:
                    fresh.discard(f"i:{e.event_id}")
                    new.append(e)
            out.applied, out.duplicates = len(new), len(batch) - len(new)
            if not new:
                return out
            new.sort(key=lambda e: (e.occurred_at, str(e.event_id)))
            counters = CounterBatch()
            reads = [e for e in new if e.action is InboxAction.READ]
            facts = await self._lock_facts(conn, (i for e in reads for i in e.notification_ids))
            for e in new:
                counters.add(inbox_counter(e))
            for e in reads:
                for nid in e.notification_ids:
                    for key in observe_read(facts[nid], e.occurred_at):
                        counters.add(key)
            await self._save_facts(conn, facts.values())
            await self._add_counters(conn, counters)
        return out

    async def apply_presence(self, batch: Sequence[PresenceEvent]) -> Applied:
        """Apply presence events; dedup key ``event_id``; newest report per instance wins.

        User-level flips become additive per-minute deltas, so batches commute.
        """
        out = Applied()
        async with self.engine.begin() as conn:
            fresh = await self._claim(conn, "presence", [f"p:{e.event_id}" for e in batch])
            new: list[PresenceEvent] = []
            for e in batch:
                if f"p:{e.event_id}" in fresh:
                    fresh.discard(f"p:{e.event_id}")
                    new.append(e)
            out.applied, out.duplicates = len(new), len(batch) - len(new)
            if not new:
                return out
            users = sorted({e.user_id for e in new})
            result = await conn.execute(
                select(SESSIONS)
                .where(SESSIONS.c.user_id.in_(users))
                .order_by(SESSIONS.c.user_id, SESSIONS.c.instance_id)
                .with_for_update()
            )
            states: dict[str, dict[str, SessionState]] = {u: {} for u in users}
            for row in result:
                states[row.user_id][row.instance_id] = SessionState(
                    row.online, row.sessions, row.updated_at
                )
            tracker = OnlineTracker()
            changed: dict[tuple[str, str], SessionState] = {}
            for e in sorted(new, key=lambda e: (e.occurred_at, str(e.event_id))):
                user = states[e.user_id]
                state = newer_state(user.get(e.instance_id), e)
                if state is None:
                    continue
                before = user_online(user.values())
                user[e.instance_id] = state
                changed[(e.user_id, e.instance_id)] = state
                tracker.flip(e.occurred_at, was_online=before, is_online=user_online(user.values()))
            rows = [
                {
                    "user_id": u,
                    "instance_id": i,
                    "online": s.online,
                    "sessions": s.sessions,
                    "updated_at": s.updated_at,
                }
                for (u, i), s in sorted(changed.items())
            ]
            if rows:
                stmt = insert(SESSIONS)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["user_id", "instance_id"],
                    set_={
                        "online": stmt.excluded.online,
                        "sessions": stmt.excluded.sessions,
                        "updated_at": stmt.excluded.updated_at,
                    },
                )
                await conn.execute(stmt, rows)
            minute_rows = [
                {
                    "minute": m,
                    "delta": d.delta,
                    "went_online": d.went_online,
                    "went_offline": d.went_offline,
                }
                for m, d in sorted(tracker.minutes.items())
            ]
            if minute_rows:
                stmt = insert(MINUTES)
                stmt = stmt.on_conflict_do_update(
                    index_elements=["minute"],
                    set_={
                        "delta": MINUTES.c.delta + stmt.excluded.delta,
                        "went_online": MINUTES.c.went_online + stmt.excluded.went_online,
                        "went_offline": MINUTES.c.went_offline + stmt.excluded.went_offline,
                    },
                )
                await conn.execute(stmt, minute_rows)
        return out

    # ---- retention -------------------------------------------------------------------------

    async def prune(self, *, dedup_before: datetime, facts_before: datetime) -> int:
        """Delete dedup keys older than ``dedup_before`` and per-notification facts (state,
        versions, pending deliveries) older than ``facts_before``; returns rows deleted.

        Aggregates (counters, histograms, presence minutes) are kept.
        """
        async with self.engine.begin() as conn:
            deleted = 0
            for stmt in (
                PROCESSED.delete().where(PROCESSED.c.processed_at < dedup_before),
                VERSIONS.delete().where(VERSIONS.c.emitted_at < facts_before),
                STATE.delete().where(STATE.c.created_at < facts_before),
                PENDING.delete().where(PENDING.c.delivered_at < facts_before),
            ):
                result = await conn.execute(stmt)
                deleted += int(getattr(result, "rowcount", 0) or 0)
        return deleted

    # ---- queries ---------------------------------------------------------------------------

    async def counters(
        self,
        first_day: date,
        last_day: date,
        *,
        type_: str | None = None,
        channel: str | None = None,
        metrics: Sequence[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Counter rows (``day, type, channel, metric, reason, count``) of days in
        ``[first_day, last_day]``, filtered by type / channel / metrics when given.

        The channel filter keeps channel-less (``*``) metrics, which belong to every channel.
        """
        conds = [COUNTS.c.day >= first_day, COUNTS.c.day <= last_day]
        if type_ is not None:
            conds.append(COUNTS.c.type == type_)
        if channel is not None:
            conds.append(COUNTS.c.channel.in_([channel, "*"]))
        if metrics is not None:
            conds.append(COUNTS.c.metric.in_(list(metrics)))
        result = await self.engine_execute(
            select(
                COUNTS.c.day,
                COUNTS.c.type,
                COUNTS.c.channel,
                COUNTS.c.metric,
                COUNTS.c.reason,
                COUNTS.c.count,
            )
            .where(and_(*conds))
            .order_by(COUNTS.c.day, COUNTS.c.type, COUNTS.c.channel, COUNTS.c.metric)
        )
        return result

    async def latency_histograms(
        self,
        start: datetime,
        end: datetime,
        step_seconds: int,
        *,
        type_: str | None = None,
        channel: str | None = None,
    ) -> list[dict[str, Any]]:
        """Histogram rows summed per time step: ``t, stage, channel, bucket, count``
        for minutes in ``[start, end)``; ``t`` is the step's start (epoch aligned)."""
        t = func.to_timestamp(
            func.floor(func.extract("epoch", LATENCY.c.minute) / step_seconds) * step_seconds
        ).label("t")
        conds = [LATENCY.c.minute >= start, LATENCY.c.minute < end]
        if type_ is not None:
            conds.append(LATENCY.c.type == type_)
        if channel is not None:
            conds.append(LATENCY.c.channel.in_([channel, "*"]))
        stmt = (
            select(
                t,
                LATENCY.c.stage,
                LATENCY.c.channel,
                LATENCY.c.bucket,
                func.sum(LATENCY.c.count).label("count"),
            )
            .where(and_(*conds))
            .group_by(t, LATENCY.c.stage, LATENCY.c.channel, LATENCY.c.bucket)
            .order_by(t)
        )
        rows = await self.engine_execute(stmt)
        for row in rows:
            row["count"] = int(row["count"])
        return rows

    async def online_minutes(
        self, start: datetime, end: datetime
    ) -> tuple[int, list[dict[str, Any]]]:
        """Users online just before ``start`` (sum of earlier deltas) and the presence
        minute rows (``minute, delta, went_online, went_offline``) in ``[start, end)``."""
        async with self.engine.connect() as conn:
            level = await conn.scalar(
                select(func.coalesce(func.sum(MINUTES.c.delta), 0)).where(MINUTES.c.minute < start)
            )
            result = await conn.execute(
                select(MINUTES)
                .where(MINUTES.c.minute >= start, MINUTES.c.minute < end)
                .order_by(MINUTES.c.minute)
            )
            return int(level or 0), [dict(row._mapping) for row in result]

    async def online_now(self) -> int:
        """Users with at least one instance reporting them online now."""
        async with self.engine.connect() as conn:
            value = await conn.scalar(
                select(func.count(func.distinct(SESSIONS.c.user_id))).where(SESSIONS.c.online)
            )
        return int(value or 0)

    async def engine_execute(self, stmt: Any) -> list[dict[str, Any]]:
        """Run a read-only statement and return its rows as dicts."""
        async with self.engine.connect() as conn:
            result = await conn.execute(stmt)
            return [dict(row._mapping) for row in result]
