"""Contract message builders used by the analytics tests (import: analytics_messages)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from clarion_contracts.base import Actor, Channel, EventObject
from clarion_contracts.v1 import (
    DeliveryState,
    DeliveryStatus,
    InboxAction,
    InboxEvent,
    Notification,
    PresenceEvent,
    PresenceStatus,
)

T0 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def make_notification(
    nid: str,
    *,
    version: int = 1,
    type_: str = "repo.starred",
    created_at: datetime = T0,
    channels: tuple[Channel, ...] = (Channel.IN_APP,),
    occurred_before_ms: float = 100.0,
    ingest_before_ms: float | None = None,
    updated_after: timedelta = timedelta(seconds=30),
    recipient: str = "alice",
) -> Notification:
    """A notification version; version N>1 is emitted ``updated_after * (N-1)`` after creation."""
    updated_at = created_at + updated_after * (version - 1)
    occurred = updated_at - timedelta(milliseconds=occurred_before_ms)
    return Notification(
        notification_id=nid,
        version=version,
        recipient_id=recipient,
        type=type_,
        category="social",
        group_key=f"{recipient}|{type_}|repo:1|0",
        object=EventObject(type="repo", id="1", title="clarion"),
        actors=[Actor(id="bob", name="Bob")],
        actor_count=version,
        event_ids=[uuid.uuid4()],
        title="Bob starred clarion",
        body="Bob starred clarion",
        body_html="<p>Bob starred clarion</p>",
        channels=list(channels),
        created_at=created_at,
        updated_at=updated_at,
        first_occurred_at=created_at - timedelta(milliseconds=occurred_before_ms),
        last_occurred_at=occurred,
        ingested_at=(
            None
            if ingest_before_ms is None
            else updated_at - timedelta(milliseconds=ingest_before_ms)
        ),
    )


def make_status(
    nid: str,
    channel: Channel,
    state: DeliveryState,
    *,
    at: datetime,
    version: int = 1,
    reason: str | None = None,
    status_id: str | None = None,
    type_: str | None = None,
    notification_created_at: datetime | None = None,
) -> DeliveryStatus:
    """A delivery status report."""
    return DeliveryStatus(
        status_id=status_id or f"{nid}:{version}:{channel.value}:{state.value}:{uuid.uuid4().hex}",
        notification_id=nid,
        version=version,
        recipient_id="alice",
        channel=channel,
        status=state,
        type=type_,
        reason=reason,
        notification_created_at=notification_created_at,
        occurred_at=at,
    )


def make_inbox(action: InboxAction, ids: list[str], *, at: datetime = T0, **kw: Any) -> InboxEvent:
    """An inbox event of user alice."""
    return InboxEvent(
        event_id=uuid.uuid4(),
        recipient_id="alice",
        action=action,
        notification_ids=ids,
        unread_count=0,
        occurred_at=at,
        **kw,
    )


def make_presence(
    user: str, status: PresenceStatus, *, at: datetime, instance: str = "gw-1"
) -> PresenceEvent:
    """A presence event reported by gateway ``instance``."""
    return PresenceEvent(
        event_id=uuid.uuid4(),
        user_id=user,
        status=status,
        sessions=1 if status is PresenceStatus.ONLINE else 0,
        instance_id=instance,
        occurred_at=at,
    )
