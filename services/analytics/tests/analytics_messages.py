"""Contract message builders used by the analytics tests (import: analytics_messages)."""

from __future__ import annotations

import math
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


DEMO_TYPES = (
    ("repo.starred", 0.35),
    ("issue.commented", 0.25),
    ("pull_request.opened", 0.15),
    ("issue.opened", 0.15),
    ("repo.forked", 0.10),
)


def demo_dataset(
    now: datetime, *, seed: int = 7, notifications: int = 400, hours: float = 3.0
) -> list[tuple[str, str, Any]]:
    """A plausible few hours of traffic as ``(topic kind, key, message)`` in publish order.

    Kinds: ``notification``, ``status``, ``inbox``, ``presence``. Latencies are
    log-normal (in-app ~40 ms, push ~600 ms, email ~3 s median); some pushes and
    emails fail with realistic reasons. Deterministic for a given ``seed``.
    """
    import random

    rng = random.Random(seed)
    out: list[tuple[str, str, Any]] = []
    span = hours * 3600.0
    types = [t for t, _ in DEMO_TYPES]
    weights = [w for _, w in DEMO_TYPES]
    ms = timedelta(milliseconds=1)
    for i in range(notifications):
        created = now - timedelta(seconds=span * (1 - rng.random()) + 300)
        type_ = rng.choices(types, weights)[0]
        channels = [Channel.IN_APP]
        if rng.random() < 0.45:
            channels.append(Channel.PUSH)
        if rng.random() < 0.3:
            channels.append(Channel.EMAIL)
        nid = f"demo-{i}"
        user = f"user-{rng.randrange(80)}"
        versions = 1 + (rng.randrange(1, 4) if rng.random() < 0.25 else 0)
        for v in range(1, versions + 1):
            n = make_notification(
                nid,
                version=v,
                type_=type_,
                created_at=created,
                channels=tuple(channels),
                occurred_before_ms=rng.lognormvariate(5.0, 0.6),
                ingest_before_ms=rng.lognormvariate(3.0, 0.5),
                updated_after=timedelta(seconds=rng.randrange(20, 300)),
                recipient=user,
            )
            out.append(("notification", user, n))
        delivered_at: datetime | None = None
        for channel in channels:
            median, failure = {
                Channel.IN_APP: (40.0, 0.0),
                Channel.PUSH: (600.0, 0.12),
                Channel.EMAIL: (3000.0, 0.15),
            }[channel]
            at = created + ms * rng.lognormvariate(math.log(median), 0.7)
            if channel is Channel.IN_APP and rng.random() < 0.15:
                continue  # user offline: no live delivery
            if rng.random() < failure:
                reasons = (
                    ("gone", "rate_limited", "timeout")
                    if channel is Channel.PUSH
                    else ("smtp_550", "smtp_421", "mailbox_full")
                )
                state = DeliveryState.BOUNCED if rng.random() < 0.2 else DeliveryState.FAILED
                out.append(
                    (
                        "status",
                        nid,
                        make_status(nid, channel, state, at=at, reason=rng.choice(reasons)),
                    )
                )
                continue
            out.append(("status", nid, make_status(nid, channel, DeliveryState.DELIVERED, at=at)))
            delivered_at = delivered_at or at
            if channel is not Channel.IN_APP and rng.random() < 0.15:
                click = at + timedelta(seconds=rng.randrange(5, 600))
                out.append(
                    ("status", nid, make_status(nid, channel, DeliveryState.CLICKED, at=click))
                )
        if delivered_at is not None and rng.random() < 0.5:
            read_at = min(now, delivered_at + timedelta(seconds=rng.randrange(10, 1800)))
            out.append(("inbox", user, make_inbox(InboxAction.READ, [nid], at=read_at)))
    # Presence: users come and go over the period.
    for u in range(60):
        t = now - timedelta(seconds=span * rng.random())
        while t < now:
            out.append(
                ("presence", f"user-{u}", make_presence(f"user-{u}", PresenceStatus.ONLINE, at=t))
            )
            t += timedelta(seconds=rng.randrange(120, 2400))
            if t >= now:
                break
            out.append(
                ("presence", f"user-{u}", make_presence(f"user-{u}", PresenceStatus.OFFLINE, at=t))
            )
            t += timedelta(seconds=rng.randrange(300, 3600))
    return out
