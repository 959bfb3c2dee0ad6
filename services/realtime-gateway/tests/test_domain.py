"""Unit tests of the pure domain modules: stream entries, presence debouncing, delivery status."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime, timedelta

from clarion_contracts.base import Actor, Channel, EventObject
from clarion_contracts.v1 import (
    DeliveryState,
    InboxAction,
    InboxEvent,
    Notification,
    PresenceStatus,
)
from clarion_gateway.domain.delivery import delivered_status, status_id
from clarion_gateway.domain.entries import entry_from_inbox_event, entry_from_notification
from clarion_gateway.domain.presence import PresenceLedger
from clarion_gateway.protocol import Offset, WireMessage

T0 = datetime(2026, 3, 1, 12, 0, tzinfo=UTC)


def notification(version: int = 1, nid: str = "n 1/x") -> Notification:
    return Notification(
        notification_id=nid,
        version=version,
        recipient_id="alice",
        type="post.liked",
        category="social",
        group_key="alice|post.liked|post:1|0",
        object=EventObject(type="post", id="1"),
        actors=[Actor(id="bob", name="<script>Bob</script>")],
        actor_count=1,
        event_ids=[uuid.uuid4()],
        title="Bob liked your post",
        body="Bob liked your post",
        body_html="Bob liked your post",
        channels=[Channel.IN_APP],
        created_at=T0,
        updated_at=T0 + timedelta(seconds=version),
        first_occurred_at=T0,
        last_occurred_at=T0,
    )


def test_first_version_is_created_later_versions_updated() -> None:
    created = entry_from_notification(notification(1))
    updated = entry_from_notification(notification(2))
    assert (created.action, created.version, created.kind) == ("created", 1, "n")
    assert updated.action == "updated"
    frame = json.loads(updated.template.render(Offset("e", 3), 1))
    assert frame["type"] == "notification.updated"
    assert frame["notification"]["actors"][0]["name"] == "<script>Bob</script>"
    assert updated.ts_ms == int((T0 + timedelta(seconds=2)).timestamp() * 1000)


def test_notification_frame_is_the_contract_serialised_once() -> None:
    # The frame embeds pydantic-core's JSON of the contract; it must hold exactly
    # what model_dump(mode="json") holds, untrusted and non-ASCII text included.
    n = notification(2).model_copy(
        update={"title": 'Zoë «quoted» "x" \\ \u2028 \U0001f600 \t\x01', "data": {"k": [1.5, None]}}
    )
    frame = json.loads(entry_from_notification(n).template.render(Offset("e", 7), 2))
    assert frame["notification"] == n.model_dump(mode="json")
    assert Notification.model_validate(frame["notification"]) == n


def test_notification_id_is_header_safe() -> None:
    entry = entry_from_notification(notification(nid="a b\nc"))
    assert entry.dedup_id == "a b\nc"
    assert " " not in entry.header_id
    assert "\n" not in entry.header_id


def test_inbox_event_entry_carries_the_authoritative_count() -> None:
    event = InboxEvent(
        event_id=uuid.uuid4(),
        recipient_id="alice",
        action=InboxAction.ALL_READ,
        unread_count=0,
        occurred_at=T0,
    )
    entry = entry_from_inbox_event(event)
    assert (entry.kind, entry.dedup_id, entry.unread_count) == ("i", str(event.event_id), 0)
    frame = json.loads(entry.template.render(Offset("e", 1), 0))
    assert frame["type"] == "notifications.all_read"


def test_presence_online_after_debounce_only() -> None:
    ledger = PresenceLedger(debounce=2.0)
    ledger.join("u", now=0.0)
    assert ledger.due(1.0) == []
    assert ledger.due(2.0) == [("u", PresenceStatus.ONLINE)]
    assert ledger.due(10.0) == []


def test_presence_blip_publishes_nothing() -> None:
    ledger = PresenceLedger(debounce=2.0)
    ledger.join("u", 0.0)
    ledger.due(2.0)
    ledger.leave("u", 3.0)
    ledger.join("u", 3.5)  # a page reload
    assert ledger.due(10.0) == []
    assert ledger.sessions("u") == 1


def test_presence_short_visit_publishes_nothing() -> None:
    ledger = PresenceLedger(debounce=2.0)
    ledger.join("u", 0.0)
    ledger.leave("u", 1.0)
    assert ledger.due(5.0) == []
    assert ledger.registered_users() == []


def test_presence_offline_after_last_session_and_debounce() -> None:
    ledger = PresenceLedger(debounce=1.0)
    ledger.join("u", 0.0)
    ledger.join("u", 0.1)
    ledger.due(1.5)
    ledger.leave("u", 2.0)
    assert ledger.due(4.0) == []
    ledger.leave("u", 5.0)
    assert ledger.due(5.5) == []
    assert ledger.due(6.0) == [("u", PresenceStatus.OFFLINE)]
    assert ledger.sessions("u") == 0


def test_delivered_status() -> None:
    msg = WireMessage("e", 4, "n", "n%201", 3, int(T0.timestamp() * 1000), b"{}")
    status = delivered_status("alice", msg, T0 + timedelta(seconds=1))
    assert status.notification_id == "n 1"
    assert status.status_id == status_id("n 1", 3) == "n 1:3:in_app:delivered"
    assert (status.channel, status.status) == (Channel.IN_APP, DeliveryState.DELIVERED)
    assert status.notification_created_at == T0
