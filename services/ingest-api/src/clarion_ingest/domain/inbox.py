"""Inbox queries and results as plain values (filters, pages, count shaping)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from clarion_contracts.v1 import DeliveryStatus, Notification
from clarion_ingest.domain.cursor import Cursor
from clarion_ingest.domain.models import CategoryCounts, CountsOut


@dataclass(frozen=True)
class InboxFilter:
    """Which notifications a listing shows.

    Attributes:
        unread: ``True`` only unread, ``False`` only read, ``None`` both.
        category: only this category (exact match), or any.
        type: only this domain event type (exact match), or any.
    """

    unread: bool | None = None
    category: str | None = None
    type: str | None = None


@dataclass(frozen=True)
class PageRequest:
    """One page of a listing: rows strictly after ``after`` (newest first), at most ``limit``."""

    limit: int
    after: Cursor | None = None


def clamp_limit(requested: int | None, default: int, maximum: int) -> int:
    """The page size to use: ``requested`` bounded to ``1..maximum``, else ``default``."""
    if requested is None:
        return min(default, maximum)
    return max(1, min(requested, maximum))


class Change(StrEnum):
    """Outcome of a user's change to one notification."""

    CHANGED = "changed"
    UNCHANGED = "unchanged"
    MISSING = "missing"


def counts_from_rows(rows: list[tuple[str, int, int]]) -> CountsOut:
    """Shape ``(category, total, unread)`` rows into :class:`CountsOut`."""
    categories = {
        category: CategoryCounts(unread=unread, total=total) for category, total, unread in rows
    }
    return CountsOut(
        unread=sum(c.unread for c in categories.values()),
        total=sum(c.total for c in categories.values()),
        categories=categories,
    )


def newest_versions(notifications: Iterable[Notification]) -> list[Notification]:
    """The newest version of each notification in a consumer batch, sorted by id.

    One upsert statement cannot touch the same row twice, and an older version in
    the same batch could never win anyway (versions only grow), so only the
    highest ``version`` per ``notification_id`` is kept; on a tie the later record
    wins, as it would when applied one by one. Sorting by id makes concurrent
    batches lock rows in the same order.
    """
    newest: dict[str, Notification] = {}
    for n in notifications:
        held = newest.get(n.notification_id)
        if held is None or n.version >= held.version:
            newest[n.notification_id] = n
    return [newest[k] for k in sorted(newest)]


@dataclass(frozen=True)
class DeliveryPatch:
    """The latest status per channel of one inbox row, merged into its ``deliveries``.

    Attributes:
        notification_id: the inbox row.
        recipient_id: its owner (a status naming another user changes nothing).
        channels: channel value (``push``, ``email``, ``in_app``) -> status value.
    """

    notification_id: str
    recipient_id: str
    channels: dict[str, str]


def delivery_patches(statuses: Iterable[DeliveryStatus]) -> list[DeliveryPatch]:
    """Fold a batch of delivery statuses into one patch per (notification, recipient).

    Statuses are applied in record order, so a later status of a channel replaces an
    earlier one exactly as one update per record would. Patches are sorted by
    notification id (stable lock order).
    """
    merged: dict[tuple[str, str], dict[str, str]] = {}
    for s in statuses:
        merged.setdefault((s.notification_id, s.recipient_id), {})[s.channel.value] = s.status.value
    return [DeliveryPatch(nid, uid, channels) for (nid, uid), channels in sorted(merged.items())]
