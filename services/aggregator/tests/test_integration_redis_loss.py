"""Integration: Redis loses the aggregator's state mid-stream; nothing is lost or doubled.

The same domain events (same ids, same event times, same manual clock) go through
two aggregators on the embedded stack (Kafka, Redis): a reference run, and a run
whose Redis state is wiped (what FLUSHALL or a restart without persistence does
to the service's keys) three times: between two batches; after a batch's Lua
update and publish but before its offset commit (the batch is redelivered onto
the empty Redis); after a batch's Lua update but before its publish. Both runs
must publish the same notifications (same ids, same final versions and contents,
no version number with two contents) and end with the same digest buffers.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from clarion_aggregator.adapters.kafka import ensure_topics
from clarion_aggregator.adapters.topic_scan import scan_topic
from clarion_aggregator.app import AggregatorService, build_service
from clarion_aggregator.domain.clock import ManualClock, to_ms
from clarion_aggregator.domain.grouping import InMemoryGroups
from clarion_aggregator.domain.rules import load_rules
from clarion_aggregator.handlers.rebuild import process_rebuilding
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.registry import DOMAIN_EVENTS, NOTIFICATIONS, PREFERENCES
from clarion_contracts.v1 import DomainEvent, Notification, Preferences

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
Event = Callable[..., DomainEvent]
Chaos = Callable[[AggregatorService, int, list[DomainEvent]], Awaitable[bool]]


def workload(event: Event) -> list[DomainEvent]:
    """Likes, comments and follows on a few objects for four recipients, 40 s apart in
    event time, so 5- and 10-minute windows close and reopen along the way."""
    kinds = [("post.liked", ("post", "p1")), ("post.commented", ("post", "p2"))]
    kinds.append(("user.followed", ("user", "me")))
    out = []
    for i in range(150):
        kind, obj = kinds[i % 3]
        out.append(
            event(
                event_id=uuid.UUID(int=i + 1),
                event_type=kind,
                obj=obj,
                actor=f"fan{i % 11}",
                recipients=[f"r{i % 4}"],
                at=T0 + timedelta(seconds=40 * i),
            )
        )
    return out


async def lose_state(service: AggregatorService) -> None:
    """Delete every Redis key of the service: FLUSHALL as far as it can tell (the
    embedded Redis is shared by the whole test session, so not FLUSHALL itself)."""
    redis = service.redis
    keys = [k async for k in redis.scan_iter(match=service.settings.redis_prefix + "*")]
    assert keys
    await redis.delete(*keys)


async def read_notifications(settings: AggregatorSettings) -> list[Notification]:
    """Every notification on the topic (read to its end with offset continuity)."""
    return [
        Notification.from_bytes(rec.value)
        async for batch in scan_topic(settings, settings.topic(NOTIFICATIONS))
        for rec in batch
    ]


async def buffered_digests(service: AggregatorService) -> dict[str, dict[bytes, bytes]]:
    """Every buffered digest: ``recipient|period`` -> notification id -> EmailItem JSON."""
    prefix = service.store.prefix + "digest:"
    out = {}
    async for key in service.redis.scan_iter(match=prefix + "*"):
        name = key.decode().removeprefix(prefix)
        if name != "due":
            out[name] = await service.redis.hgetall(key)
    return out


async def run(
    devstack: Any,
    producer: AIOKafkaProducer,
    events: Sequence[DomainEvent],
    prefs: Preferences,
    chaos: Chaos | None = None,
) -> tuple[list[Notification], list[str], dict[str, dict[bytes, bytes]]]:
    """Deliver ``events`` in batches of 10 as the domain-event subscriber does
    (:func:`process_rebuilding`); ``chaos(service, batch number)`` may disturb a
    batch and must then deliver it itself. Returns every notification published
    the state epochs seen after each batch and the digest buffers at the end.

    Batches are handed over directly rather than through the consumer group, so both
    runs see exactly the same batches and each loss falls at a known point of a batch.
    """
    name = f"t{uuid.uuid4().hex[:8]}"
    settings = AggregatorSettings(
        kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
        redis_url=devstack.redis_url,
        topic_prefix=name + ".",
        redis_prefix=name + ":",
        kafka_partitions_override=3,
        http_port=0,
        rebuild_settle_seconds=0.1,
        environment="test",
        log_json=False,
    )
    service = build_service(settings, clock=ManualClock(T0), serve_http=False)
    # The preferences are on their topic before the start-up rebuild reads it, so both
    # runs route every event with them.
    await ensure_topics(settings)
    await producer.send_and_wait(
        settings.topic(PREFERENCES), prefs.to_bytes(), key=prefs.user_id.encode()
    )
    epochs: list[str] = []
    async with service.app:
        for number, start in enumerate(range(0, len(events), 10)):
            batch = events[start : start + 10]
            if chaos is None or not await chaos(service, number, batch):
                await process_rebuilding(service.pipeline, service.rebuilder, batch)
            marker = await service.rebuilder.rebuild_store.marker()
            assert marker is not None
            epochs.append(marker["epoch"])
        digests = await buffered_digests(service)
    return await read_notifications(settings), epochs, digests


def final(notes: list[Notification]) -> dict[str, tuple[Any, ...]]:
    """Per notification id: the latest version and what it shows."""
    out: dict[str, Notification] = {}
    for n in notes:
        if n.notification_id not in out or out[n.notification_id].version < n.version:
            out[n.notification_id] = n
    return {
        nid: (
            n.version,
            n.actor_count,
            [a.id for a in n.actors],
            n.event_ids,
            n.title,
            n.group_key,
            n.channels,
        )
        for nid, n in out.items()
    }


def distinct_versions(notes: list[Notification]) -> list[Notification]:
    """One notification per (id, version) published."""
    return list({(n.notification_id, n.version): n for n in notes}.values())


def one_content_per_version(notes: list[Notification]) -> None:
    contents: dict[tuple[str, int], set[str]] = {}
    for n in notes:
        shown = n.model_dump_json(include={"actor_count", "actors", "event_ids", "title"})
        contents.setdefault((n.notification_id, n.version), set()).add(shown)
    forked = {k: v for k, v in contents.items() if len(v) > 1}
    assert not forked, f"versions published with two contents: {forked}"


async def test_losing_redis_mid_stream_gives_the_notifications_of_an_undisturbed_run(
    devstack: Any, producer: AIOKafkaProducer, event: Event
) -> None:
    events = workload(event)
    # One recipient's preferences route social notifications to in-app only: the
    # rebuild must re-read them, or later versions would be routed to every channel.
    prefs = Preferences.model_validate(
        {
            "user_id": "r1",
            "updated_at": T0.isoformat(),
            "categories": {"social": {"push": False, "email": False}},
        }
    )
    expected, _, expected_digests = await run(devstack, producer, events, prefs)

    disturbed: list[str] = []

    async def chaos(service: AggregatorService, number: int, batch: list[DomainEvent]) -> bool:
        pipeline = service.pipeline
        if number == 4:
            # Between two batches: the last commit covers everything aggregated so far.
            await lose_state(service)
            disturbed.append("between batches")
            return False
        if number == 8:
            # After the batch's Lua update and publish, before its offset commit: the
            # consumer dies, Redis loses everything, the batch is delivered again.
            await process_rebuilding(pipeline, service.rebuilder, batch)
            await lose_state(service)
            await process_rebuilding(pipeline, service.rebuilder, batch)
            disturbed.append("after update, before commit")
            return True
        if number == 11:
            # After the Lua update, before anything was published: the versions the
            # lost state held were never seen downstream and are made again.
            working = pipeline.publisher.send_many

            async def broker_gone(records: Any) -> list[Any]:
                raise ConnectionError("broker gone")

            pipeline.publisher.send_many = broker_gone  # type: ignore[method-assign]
            try:
                with pytest.raises(ConnectionError):
                    await process_rebuilding(pipeline, service.rebuilder, batch)
            finally:
                pipeline.publisher.send_many = working  # type: ignore[method-assign]
            await lose_state(service)
            await process_rebuilding(pipeline, service.rebuilder, batch)
            disturbed.append("after update, before publish")
            return True
        return False

    got, epochs, digests = await run(devstack, producer, events, prefs, chaos)

    assert len(disturbed) == 3
    # Each loss was detected and the state rebuilt under a new state epoch.
    assert len(set(epochs)) == 4
    one_content_per_version(expected)
    one_content_per_version(got)
    want = final(expected)
    assert len(want) > 12  # windows closed and reopened along the way
    assert final(got) == want
    # The daily digests not due yet hold the same items (the latest versions).
    assert expected_digests
    assert digests == expected_digests
    # Every event made exactly one version: nothing lost, nothing absorbed twice.
    assert sorted(n.version for n in distinct_versions(got)) == sorted(
        n.version for n in distinct_versions(expected)
    )


async def test_two_instances_rebuild_once(
    settings_factory: Callable[..., AggregatorSettings],
) -> None:
    settings = settings_factory(rebuild_settle_seconds=0.3)
    await ensure_topics(settings)
    a = build_service(settings.model_copy(update={"instance_id": "a"}), serve_http=False)
    b = build_service(settings.model_copy(update={"instance_id": "b"}), serve_http=False)
    runs: list[str] = []
    for name, service in (("a", a), ("b", b)):
        rebuild = service.rebuilder._rebuild

        async def counted(
            token: str, lease_ms: int, name: str = name, rebuild: Any = rebuild
        ) -> bool:
            runs.append(name)
            return bool(await rebuild(token, lease_ms))

        service.rebuilder._rebuild = counted  # type: ignore[method-assign]
    try:
        rebuilt = await asyncio.gather(a.rebuilder.ensure(), b.rebuilder.ensure())
        # One took the lock and rebuilt; the other waited for its marker.
        assert len(runs) == 1
        assert sorted(rebuilt) == [False, True]
        marker = await a.rebuilder.rebuild_store.marker()
        assert marker is not None
        assert not await a.rebuilder.rebuild_store.lock_held()
    finally:
        await a.redis.aclose()
        await b.redis.aclose()


async def test_a_loss_during_the_rebuild_leaves_no_marker(
    settings_factory: Callable[..., AggregatorSettings],
) -> None:
    service = build_service(settings_factory(), serve_http=False)
    store = service.rebuilder.rebuild_store
    try:
        assert await store.acquire("mine", 10_000)
        assert not await store.acquire("theirs", 10_000)
        await service.redis.delete(store.lock_key)  # what FLUSHALL does meanwhile
        assert await store.finish("mine", 0) is None
        assert await store.marker() is None
        assert await store.acquire("mine", 10_000)
        assert await store.finish("mine", 0) is not None
        assert await store.marker() is not None
    finally:
        await service.redis.aclose()


async def test_live_consumer_meets_a_lost_state_rebuilds_and_continues_the_groups(
    settings_factory: Callable[..., AggregatorSettings],
    producer: AIOKafkaProducer,
    wait_until: Any,
    event: Event,
) -> None:
    # Through the real subscriber: the state is lost while the consumer group is live,
    # the next batch meets StateLost, waits for the rebuild and goes on. Events are
    # keyed by recipient, so each recipient's order is the reference's.
    settings = settings_factory(rebuild_settle_seconds=0.1, batch_max_records=7)
    events = workload(event)[:60]
    rules = load_rules()
    reference = InMemoryGroups()
    want: dict[str, tuple[int, int, list[str]]] = {}
    for e in events:
        rule = rules.for_type(e.type)
        recipient = (e.recipients or [""])[0]
        _, group = reference.apply(
            recipient_id=recipient,
            event_type=e.type,
            object_ref=e.object.ref,
            event_id=str(e.event_id),
            occurred_ms=to_ms(e.occurred_at),
            actor_id=e.actor.id,
            actor_name=e.actor.name,
            window_ms=rule.window_ms,
            max_actors=rule.max_actors,
        )
        want[group.notification_id] = (group.version, group.actor_count, group.event_ids)

    async def produce(part: Sequence[DomainEvent]) -> None:
        futures = [
            await producer.send(
                settings.topic(DOMAIN_EVENTS), e.to_bytes(), key=(e.recipients or ["-"])[0].encode()
            )
            for e in part
        ]
        await asyncio.gather(*futures)

    async def published(part: Sequence[DomainEvent]) -> bool:
        made = {n.event_ids[0] for n in await read_notifications(settings)}
        return {e.event_id for e in part} <= made

    service = build_service(settings, clock=ManualClock(T0), serve_http=False)
    async with service.app:
        await produce(events[:30])
        await wait_until(lambda: published(events[:30]), timeout=60, interval=0.5)
        before = await service.rebuilder.rebuild_store.marker()
        await lose_state(service)
        await produce(events[30:])
        await wait_until(lambda: published(events), timeout=60, interval=0.5)
        after = await service.rebuilder.rebuild_store.marker()
    assert before is not None
    assert after is not None
    assert after["epoch"] != before["epoch"]
    got = await read_notifications(settings)
    one_content_per_version(got)
    latest: dict[str, Notification] = {}
    for n in got:
        if n.notification_id not in latest or latest[n.notification_id].version < n.version:
            latest[n.notification_id] = n
    assert {
        nid: (n.version, n.actor_count, [str(e) for e in n.event_ids]) for nid, n in latest.items()
    } == want
