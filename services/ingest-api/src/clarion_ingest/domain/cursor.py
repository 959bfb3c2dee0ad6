"""Opaque cursors for keyset pagination of the inbox over ``(updated_at, id)``.

The inbox is ordered newest first by ``(updated_at DESC, notification_id DESC)``;
a cursor names the last row of a page, and the next page holds the rows strictly
after it in that order. The encoding (URL-safe base64 of a small JSON array) is
an implementation detail: clients must treat the cursor as opaque.
"""

from __future__ import annotations

import base64
import binascii
import json
from dataclasses import dataclass
from datetime import UTC, datetime

from clarion_contracts.text import TextPolicyError, check_text

MAX_CURSOR_LENGTH = 1024

EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
"""Earliest ``updated_at`` a cursor may name (no notification is older than the epoch)."""
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
"""Latest ``updated_at`` a cursor may name: a day inside :class:`datetime`'s range, so
converting any offset to UTC cannot overflow."""


class InvalidCursorError(ValueError):
    """The cursor was not produced by :func:`encode_cursor` (or was altered)."""


class CursorRangeError(InvalidCursorError):
    """The cursor is well-formed but its time is outside ``[EARLIEST, LATEST]``."""


@dataclass(frozen=True, order=True)
class Cursor:
    """A position in the inbox: the ``updated_at`` (timezone-aware) and id of a row."""

    updated_at: datetime
    notification_id: str


def encode_cursor(cursor: Cursor) -> str:
    """Return the opaque text form of ``cursor`` (URL-safe base64, no padding).

    Raises:
        ValueError: ``cursor.updated_at`` is naive.
    """
    if cursor.updated_at.tzinfo is None:
        raise ValueError("cursor time must be timezone-aware")
    raw = json.dumps(
        [cursor.updated_at.isoformat(), cursor.notification_id], separators=(",", ":")
    ).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(text: str) -> Cursor:
    """Parse a cursor made by :func:`encode_cursor`.

    Raises:
        InvalidCursorError: the text is too long, not base64, not JSON, or not a
            ``[aware ISO 8601 time, non-empty id]`` pair, or the id holds U+0000,
            a noncharacter or a lone surrogate.
        CursorRangeError: the time is outside ``[EARLIEST, LATEST]`` (in UTC).
    """
    if not text or len(text) > MAX_CURSOR_LENGTH:
        raise InvalidCursorError("cursor is empty or too long")
    try:
        raw = base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
        value = json.loads(raw)
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursorError("cursor is not valid") from exc
    if (
        not isinstance(value, list)
        or len(value) != 2
        or not isinstance(value[0], str)
        or not isinstance(value[1], str)
        or not value[1]
    ):
        raise InvalidCursorError("cursor is not valid")
    try:
        updated_at = datetime.fromisoformat(value[0])
    except ValueError as exc:
        raise InvalidCursorError("cursor is not valid") from exc
    if updated_at.tzinfo is None:
        raise InvalidCursorError("cursor is not valid")
    try:
        check_text(value[1])
    except TextPolicyError as exc:
        raise InvalidCursorError("cursor is not valid") from exc
    try:
        in_utc = updated_at.astimezone(UTC)
    except OverflowError as exc:
        raise CursorRangeError("cursor time is out of range") from exc
    if not EARLIEST <= in_utc <= LATEST:
        raise CursorRangeError("cursor time is out of range")
    return Cursor(updated_at=updated_at, notification_id=value[1])
