"""Turning consumed contracts into entries of a user's stream (pure).

A ``Notification`` version becomes ``notification.created`` (version 1) or
``notification.updated``; an ``InboxEvent`` becomes ``notification.read`` /
``.unread`` / ``.deleted`` / ``notifications.all_read``. The dedup identity is
``(notification_id, version)`` or the inbox ``event_id``; the history script
(:mod:`clarion_gateway.adapters.history`) applies it atomically.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from urllib.parse import quote

from clarion_contracts.v1 import InboxEvent, Notification
from clarion_gateway.protocol import (
    KIND_INBOX,
    KIND_NOTIFICATION,
    NOTIFICATION_CREATED,
    NOTIFICATION_UPDATED,
    FrameTemplate,
    inbox_template,
    notification_template,
)


@dataclass(frozen=True, slots=True)
class StreamEntry:
    """One message to append to ``user_id``'s stream.

    Attributes:
        kind: ``n`` (notification version) or ``i`` (inbox event).
        dedup_id: ``notification_id`` (kind n) or ``event_id`` (kind i).
        header_id: ``dedup_id`` percent-encoded so it never contains a space or newline
            (the wire header is space separated); ``-`` for inbox events.
        version: the notification version; 0 for inbox events.
        action: ``created``/``updated`` or the inbox action.
        notification_ids: ids an inbox event refers to.
        unread_count: ingest-api's count after an inbox event; ``None`` for notifications.
        ts_ms: ``updated_at`` / ``occurred_at`` in Unix milliseconds.
        template: the server frame around its offset and unread count.
    """

    user_id: str
    kind: str
    dedup_id: str
    header_id: str
    version: int
    action: str
    notification_ids: tuple[str, ...]
    unread_count: int | None
    ts_ms: int
    template: FrameTemplate


def to_ms(value: datetime) -> int:
    """An aware datetime as Unix milliseconds."""
    return int(value.timestamp() * 1000)


def entry_from_notification(notification: Notification) -> StreamEntry:
    """The stream entry of one notification version (``created`` when ``version == 1``)."""
    created = notification.is_created
    frame_type = NOTIFICATION_CREATED if created else NOTIFICATION_UPDATED
    return StreamEntry(
        user_id=notification.recipient_id,
        kind=KIND_NOTIFICATION,
        dedup_id=notification.notification_id,
        header_id=quote(notification.notification_id, safe="") or "-",
        version=notification.version,
        action="created" if created else "updated",
        notification_ids=(notification.notification_id,),
        unread_count=None,
        ts_ms=to_ms(notification.updated_at),
        template=notification_template(frame_type, notification.model_dump_json()),
    )


def entry_from_inbox_event(event: InboxEvent) -> StreamEntry:
    """The stream entry of one read-state change, carrying ingest-api's unread count."""
    return StreamEntry(
        user_id=event.recipient_id,
        kind=KIND_INBOX,
        dedup_id=str(event.event_id),
        header_id="-",
        version=0,
        action=event.action.value,
        notification_ids=tuple(event.notification_ids),
        unread_count=event.unread_count,
        ts_ms=to_ms(event.occurred_at),
        template=inbox_template(
            event.action.value, list(event.notification_ids), event.occurred_at.isoformat()
        ),
    )
