"""Inbox queries and results as plain values (filters, pages, count shaping)."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

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
