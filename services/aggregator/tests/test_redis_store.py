"""Integration: the Redis state store and its Lua scripts on the embedded Redis."""

from __future__ import annotations

import asyncio
import json
import random
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from typing import Any

import pytest
import redis.asyncio as aioredis

from clarion_aggregator.adapters.rebuild_store import RebuildStore
from clarion_aggregator.adapters.redis_store import (
    AggregateInput,
    DigestEntry,
    RedisStateStore,
    StateLost,
)
from clarion_aggregator.domain.grouping import InMemoryGroups, Outcome, notification_id
from clarion_aggregator.domain.rebuild import RebuiltGroup, RebuiltState
from clarion_contracts.v1 import Preferences, PresenceEvent, UserProfile

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
MIN = 60_000


@pytest.fixture
async def store(devstack: Any, redis_prefix: str) -> AsyncIterator[RedisStateStore]:
    client = aioredis.Redis.from_url(devstack.redis_url)
    # A built state: the aggregation script refuses to run without the marker.
    await client.hset(redis_prefix + "agg:state", mapping={"epoch": "test", "built_ms": 0})
    try:
        yield RedisStateStore(client, redis_prefix, ttl_seconds=3600)
    finally:
        await client.aclose()


def pair(
    event_id: str,
    at_ms: int,
    actor: str,
    *,
    recipient: str = "bob",
    window_ms: int = 5 * MIN,
    max_actors: int = 3,
    alert: bool = False,
    now_ms: int = 0,
) -> AggregateInput:
    return AggregateInput(
        recipient_id=recipient,
        event_type="post.liked",
        object_ref="post:p1",
        event_id=event_id,
        occurred_ms=at_ms,
        window_ms=window_ms,
        max_actors=max_actors,
        actor=[actor, actor.upper(), None],
        candidate_id=notification_id(recipient, "post.liked", "post:p1", event_id),
        now_ms=now_ms,
        context=json.dumps({"object": {"type": "post", "id": "p1"}, "data": {"tags": []}}),
        alert_wanted=alert,
        throttle_ms=5 * MIN,
        ttl_seconds=3600,
    )


async def test_lua_matches_the_reference_rule(store: RedisStateStore) -> None:
    rng = random.Random(7)
    reference = InMemoryGroups()
    first_seen: dict[int, tuple[int, str]] = {}
    inputs = []
    for _ in range(400):
        eid = rng.randrange(250)
        at, actor = first_seen.setdefault(eid, (rng.randrange(0, 40 * MIN), rng.choice("abcdefgh")))
        recipient = rng.choice(["bob", "eve"])
        inputs.append(pair(f"e{eid}", at, actor, recipient=recipient))
    snapshots = await store.aggregate_many(inputs, chunk=37)
    for it, snap in zip(inputs, snapshots, strict=True):
        outcome, group = reference.apply(
            recipient_id=it.recipient_id,
            event_type=it.event_type,
            object_ref=it.object_ref,
            event_id=it.event_id,
            occurred_ms=it.occurred_ms,
            actor_id=it.actor[0],
            actor_name=str(it.actor[1]),
            window_ms=it.window_ms,
            max_actors=it.max_actors,
        )
        assert snap is not None
        assert snap.outcome is outcome
        assert snap.notification_id == group.notification_id
        assert snap.version == group.version
        assert snap.actor_count == group.actor_count
        assert [(a[0], a[1]) for a in snap.actors] == group.actors
        assert snap.event_ids == group.event_ids
        assert snap.first_occurred_ms == group.first_occurred_ms
        assert snap.last_occurred_ms == group.last_occurred_ms
        assert snap.context["data"] == {"tags": []}


async def test_concurrent_instances_count_every_event_once(
    store: RedisStateStore, devstack: Any
) -> None:
    other_client = aioredis.Redis.from_url(devstack.redis_url)
    other = RedisStateStore(other_client, store.prefix.removesuffix("agg:"), ttl_seconds=3600)
    inputs = [pair(f"e{i}", i, f"fan{i % 70}") for i in range(600)]
    try:
        # both instances get every pair, in different chunkings, at the same time
        results = await asyncio.gather(
            *[store.aggregate_many(inputs[i : i + 50], chunk=10) for i in range(0, 600, 50)],
            *[other.aggregate_many(inputs[i : i + 30], chunk=7) for i in range(0, 600, 30)],
        )
    finally:
        await other_client.aclose()
    snaps = [s for batch in results for s in batch if s is not None]
    assert len({s.notification_id for s in snaps}) == 1
    created = [s for s in snaps if s.outcome is Outcome.CREATED]
    updated = [s for s in snaps if s.outcome is Outcome.UPDATED]
    assert len(created) == 1
    assert len(updated) == 599
    assert sorted(s.version for s in created + updated) == list(range(1, 601))
    final = max(snaps, key=lambda s: s.version)
    assert (final.version, final.actor_count) == (600, 70)


async def test_alert_throttle(store: RedisStateStore) -> None:
    a = await store.aggregate_many([pair("e1", 0, "a", alert=True, now_ms=0)])
    b = await store.aggregate_many([pair("e2", 1, "b", alert=True, now_ms=MIN)])
    c = await store.aggregate_many([pair("e3", 2, "c", alert=False, now_ms=6 * MIN)])
    d = await store.aggregate_many([pair("e4", 3, "d", alert=True, now_ms=6 * MIN)])
    assert [s.alert_version for s in (a[0], b[0], c[0], d[0]) if s] == [1, 1, 1, 4]
    again = await store.aggregate_many([pair("e2", 1, "b", alert=True, now_ms=7 * MIN)])
    assert again[0] is not None
    assert (again[0].outcome, again[0].version, again[0].alert_version) == (
        Outcome.DUPLICATE,
        4,
        4,
    )


async def test_contexts_profiles_segments_and_presence(store: RedisStateStore) -> None:
    assert (await store.load_contexts(["nobody"]))["nobody"].prefs is None
    profile = UserProfile(
        user_id="bob",
        name="Bob",
        locale="fr",
        timezone="Europe/Paris",
        segments=["beta", "staff"],
        updated_at=T0,
    )
    await store.put_profiles([profile])
    await store.put_profiles([profile.model_copy(update={"segments": ["staff"]})])
    await store.put_preferences(Preferences(user_id="bob", email_digest="off", updated_at=T0))
    online = PresenceEvent(
        event_id=uuid.uuid4(),
        user_id="bob",
        status="online",
        sessions=2,
        instance_id="gw1",
        occurred_at=T0,
    )
    await store.put_presence(online)
    ctx = (await store.load_contexts(["bob"]))["bob"]
    assert (ctx.locale, ctx.timezone, ctx.online) == ("fr", "Europe/Paris", True)
    assert ctx.prefs is not None
    assert ctx.prefs.email_digest == "off"
    assert [b async for b in store.audience(segment="beta")] == []
    assert [b async for b in store.audience(segment="staff")] == [["bob"]]
    assert [b async for b in store.audience()] == [["bob"]]
    await store.put_presence(online.model_copy(update={"status": "offline", "sessions": 0}))
    assert (await store.load_contexts(["bob"]))["bob"].online is False


async def test_audience_batches(store: RedisStateStore) -> None:
    await store.put_profiles(
        [UserProfile(user_id=f"u{i}", name="U", updated_at=T0) for i in range(25)]
    )
    batches = [b async for b in store.audience(batch_size=10)]
    assert all(len(b) <= 10 for b in batches)
    assert sorted(u for b in batches for u in b) == sorted(f"u{i}" for i in range(25))


async def test_digest_claim_lease_and_finish(store: RedisStateStore) -> None:
    def entry(nid: str, item: str) -> DigestEntry:
        return DigestEntry("bob", "20260302T1300Z", 1000, 2000, nid, item)

    await store.add_digest_items([entry("n1", "v1"), entry("n2", "v1")])
    assert await store.claim_due_digests(1999, lease_ms=100) == []
    (claimed,) = await store.claim_due_digests(2000, lease_ms=100)
    assert claimed.items == {"n1": "v1", "n2": "v1"}
    assert (claimed.period_start_ms, claimed.period_end_ms) == (1000, 2000)
    # leased: nobody else gets it until the lease ends
    assert await store.claim_due_digests(2050, lease_ms=100) == []
    # an item changed while the digest was being sent stays for the next round
    await store.add_digest_items([entry("n2", "v2")])
    assert await store.finish_digest(claimed, now_ms=2060) is False
    (rest,) = await store.claim_due_digests(2060, lease_ms=100)
    assert rest.items == {"n2": "v2"}
    assert await store.finish_digest(rest, now_ms=2070) is True
    assert await store.pending_digests() == 0


async def test_unfinished_digest_is_claimed_again_after_the_lease(store: RedisStateStore) -> None:
    await store.add_digest_items([DigestEntry("eve", "k", 0, 10, "n1", "v")])
    assert len(await store.claim_due_digests(10, lease_ms=100)) == 1
    assert await store.claim_due_digests(50, lease_ms=100) == []
    (again,) = await store.claim_due_digests(110, lease_ms=100)
    assert again.items == {"n1": "v"}


async def test_aggregation_refuses_to_run_without_the_state_marker(
    store: RedisStateStore,
) -> None:
    first = await store.aggregate_many([pair("e1", 0, "a")])
    assert first[0] is not None
    assert first[0].outcome is Outcome.CREATED
    # What FLUSHALL or a restart without persistence does to this store's keys.
    keys = [k async for k in store.redis.scan_iter(match=store.prefix + "*")]
    await store.redis.delete(*keys)
    with pytest.raises(StateLost):
        await store.aggregate_many([pair("e1", 0, "a"), pair("e2", 1, "b")], chunk=1)
    # Refused means untouched: no group, open pointer or dedup key was written.
    assert [k async for k in store.redis.scan_iter(match=store.prefix + "*")] == []


async def test_aggregation_refuses_to_run_on_another_generation_of_the_state(
    store: RedisStateStore,
) -> None:
    # The state was rebuilt (new epoch) since this instance last looked: the rest of
    # its batch must not run on it out of order.
    store.state_epoch = "before-the-rebuild"
    with pytest.raises(StateLost):
        await store.aggregate_many([pair("e1", 0, "a")])
    assert [k async for k in store.redis.scan_iter(match=store.prefix + "seen:*")] == []
    store.state_epoch = "test"
    (snap,) = await store.aggregate_many([pair("e1", 0, "a")])
    assert snap is not None
    assert snap.outcome is Outcome.CREATED


async def test_restored_groups_continue_like_the_lost_ones(store: RedisStateStore) -> None:
    # A group of 1,200 distinct actors (3 listed), rebuilt from its published version:
    # the next like must be version 2 with 1,201 actors, a redelivery a duplicate.
    group = RebuiltGroup(
        notification_id=notification_id("bob", "post.liked", "post:p1", "e0"),
        recipient_id="bob",
        event_type="post.liked",
        object_ref="post:p1",
        fields={
            "version": "1",
            "first_ms": "0",
            "last_ms": "0",
            "first_event": "e0",
            "actors": json.dumps([["a", "A", None]]),
            "events": json.dumps(["e0"]),
            "created_ms": "0",
            "updated_ms": "0",
            "ctx": "{}",
        },
        actor_ids=("a", *(f"~{i}" for i in range(1, 1200))),
    )
    state = RebuiltState(
        groups={group.notification_id: group},
        open_groups={group.open_key: group.notification_id},
        seen={("bob", "e0"): group.notification_id},
    )
    await RebuildStore(store.redis, store.prefix.removesuffix("agg:")).restore(state, 3600)
    joined, again = await store.aggregate_many([pair("e1", 1, "b"), pair("e0", 0, "a")])
    assert joined is not None
    assert (joined.outcome, joined.notification_id) == (Outcome.UPDATED, group.notification_id)
    assert (joined.version, joined.actor_count) == (2, 1201)
    assert again is not None
    assert (again.outcome, again.version) == (Outcome.DUPLICATE, 2)
