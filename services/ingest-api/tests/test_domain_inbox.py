"""Folding consumer batches: newest version per notification, latest status per channel."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from clarion_contracts.v1 import DeliveryStatus, Notification
from clarion_ingest.domain.inbox import DeliveryPatch, delivery_patches, newest_versions

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


def note(nid: str, version: int, title: str = "t", user: str = "bob") -> Notification:
    return Notification(
        notification_id=nid,
        version=version,
        recipient_id=user,
        type="post.liked",
        category="social",
        group_key=f"{user}|post.liked|post:{nid}|0",
        object={"type": "post", "id": nid},
        actors=[{"id": "alice", "name": "Alice"}],
        actor_count=1,
        event_ids=[uuid.uuid4()],
        title=title,
        body="b",
        body_html="<p>b</p>",
        channels=["in_app"],
        created_at=AT,
        updated_at=AT,
        first_occurred_at=AT,
        last_occurred_at=AT,
    )


def status(nid: str, channel: str, state: str, user: str = "bob") -> DeliveryStatus:
    return DeliveryStatus(
        status_id=f"{nid}:{channel}:{state}",
        notification_id=nid,
        version=1,
        recipient_id=user,
        channel=channel,
        status=state,
        occurred_at=AT,
    )


def test_newest_versions_keeps_the_highest_version_per_id_sorted_by_id() -> None:
    batch = [note("b", 2), note("a", 1), note("b", 5), note("b", 3), note("c", 1)]
    kept = newest_versions(batch)
    assert [(n.notification_id, n.version) for n in kept] == [("a", 1), ("b", 5), ("c", 1)]


def test_newest_versions_on_a_repeated_version_keeps_the_later_record() -> None:
    kept = newest_versions([note("a", 2, "first"), note("a", 2, "redelivered"), note("a", 1)])
    assert [(n.version, n.title) for n in kept] == [(2, "redelivered")]


def test_newest_versions_of_nothing_is_nothing() -> None:
    assert newest_versions([]) == []


def test_delivery_patches_keep_the_last_status_per_channel_in_record_order() -> None:
    batch = [
        status("n2", "push", "retrying"),
        status("n1", "email", "deferred"),
        status("n2", "push", "delivered"),
        status("n2", "email", "failed"),
        status("n1", "email", "delivered"),
    ]
    assert delivery_patches(batch) == [
        DeliveryPatch("n1", "bob", {"email": "delivered"}),
        DeliveryPatch("n2", "bob", {"push": "delivered", "email": "failed"}),
    ]


def test_delivery_patches_are_per_recipient() -> None:
    batch = [status("n1", "push", "delivered"), status("n1", "push", "failed", user="mallory")]
    assert delivery_patches(batch) == [
        DeliveryPatch("n1", "bob", {"push": "delivered"}),
        DeliveryPatch("n1", "mallory", {"push": "failed"}),
    ]
