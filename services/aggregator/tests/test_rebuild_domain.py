"""Unit: folding published notification versions back into aggregation state."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import orjson

from clarion_aggregator.domain.clock import from_ms, to_ms
from clarion_aggregator.domain.grouping import MAX_EVENT_IDS, GroupState, InMemoryGroups
from clarion_aggregator.domain.rebuild import StateRebuild, group_fields, restore_digest_items
from clarion_contracts.v1 import Notification, Preferences

T0 = to_ms(datetime(2026, 3, 2, 12, 0, tzinfo=UTC))
MIN = 60_000


def published(group: GroupState, **extra: Any) -> Notification:
    """The version of ``group`` as the pipeline would publish it."""
    obj_type, obj_id = group.object_ref.split(":", 1)
    return Notification.model_validate(
        {
            "notification_id": group.notification_id,
            "version": group.version,
            "recipient_id": group.recipient_id,
            "type": group.event_type,
            "category": "social",
            "group_key": group.group_key,
            "object": {"type": obj_type, "id": obj_id, "title": "Hello"},
            "actors": [{"id": a, "name": n} for a, n in group.actors],
            "actor_count": group.actor_count,
            "event_ids": group.event_ids,
            "title": "t",
            "body": "b",
            "body_html": "b",
            "channels": ["in_app"],
            "created_at": from_ms(T0),
            "updated_at": from_ms(T0 + group.version),
            "first_occurred_at": from_ms(group.first_occurred_ms),
            "last_occurred_at": from_ms(group.last_occurred_ms),
            **extra,
        }
    )


def run(events: list[tuple[str, int, str]], window_ms: int = 5 * MIN) -> list[Notification]:
    """Apply ``(object id, occurred ms, actor)`` events for ``bob``; every version published."""
    groups = InMemoryGroups()
    out = []
    for obj, at, actor in events:
        _, group = groups.apply(
            recipient_id="bob",
            event_type="post.liked",
            object_ref=f"post:{obj}",
            event_id=str(uuid.uuid4()),
            occurred_ms=at,
            actor_id=actor,
            actor_name=actor.upper(),
            window_ms=window_ms,
            max_actors=3,
        )
        out.append(published(group))
    return out


def fold(notes: list[Notification]) -> StateRebuild:
    rebuild = StateRebuild()
    for note in notes:
        rebuild.add(note)
    return rebuild


def test_latest_version_of_each_group_is_kept_whatever_the_order_of_duplicates() -> None:
    notes = run([("p1", T0, "a"), ("p1", T0 + 1, "b"), ("p1", T0 + 2, "c")])
    # A redelivery re-publishes an older version after a newer one.
    state = fold([*notes, notes[0]]).result()
    (group,) = state.groups.values()
    assert group.fields["version"] == "3"
    assert orjson.loads(group.fields["events"]) == [str(e) for e in notes[-1].event_ids]
    assert group.fields["first_ms"] == str(T0)
    assert group.fields["last_ms"] == str(T0 + 2)
    assert group.fields["first_event"] == str(notes[0].event_ids[0])


def test_every_event_of_every_version_read_is_a_dedup_key_beyond_the_list_cap() -> None:
    count = MAX_EVENT_IDS + 5
    notes = run([("p1", T0 + i, f"u{i}") for i in range(count)])
    assert len(notes[-1].event_ids) == MAX_EVENT_IDS
    state = fold(notes).result()
    nid = notes[-1].notification_id
    every_event = {str(n.event_ids[0]) for n in notes}
    assert len(every_event) == count
    assert {e for (_, e), n in state.seen.items() if n == nid} == every_event
    # Beyond the cap the group's first event is no longer known.
    assert state.groups[nid].fields["first_event"] == ""


def test_distinct_actors_beyond_the_listed_ones_become_placeholders() -> None:
    notes = run([("p1", T0 + i, f"u{i}") for i in range(7)] + [("p1", T0 + 8, "u1")])
    last = notes[-1]
    assert last.actor_count == 7
    assert len(last.actors) == 3
    group = fold(notes).result().groups[last.notification_id]
    assert len(set(group.actor_ids)) == 7
    assert set(group.actor_ids) >= {"u1", "u6", "u5"}


def test_the_open_group_of_a_key_is_the_one_created_last() -> None:
    # The window closes after 5 minutes: three groups on p1, one on p2.
    notes = run(
        [
            ("p1", T0, "a"),
            ("p2", T0, "a"),
            ("p1", T0 + 6 * MIN, "b"),
            ("p1", T0 + 7 * MIN, "c"),
            ("p1", T0 + 12 * MIN, "d"),
            # Older than the open group's start: joins it (event time, arrival order).
            ("p1", T0 + MIN, "e"),
        ]
    )
    state = fold(notes).result()
    assert len(state.groups) == 4
    assert state.open_groups == {
        "bob|post.liked|post:p1": notes[4].notification_id,
        "bob|post.liked|post:p2": notes[1].notification_id,
    }
    assert notes[5].notification_id == notes[4].notification_id


def test_a_group_created_before_the_part_read_is_older_than_one_created_in_it() -> None:
    notes = run([("p1", T0, "a"), ("p1", T0 + 1, "b"), ("p1", T0 + 6 * MIN, "c")])
    # Read from the second version on: the first group's version 1 is not seen, and a
    # later update of it must not make it the open group again.
    state = fold([notes[1], notes[2], notes[1]]).result()
    assert state.open_groups["bob|post.liked|post:p1"] == notes[2].notification_id


def test_group_fields_restore_the_context_the_pipeline_stores() -> None:
    (note,) = run([("p1", T0, "a")])
    ctx = orjson.loads(group_fields(note)["ctx"])
    assert ctx == {
        "object": note.object.model_dump(mode="json"),
        "data": {},
        "priority": "normal",
        "tenant_id": None,
        "ingested_at": None,
    }


def test_only_notifications_routed_to_a_digest_are_digest_candidates() -> None:
    groups = run([("p1", T0, "a"), ("p2", T0, "a"), ("p3", T0, "a")])
    notes = [
        groups[0].model_copy(update={"channels": ["in_app", "email"]}),
        groups[1].model_copy(update={"channels": ["in_app", "email"], "priority": "high"}),
        groups[2],
    ]
    assert fold(notes).digest_candidates() == [notes[0]]


def test_digest_items_return_to_the_period_they_were_routed_to_while_not_due() -> None:
    (a, b) = [
        n.model_copy(update={"channels": ["in_app", "email"]})
        for n in run([("p1", T0, "a"), ("p2", T0, "b")])
    ]
    hourly = Preferences.model_validate(
        {"user_id": "bob", "updated_at": from_ms(T0), "email_digest": "hourly"}
    )
    # updated_at is 12:00:00.001 UTC: the hourly period 12:00-13:00, the daily one
    # (default 09:00 local, profile zone Europe/Paris = UTC+1) ends at 08:00 UTC next day.
    items, past_due = restore_digest_items([a], {"bob": hourly}, {}, from_ms(T0 + 30 * MIN))
    assert past_due == 0
    (item,) = items
    assert (item.period.start, item.period.end) == (from_ms(T0), from_ms(T0 + 60 * MIN))
    assert (item.item.notification_id, item.item.version) == (a.notification_id, 1)
    assert item.item.title == a.title
    items, past_due = restore_digest_items([a], {"bob": hourly}, {}, from_ms(T0 + 60 * MIN))
    assert (items, past_due) == ([], 1)
    items, _ = restore_digest_items([b], {}, {"bob": "Europe/Paris"}, from_ms(T0 + 60 * MIN))
    assert items[0].period.end == datetime(2026, 3, 3, 8, 0, tzinfo=UTC)
    off = hourly.model_copy(update={"email_digest": "off"})
    assert restore_digest_items([a], {"bob": off}, {}, from_ms(T0)) == ([], 0)
