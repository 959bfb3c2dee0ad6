"""PostgreSQL access of ingest-api: the inbox read model, preferences, profiles, subscriptions.

Every user-facing query is scoped by ``user_id`` in SQL, so a notification of
another user is indistinguishable from a missing one. Writes that must reach
Kafka run inside a caller's transaction (``api.common.transaction``) that also
stores their outbox records, so both commit or neither does.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from typing import Any

from sqlalchemy import Row, and_, func, select, text, tuple_, update
from sqlalchemy.dialects.postgresql import insert
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion_contracts.v1 import DeliveryStatus, Notification, Preferences, UserProfile
from clarion_ingest.adapters.tables import (
    SCHEMA,
    InboxRow,
    PreferencesRow,
    ProfileRow,
    PushSubscriptionRow,
)
from clarion_ingest.domain.cursor import Cursor
from clarion_ingest.domain.inbox import (
    Change,
    DeliveryPatch,
    InboxFilter,
    PageRequest,
    counts_from_rows,
    delivery_patches,
)
from clarion_ingest.domain.models import CountsOut, NotificationOut

inbox = InboxRow.__table__  # type: ignore[attr-defined]
preferences = PreferencesRow.__table__  # type: ignore[attr-defined]
profiles = ProfileRow.__table__  # type: ignore[attr-defined]
subscriptions = PushSubscriptionRow.__table__  # type: ignore[attr-defined]


def _live(user_id: str) -> Any:
    return and_(inbox.c.user_id == user_id, inbox.c.deleted_at.is_(None))


def row_to_notification(row: Row[Any]) -> NotificationOut:
    """Convert an ``ingest.inbox`` row into the API's :class:`NotificationOut`."""
    m = row._mapping
    deliveries = {str(k): str(v) for k, v in (m["deliveries"] or {}).items()}
    return NotificationOut(
        id=m["notification_id"],
        version=m["version"],
        type=m["type"],
        category=m["category"],
        title=m["title"],
        body=m["body"],
        body_html=m["body_html"],
        url=m["url"],
        priority=m["priority"],
        actors=m["actors"],
        actor_count=m["actor_count"],
        object=m["object"],
        data=m["data"],
        read=m["read_at"] is not None,
        read_at=m["read_at"],
        created_at=m["created_at"],
        updated_at=m["updated_at"],
        deliveries=deliveries,
    )


_NOTIFICATION_COLUMNS: tuple[tuple[str, str], ...] = (
    ("notification_id", "text"),
    ("user_id", "text"),
    ("version", "integer"),
    ("type", "text"),
    ("category", "text"),
    ("group_key", "text"),
    ("title", "text"),
    ("body", "text"),
    ("body_html", "text"),
    ("url", "text"),
    ("priority", "text"),
    ("actors", "jsonb"),
    ("actor_count", "integer"),
    ("object", "jsonb"),
    ("data", "jsonb"),
    ("channels", "jsonb"),
    ("created_at", "timestamptz"),
    ("updated_at", "timestamptz"),
)
_KEPT_ON_UPDATE = frozenset({"notification_id", "user_id", "created_at"})


def _upsert_notifications_sql() -> Any:
    # One array parameter per column, unnested into rows: the statement text is the
    # same for any batch size, so asyncpg prepares it once per connection, and the
    # parameter count stays at 18 (a VALUES list would need 18 per row). JSON columns
    # travel as text and are cast per row.
    names = [c for c, _ in _NOTIFICATION_COLUMNS]
    arrays = ", ".join(
        f"CAST(:{c} AS {'text' if t == 'jsonb' else t}[])" for c, t in _NOTIFICATION_COLUMNS
    )
    select_list = ", ".join(
        f"CAST(v.{c} AS jsonb)" if t == "jsonb" else f"v.{c}" for c, t in _NOTIFICATION_COLUMNS
    )
    updates = ", ".join(f"{c} = excluded.{c}" for c in names if c not in _KEPT_ON_UPDATE)
    return text(
        f"INSERT INTO {SCHEMA}.inbox AS i ({', '.join(names)}) "
        f"SELECT {select_list} FROM unnest({arrays}) AS v({', '.join(names)}) "
        f"ON CONFLICT (notification_id) DO UPDATE SET {updates}, read_at = NULL "
        "WHERE excluded.version > i.version "
        "RETURNING i.notification_id, i.user_id"
    )


_UPSERT_NOTIFICATIONS = _upsert_notifications_sql()

_RECORD_DELIVERIES = text(
    f"UPDATE {SCHEMA}.inbox AS i SET deliveries = i.deliveries || CAST(d.patch AS jsonb) "
    "FROM unnest(CAST(:notification_id AS text[]), CAST(:user_id AS text[]), "
    "CAST(:patch AS text[])) AS d(notification_id, user_id, patch) "
    "WHERE i.notification_id = d.notification_id AND i.user_id = d.user_id "
    "RETURNING i.notification_id"
)


def _json(value: Any) -> str:
    return json.dumps(value, separators=(",", ":"), ensure_ascii=False)


async def upsert_notifications(
    conn: AsyncConnection, batch: Sequence[Notification]
) -> list[tuple[str, str]]:
    """Insert or update the inbox rows of ``batch`` where its version is newer, in ONE statement.

    ``INSERT ... SELECT FROM unnest(...) ON CONFLICT (notification_id) DO UPDATE ...
    WHERE excluded.version > inbox.version``: a stale or repeated version never
    overwrites a newer one, even with concurrent or redelivered batches. A newer
    version becomes unread again (``read_at`` cleared); ``deleted_at`` is never
    touched, so a deleted notification stays deleted; the owner never changes.

    Args:
        conn: a connection inside the caller's transaction.
        batch: at most one version per ``notification_id``
            (:func:`clarion_ingest.domain.inbox.newest_versions`); PostgreSQL refuses
            to update one row twice in a statement (SQLSTATE 21000).

    Returns:
        ``(notification_id, owner user_id)`` of every row inserted or updated; stale or
        repeated versions are absent.
    """
    if not batch:
        return []
    columns: dict[str, list[Any]] = {c: [] for c, _ in _NOTIFICATION_COLUMNS}
    for n in batch:
        doc = n.model_dump(mode="json", include={"url", "actors", "object", "data"})
        columns["notification_id"].append(n.notification_id)
        columns["user_id"].append(n.recipient_id)
        columns["version"].append(n.version)
        columns["type"].append(n.type)
        columns["category"].append(n.category)
        columns["group_key"].append(n.group_key)
        columns["title"].append(n.title)
        columns["body"].append(n.body)
        columns["body_html"].append(n.body_html)
        columns["url"].append(doc["url"])
        columns["priority"].append(n.priority.value)
        columns["actors"].append(_json(doc["actors"]))
        columns["actor_count"].append(n.actor_count)
        columns["object"].append(_json(doc["object"]))
        columns["data"].append(_json(doc["data"]))
        columns["channels"].append(_json([c.value for c in n.channels]))
        columns["created_at"].append(n.created_at)
        columns["updated_at"].append(n.updated_at)
    result = await conn.execute(_UPSERT_NOTIFICATIONS, columns)
    return [(str(nid), str(uid)) for nid, uid in result.all()]


async def upsert_notification(conn: AsyncConnection, n: Notification) -> bool:
    """Upsert one version (see :func:`upsert_notifications`).

    Returns:
        True when a row was inserted or updated, False for a stale or repeated version.
    """
    return bool(await upsert_notifications(conn, [n]))


async def record_deliveries(conn: AsyncConnection, patches: Sequence[DeliveryPatch]) -> int:
    """Merge each patch's channel statuses into its row's ``deliveries``, in ONE statement.

    Rows that do not exist (or belong to another user) are left alone.

    Args:
        conn: a connection inside the caller's transaction.
        patches: at most one per row (:func:`clarion_ingest.domain.inbox.delivery_patches`).

    Returns:
        How many rows were updated.
    """
    if not patches:
        return 0
    params = {
        "notification_id": [p.notification_id for p in patches],
        "user_id": [p.recipient_id for p in patches],
        "patch": [_json(p.channels) for p in patches],
    }
    return len((await conn.execute(_RECORD_DELIVERIES, params)).all())


async def record_delivery(conn: AsyncConnection, status: DeliveryStatus) -> bool:
    """Record the latest delivery status of a channel on the inbox row (if the row exists).

    Returns:
        True when a row was updated.
    """
    return bool(await record_deliveries(conn, delivery_patches([status])))


async def list_notifications(
    conn: AsyncConnection, user_id: str, flt: InboxFilter, page: PageRequest
) -> tuple[list[NotificationOut], Cursor | None]:
    """One page of a user's live notifications, newest first by ``(updated_at, id)``.

    Returns:
        The rows, and the cursor of the last row when another page follows (else None).
    """
    stmt = select(inbox).where(_live(user_id))
    if flt.unread is True:
        stmt = stmt.where(inbox.c.read_at.is_(None))
    elif flt.unread is False:
        stmt = stmt.where(inbox.c.read_at.is_not(None))
    if flt.category is not None:
        stmt = stmt.where(inbox.c.category == flt.category)
    if flt.type is not None:
        stmt = stmt.where(inbox.c.type == flt.type)
    if page.after is not None:
        stmt = stmt.where(
            tuple_(inbox.c.updated_at, inbox.c.notification_id)
            < tuple_(page.after.updated_at, page.after.notification_id)
        )
    stmt = stmt.order_by(inbox.c.updated_at.desc(), inbox.c.notification_id.desc()).limit(
        page.limit + 1
    )
    rows = (await conn.execute(stmt)).all()
    items = [row_to_notification(r) for r in rows[: page.limit]]
    next_cursor = None
    if len(rows) > page.limit and items:
        last = items[-1]
        next_cursor = Cursor(updated_at=last.updated_at, notification_id=last.id)
    return items, next_cursor


async def get_notification(
    conn: AsyncConnection, user_id: str, notification_id: str
) -> NotificationOut | None:
    """The live notification ``notification_id`` of ``user_id``, or None (missing or not theirs)."""
    stmt = select(inbox).where(_live(user_id), inbox.c.notification_id == notification_id)
    row = (await conn.execute(stmt)).first()
    return row_to_notification(row) if row is not None else None


async def count(conn: AsyncConnection, user_id: str) -> CountsOut:
    """Unread and total live notifications of a user, overall and per category."""
    stmt = (
        select(
            inbox.c.category,
            func.count(),
            func.count().filter(inbox.c.read_at.is_(None)),
        )
        .where(_live(user_id))
        .group_by(inbox.c.category)
    )
    rows = [(str(c), int(t), int(u)) for c, t, u in (await conn.execute(stmt)).all()]
    return counts_from_rows(rows)


async def _exists(conn: AsyncConnection, user_id: str, notification_id: str) -> bool:
    stmt = select(inbox.c.notification_id).where(
        _live(user_id), inbox.c.notification_id == notification_id
    )
    return (await conn.execute(stmt)).first() is not None


async def set_read(
    conn: AsyncConnection, user_id: str, notification_id: str, read: bool, now: datetime
) -> Change:
    """Mark one of the user's notifications read (``read=True``) or unread.

    Returns:
        CHANGED, UNCHANGED (already in that state) or MISSING (absent, deleted or not theirs).
    """
    state = inbox.c.read_at.is_(None) if read else inbox.c.read_at.is_not(None)
    stmt = (
        update(inbox)
        .where(_live(user_id), inbox.c.notification_id == notification_id, state)
        .values(read_at=now if read else None)
        .returning(inbox.c.notification_id)
    )
    if (await conn.execute(stmt)).first() is not None:
        return Change.CHANGED
    return Change.UNCHANGED if await _exists(conn, user_id, notification_id) else Change.MISSING


async def read_all(conn: AsyncConnection, user_id: str, now: datetime) -> int:
    """Mark every live unread notification of the user read; returns how many changed."""
    stmt = (
        update(inbox)
        .where(_live(user_id), inbox.c.read_at.is_(None))
        .values(read_at=now)
        .returning(inbox.c.notification_id)
    )
    return len((await conn.execute(stmt)).all())


async def delete(
    conn: AsyncConnection, user_id: str, ids: Sequence[str], now: datetime
) -> list[str]:
    """Delete (hide for good) the user's live notifications among ``ids``.

    Ids that are missing, already deleted or another user's are skipped.

    Returns:
        The ids actually deleted.
    """
    if not ids:
        return []
    stmt = (
        update(inbox)
        .where(_live(user_id), inbox.c.notification_id.in_(list(ids)))
        .values(deleted_at=now)
        .returning(inbox.c.notification_id)
    )
    return [str(r[0]) for r in (await conn.execute(stmt)).all()]


async def get_preferences(conn: AsyncConnection, user_id: str) -> Preferences | None:
    """The user's stored preferences, or None if never saved."""
    stmt = select(preferences.c.document).where(preferences.c.user_id == user_id)
    row = (await conn.execute(stmt)).first()
    return Preferences.model_validate(row[0]) if row is not None else None


async def put_preferences(conn: AsyncConnection, prefs: Preferences) -> None:
    """Insert or replace the user's preferences document."""
    doc = prefs.model_dump(mode="json")
    stmt = insert(preferences).values(
        user_id=prefs.user_id, document=doc, updated_at=prefs.updated_at
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=[preferences.c.user_id],
        set_={"document": stmt.excluded.document, "updated_at": stmt.excluded.updated_at},
    )
    await conn.execute(stmt)


_PUT_PROFILES = text(
    f"INSERT INTO {SCHEMA}.profiles (user_id, document, updated_at)"
    " SELECT v.user_id, CAST(v.document AS jsonb), v.updated_at"
    " FROM unnest(CAST(:user_id AS text[]), CAST(:document AS text[]),"
    " CAST(:updated_at AS timestamptz[])) AS v(user_id, document, updated_at)"
    " ON CONFLICT (user_id) DO UPDATE"
    " SET document = excluded.document, updated_at = excluded.updated_at"
)


async def put_profiles(conn: AsyncConnection, batch: Sequence[UserProfile]) -> None:
    """Insert or replace the profiles of ``batch`` in one statement (user ids distinct).

    The rows travel as three arrays, so the statement text, and thus asyncpg's
    prepared statement, is the same whatever the batch size.

    Raises:
        sqlalchemy.exc.DBAPIError: two profiles share a user id (PostgreSQL refuses
            to change a row twice in one ``ON CONFLICT DO UPDATE``), or the database fails.
    """
    if not batch:
        return
    await conn.execute(
        _PUT_PROFILES,
        {
            "user_id": [p.user_id for p in batch],
            "document": [p.model_dump_json() for p in batch],
            "updated_at": [p.updated_at for p in batch],
        },
    )


async def put_profile(conn: AsyncConnection, profile: UserProfile) -> None:
    """Insert or replace a user profile."""
    await put_profiles(conn, [profile])


async def get_profile(conn: AsyncConnection, user_id: str) -> UserProfile | None:
    """The stored profile of a user, or None."""
    stmt = select(profiles.c.document).where(profiles.c.user_id == user_id)
    row = (await conn.execute(stmt)).first()
    return UserProfile.model_validate(row[0]) if row is not None else None


async def put_subscription(
    conn: AsyncConnection,
    *,
    subscription_id: str,
    user_id: str,
    endpoint: str,
    p256dh: str,
    auth: str,
    user_agent: str | None,
    now: datetime,
) -> None:
    """Insert or replace a push subscription (an endpoint moves to the user who registers it)."""
    values = {
        "subscription_id": subscription_id,
        "user_id": user_id,
        "endpoint": endpoint,
        "p256dh": p256dh,
        "auth": auth,
        "user_agent": user_agent,
        "active": True,
        "updated_at": now,
    }
    stmt = insert(subscriptions).values(**values)
    stmt = stmt.on_conflict_do_update(
        index_elements=[subscriptions.c.subscription_id],
        set_={k: stmt.excluded[k] for k in values if k != "subscription_id"},
    )
    await conn.execute(stmt)


async def deactivate_subscription(
    conn: AsyncConnection, user_id: str, subscription_id: str, now: datetime
) -> dict[str, Any] | None:
    """Mark the user's active subscription inactive.

    Returns:
        The subscription's columns, or None if the user has no such active subscription.
    """
    stmt = (
        update(subscriptions)
        .where(
            subscriptions.c.user_id == user_id,
            subscriptions.c.subscription_id == subscription_id,
            subscriptions.c.active.is_(True),
        )
        .values(active=False, updated_at=now)
        .returning(*subscriptions.c)
    )
    row = (await conn.execute(stmt)).first()
    return dict(row._mapping) if row is not None else None
