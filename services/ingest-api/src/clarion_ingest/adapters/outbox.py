"""The transactional outbox of ingest-api in PostgreSQL (``ingest.outbox``).

A write that must reach Kafka stores its records with :func:`enqueue` on the
connection of the transaction that changes the data, so the change and its
records commit together or not at all. The same statement calls ``pg_notify`` on
:data:`CHANNEL`; PostgreSQL delivers the notification at commit, which wakes the
relay (:mod:`clarion_ingest.adapters.relay`) at once instead of at its next poll.

The relay reads pending rows in ``id`` order (:func:`fetch_pending`), produces
them, and marks them relayed (:func:`mark_relayed`); relayed rows are deleted once
older than the retention (:func:`prune`), which is how long a domain event's
``event_id`` stays an idempotency key.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion_ingest.adapters.kafka import Record
from clarion_ingest.adapters.tables import SCHEMA
from clarion_kit.tracing import producer_traces

CHANNEL = "clarion_ingest_outbox"
"""The LISTEN/NOTIFY channel on which committed outbox rows are announced."""

LOCK_NAME = "clarion.ingest.outbox-relay"
"""Name hashed (``hashtext``) into the advisory-lock key only the active relay holds."""

_ENQUEUE = text(
    f"WITH stored AS ("
    f" INSERT INTO {SCHEMA}.outbox (topic, key, value, headers, event_id)"
    " SELECT v.topic, v.key, v.value, CAST(v.headers AS jsonb), v.event_id"
    " FROM unnest(CAST(:topic AS text[]), CAST(:key AS bytea[]), CAST(:value AS bytea[]),"
    " CAST(:headers AS text[]), CAST(:event_id AS uuid[]))"
    " WITH ORDINALITY AS v(topic, key, value, headers, event_id, n)"
    # Identity values follow the request's record order, which is the relay's order.
    " ORDER BY v.n"
    " ON CONFLICT (event_id, key) WHERE event_id IS NOT NULL DO NOTHING"
    " RETURNING 1)"
    " SELECT (SELECT count(*) FROM stored) AS stored, pg_notify(:channel, '')"
)

_PENDING = text(
    f"SELECT id, topic, key, value, headers, created_at FROM {SCHEMA}.outbox"
    " WHERE relayed_at IS NULL ORDER BY id LIMIT :limit"
)

_MARK_AND_NEXT = text(
    f"WITH marked AS ("
    f" UPDATE {SCHEMA}.outbox SET relayed_at = now() WHERE id = ANY(CAST(:ids AS bigint[])))"
    f" SELECT id, topic, key, value, headers, created_at FROM {SCHEMA}.outbox"
    # The SELECT sees the table as before the UPDATE: the marked rows are excluded by id.
    " WHERE relayed_at IS NULL AND id <> ALL(CAST(:ids AS bigint[]))"
    " ORDER BY id LIMIT :limit"
)

_MARK = text(
    f"UPDATE {SCHEMA}.outbox SET relayed_at = now() WHERE id = ANY(CAST(:ids AS bigint[]))"
)

_PRUNE = text(
    f"DELETE FROM {SCHEMA}.outbox WHERE id IN ("
    f" SELECT id FROM {SCHEMA}.outbox"
    " WHERE relayed_at IS NOT NULL AND relayed_at < now() - make_interval(secs => :seconds)"
    " ORDER BY id LIMIT :limit)"
)

_STATS = text(
    "SELECT count(*) AS pending,"
    " COALESCE(EXTRACT(EPOCH FROM now() - min(created_at)), 0) AS oldest"
    f" FROM {SCHEMA}.outbox WHERE relayed_at IS NULL"
)


@dataclass(frozen=True)
class PendingRecord:
    """A stored record not relayed yet: its outbox ``id`` and the record to produce."""

    id: int
    record: Record
    created_at: datetime


@dataclass(frozen=True)
class OutboxStats:
    """``pending`` rows not relayed yet and the age of the oldest one (seconds, 0 if none)."""

    pending: int
    oldest_age_seconds: float


async def enqueue(conn: AsyncConnection, records: Sequence[Record]) -> int:
    """Store ``records`` in the outbox within the caller's transaction and notify the relay.

    Each record gets the current W3C trace context added to its headers, so its
    consumers continue the request's trace. A record with an ``event_id`` whose
    ``(event_id, key)`` is already stored (a producer's retry) is skipped.

    Args:
        conn: a connection inside a transaction (``engine.begin()``).
        records: in the order they must be produced (per key).

    Returns:
        How many records were stored (fewer than given when some were duplicates).

    Raises:
        sqlalchemy.exc.SQLAlchemyError / OSError: PostgreSQL refused or is unreachable.
    """
    if not records:
        return 0
    with producer_traces([r.topic for r in records]) as carriers:
        headers = [
            json.dumps({**r.headers, **carrier})
            for r, carrier in zip(records, carriers, strict=True)
        ]
        result = await conn.execute(
            _ENQUEUE,
            {
                "topic": [r.topic for r in records],
                "key": [r.key for r in records],
                "value": [r.value for r in records],
                "headers": headers,
                "event_id": [r.event_id for r in records],
                "channel": CHANNEL,
            },
        )
    return int(result.one().stored)


def _headers(value: Any) -> dict[str, str]:
    raw = json.loads(value) if isinstance(value, str) else (value or {})
    return {str(k): str(v) for k, v in raw.items()}


async def fetch_pending(conn: AsyncConnection, limit: int) -> list[PendingRecord]:
    """Up to ``limit`` records not relayed yet, oldest ``id`` first."""
    return _pending((await conn.execute(_PENDING, {"limit": limit})).all())


async def mark_and_fetch(
    conn: AsyncConnection, ids: Sequence[int], limit: int
) -> list[PendingRecord]:
    """Mark the rows ``ids`` relayed and read the next ``limit`` pending ones, in one
    statement (one round trip per relayed batch instead of two).

    The statement is atomic: on ``conn`` in autocommit the marks are committed when
    it returns, and if it fails nothing is marked (the batch is sent again: at least
    once, as after a crash).
    """
    rows = (await conn.execute(_MARK_AND_NEXT, {"ids": list(ids), "limit": limit})).all()
    return _pending(rows)


def _pending(rows: Sequence[Any]) -> list[PendingRecord]:
    return [
        PendingRecord(
            id=row.id,
            record=Record(row.topic, row.key, bytes(row.value), _headers(row.headers)),
            created_at=row.created_at,
        )
        for row in rows
    ]


async def mark_relayed(conn: AsyncConnection, ids: Sequence[int]) -> None:
    """Mark the rows ``ids`` as relayed (the broker acknowledged them)."""
    await conn.execute(_MARK, {"ids": list(ids)})


async def prune(conn: AsyncConnection, retention_seconds: float, limit: int = 10_000) -> int:
    """Delete up to ``limit`` rows relayed more than ``retention_seconds`` ago; how many."""
    result = await conn.execute(_PRUNE, {"seconds": retention_seconds, "limit": limit})
    return int(result.rowcount)


async def stats(conn: AsyncConnection) -> OutboxStats:
    """How many rows wait to be relayed and how old the oldest one is."""
    row = (await conn.execute(_STATS)).one()
    return OutboxStats(pending=int(row.pending), oldest_age_seconds=float(row.oldest))


async def try_lock(conn: AsyncConnection) -> bool:
    """Try to take the relay's session-level advisory lock on ``conn`` (never waits).

    The lock lives as long as the database session: the relay holding it is the
    only one producing, and a relay whose connection dies loses it to a standby.
    """
    result = await conn.execute(
        text("SELECT pg_try_advisory_lock(hashtext(:name))"), {"name": LOCK_NAME}
    )
    return bool(result.scalar_one())
