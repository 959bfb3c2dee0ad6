"""Unit tests of the aggregation rule (the in-memory reference implementation)."""

from __future__ import annotations

import uuid

from hypothesis import given
from hypothesis import strategies as st

from clarion_aggregator.domain.grouping import (
    MAX_EVENT_IDS,
    GroupState,
    InMemoryGroups,
    Outcome,
    group_key,
    joins_group,
    notification_id,
)

MIN = 60_000


def apply(
    groups: InMemoryGroups,
    event_id: str,
    at_ms: int,
    actor: str,
    window_ms: int = 5 * MIN,
    recipient: str = "bob",
    max_actors: int = 3,
) -> tuple[Outcome, GroupState]:
    return groups.apply(
        recipient_id=recipient,
        event_type="post.liked",
        object_ref="post:p1",
        event_id=event_id,
        occurred_ms=at_ms,
        actor_id=actor,
        actor_name=actor.upper(),
        window_ms=window_ms,
        max_actors=max_actors,
    )


def test_window_boundary_is_exclusive() -> None:
    assert joins_group(0, 5 * MIN - 1, 5 * MIN)
    assert not joins_group(0, 5 * MIN, 5 * MIN)
    assert joins_group(10 * MIN, 0, 5 * MIN)  # older events join the open group
    assert not joins_group(0, 0, 0)


def test_events_in_window_update_one_notification() -> None:
    groups = InMemoryGroups()
    out1, g1 = apply(groups, "e1", 0, "alice")
    out2, g2 = apply(groups, "e2", 4 * MIN, "carol")
    assert (out1, out2) == (Outcome.CREATED, Outcome.UPDATED)
    assert g1 is g2
    assert g2.version == 2
    assert g2.actors == [("carol", "CAROL"), ("alice", "ALICE")]
    assert g2.event_ids == ["e2", "e1"]
    assert g2.last_occurred_ms == 4 * MIN


def test_event_at_window_end_starts_a_new_group() -> None:
    groups = InMemoryGroups()
    _, first = apply(groups, "e1", 0, "alice")
    out, second = apply(groups, "e2", 5 * MIN, "carol")
    assert out is Outcome.CREATED
    assert second.notification_id != first.notification_id
    assert second.version == 1
    # the new group is the open one: a later event in ITS window joins it
    out3, third = apply(groups, "e3", 9 * MIN, "dave")
    assert out3 is Outcome.UPDATED
    assert third is second


def test_window_zero_makes_every_event_its_own_notification() -> None:
    groups = InMemoryGroups()
    ids = {apply(groups, f"e{i}", 0, "alice", window_ms=0)[1].notification_id for i in range(4)}
    assert len(ids) == 4


def test_distinct_actors_and_newest_first() -> None:
    groups = InMemoryGroups()
    for i, actor in enumerate(["a", "b", "a", "c", "d", "b"]):
        _, g = apply(groups, f"e{i}", i * 1000, actor)
    assert g.actor_count == 4
    assert g.version == 6
    assert [a for a, _ in g.actors] == ["b", "d", "c"]


def test_duplicate_event_changes_nothing() -> None:
    groups = InMemoryGroups()
    apply(groups, "e1", 0, "alice")
    apply(groups, "e2", 1000, "carol")
    out, g = apply(groups, "e1", 0, "alice")
    assert out is Outcome.DUPLICATE
    assert (g.version, g.actor_count) == (2, 2)


def test_duplicate_of_an_event_in_a_closed_group_returns_that_group() -> None:
    groups = InMemoryGroups()
    _, old = apply(groups, "e1", 0, "alice")
    apply(groups, "e2", 10 * MIN, "carol")
    out, g = apply(groups, "e1", 0, "alice")
    assert out is Outcome.DUPLICATE
    assert g is old


def test_dedup_is_per_recipient() -> None:
    groups = InMemoryGroups()
    out1, a = apply(groups, "e1", 0, "alice", recipient="bob")
    out2, b = apply(groups, "e1", 0, "alice", recipient="eve")
    assert out1 is out2 is Outcome.CREATED
    assert a.notification_id != b.notification_id


def test_event_ids_are_capped() -> None:
    groups = InMemoryGroups()
    for i in range(MAX_EVENT_IDS + 5):
        _, g = apply(groups, f"e{i}", i, "alice")
    assert len(g.event_ids) == MAX_EVENT_IDS
    assert g.event_ids[0] == f"e{MAX_EVENT_IDS + 4}"


def test_notification_id_is_deterministic_uuid5() -> None:
    a = notification_id("bob", "post.liked", "post:p1", "e1")
    assert a == notification_id("bob", "post.liked", "post:p1", "e1")
    assert uuid.UUID(a).version == 5
    assert a != notification_id("bob", "post.liked", "post:p1", "e2")
    assert group_key("bob", "post.liked", "post:p1", 42) == "bob|post.liked|post:p1|42"


events = st.lists(
    st.tuples(
        st.integers(min_value=0, max_value=30),  # event id (repeats = redeliveries)
        st.integers(min_value=0, max_value=20 * MIN),  # occurred
        st.sampled_from(["a", "b", "c", "d", "e"]),  # actor
    ),
    min_size=1,
    max_size=60,
)


@given(events, st.sampled_from([0, MIN, 5 * MIN, 60 * MIN]))
def test_groups_account_for_every_distinct_event(
    seq: list[tuple[int, int, str]], window_ms: int
) -> None:
    groups = InMemoryGroups()
    first_seen: dict[int, tuple[int, str]] = {}
    for eid, at, actor in seq:
        # a redelivered event carries the same occurred_at and actor as the original
        at, actor = first_seen.setdefault(eid, (at, actor))
        apply(groups, f"e{eid}", at, actor, window_ms=window_ms)
    total_versions = sum(g.version for g in groups.groups.values())
    assert total_versions == len(first_seen)
    for g in groups.groups.values():
        assert 1 <= g.actor_count <= g.version
        assert len(g.actors) <= 3
        assert g.actors[0][0] in g.actor_ids
        assert len({a for a, _ in g.actors}) == len(g.actors)
        for eid in g.event_ids:
            at, _ = first_seen[int(eid[1:])]
            assert window_ms == 0 or at < g.first_occurred_ms + window_ms


@given(events)
def test_replaying_everything_again_is_a_no_op(seq: list[tuple[int, int, str]]) -> None:
    groups = InMemoryGroups()
    norm = []
    first_seen: dict[int, tuple[int, str]] = {}
    for eid, at, actor in seq:
        at, actor = first_seen.setdefault(eid, (at, actor))
        norm.append((eid, at, actor))
    for eid, at, actor in norm:
        apply(groups, f"e{eid}", at, actor)
    before = {k: (g.version, g.actor_count, list(g.actors)) for k, g in groups.groups.items()}
    for eid, at, actor in norm:
        out, _ = apply(groups, f"e{eid}", at, actor)
        assert out is Outcome.DUPLICATE
    after = {k: (g.version, g.actor_count, list(g.actors)) for k, g in groups.groups.items()}
    assert before == after
