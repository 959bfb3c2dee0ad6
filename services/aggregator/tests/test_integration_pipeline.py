"""Integration: the aggregator on the embedded Kafka broker and Redis.

Domain events are produced to the real domain topic, the service consumes them
with its FastStream app, and the tests read what it produced.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from clarion_contracts.registry import (
    DOMAIN_EVENTS,
    EMAIL_REQUESTS,
    NOTIFICATIONS,
    PREFERENCES,
    PUSH_REQUESTS,
    USER_PROFILES,
)
from clarion_contracts.v1 import (
    DomainEvent,
    EmailKind,
    EmailRequest,
    Notification,
    Preferences,
    PushRequest,
    UserProfile,
)

from clarion_aggregator.app import AggregatorService, build_service
from clarion_aggregator.domain.clock import ManualClock

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
Event = Callable[..., DomainEvent]


def latest(records: list[bytes]) -> dict[str, Notification]:
    """Newest version of each notification id."""
    out: dict[str, Notification] = {}
    for raw in records:
        n = Notification.from_bytes(raw)
        if n.notification_id not in out or out[n.notification_id].version < n.version:
            out[n.notification_id] = n
    return out


async def produce(producer: Any, topic: str, events: list[DomainEvent], key: str = "bob") -> None:
    futures = [await producer.send(topic, e.to_bytes(), key=key.encode()) for e in events]
    await asyncio.gather(*futures)


async def wait_until(predicate: Callable[[], Any], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        if time.monotonic() > deadline:
            pytest.fail("condition not met in time")
        await asyncio.sleep(0.05)


def service_for(settings: Any, clock: ManualClock | None = None) -> AggregatorService:
    return build_service(settings, clock=clock or ManualClock(T0))


async def test_likes_aggregate_into_one_notification(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    service = service_for(settings)
    async with service.app:
        events = [event(actor=f"u{i}", at=T0 + timedelta(seconds=i)) for i in range(5)]
        # a later like outside the 5-minute window starts a second notification
        events.append(event(actor="late", at=T0 + timedelta(minutes=5)))
        await produce(producer, settings.topic(DOMAIN_EVENTS), events)
        notes = await reader(settings.topic(NOTIFICATIONS))
        records = await notes.wait_for(lambda r: len(r) >= 6)
    got = sorted(latest(records).values(), key=lambda n: n.first_occurred_at)
    assert len(got) == 2
    first, second = got
    assert (first.version, first.actor_count) == (5, 5)
    assert [a.id for a in first.actors] == ["u4", "u3", "u2"]
    assert first.title == "u4, u3, u2 and 2 others liked your post “Hello”"
    assert first.category == "social"
    assert first.group_key.startswith("bob|post.liked|post:p1|")
    assert (second.version, second.actor_count, second.title) == (
        1,
        1,
        "late liked your post “Hello”",
    )
    assert [n.version for n in map(Notification.from_bytes, records)] == [1, 2, 3, 4, 5, 1]


async def test_actor_is_never_notified_and_redelivery_adds_no_actor(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    service = service_for(settings)
    first = event(actor="alice", recipients=["bob", "alice"])
    again = event(actor="carol", at=T0 + timedelta(seconds=5))
    async with service.app:
        await produce(producer, settings.topic(DOMAIN_EVENTS), [first, again, first, again])
        notes = await reader(settings.topic(NOTIFICATIONS))
        records = await notes.wait_for(lambda r: len(r) >= 4)
        records = await notes.settle(1.0)
    parsed = [Notification.from_bytes(r) for r in records]
    assert {n.recipient_id for n in parsed} == {"bob"}
    assert len(latest(records)) == 1
    # duplicates re-publish the CURRENT version; no version 3, still two actors
    assert max(n.version for n in parsed) == 2
    assert {n.actor_count for n in parsed if n.version == 2} == {2}


async def test_crash_between_state_update_and_publish_loses_nothing(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    service = service_for(settings)
    e = event(actor="alice")
    async with service.app:
        # The state is updated (as if the process died before producing)...
        failing = service.pipeline.publisher.publish_many

        async def crash(records: Any) -> None:
            raise ConnectionError("broker gone")

        service.pipeline.publisher.publish_many = crash  # type: ignore[method-assign]
        with pytest.raises(ConnectionError):
            await service.pipeline.process([e])
        service.pipeline.publisher.publish_many = failing  # type: ignore[method-assign]
        # ...then Kafka redelivers the event: the current version goes out.
        await produce(producer, settings.topic(DOMAIN_EVENTS), [e])
        notes = await reader(settings.topic(NOTIFICATIONS))
        records = await notes.wait_for(lambda r: len(r) >= 1)
        pushes = await reader(settings.topic(PUSH_REQUESTS))
        push_records = await pushes.wait_for(lambda r: len(r) >= 1)
    n = Notification.from_bytes(records[0])
    assert (n.version, n.actor_count, n.recipient_id) == (1, 1, "bob")
    push = PushRequest.from_bytes(push_records[0])
    assert push.request_id == f"{n.notification_id}:1:push"


async def test_two_instances_on_the_same_traffic_make_one_exact_group(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    # Both instances consume EVERY event (two consumer groups), concurrently: each
    # like reaches the Lua script twice, and must count once.
    settings_a = settings_factory(consumer_group="aggregator", instance_id="a")
    settings_b = settings_factory(consumer_group="aggregator-twin", instance_id="b")
    a, b = service_for(settings_a), service_for(settings_b)
    likes = [
        event(actor=f"fan{i % 150}", at=T0 + timedelta(milliseconds=i)) for i in range(400)
    ]
    async with a.app, b.app:
        futures = [
            await producer.send(settings_a.topic(DOMAIN_EVENTS), e.to_bytes(), key=str(e.event_id).encode())
            for e in likes
        ]
        await asyncio.gather(*futures)
        notes = await reader(settings_a.topic(NOTIFICATIONS))
        await notes.wait_for(lambda r: any(Notification.from_bytes(x).version == 400 for x in r[-50:]), 60)
        records = await notes.settle(1.0)
    got = latest(records)
    assert len(got) == 1
    (n,) = got.values()
    assert n.version == 400
    assert n.actor_count == 150
    versions = [Notification.from_bytes(r).version for r in records]
    assert set(range(1, 401)) <= set(versions)


async def test_two_instances_in_one_consumer_group(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    a = service_for(settings.model_copy(update={"instance_id": "a"}))
    b = service_for(settings.model_copy(update={"instance_id": "b"}))
    likes = [event(actor=f"fan{i}", at=T0 + timedelta(milliseconds=i)) for i in range(200)]
    async with a.app, b.app:
        futures = [
            await producer.send(settings.topic(DOMAIN_EVENTS), e.to_bytes(), key=str(e.event_id).encode())
            for e in likes
        ]
        await asyncio.gather(*futures)
        notes = await reader(settings.topic(NOTIFICATIONS))
        await notes.wait_for(lambda r: any(Notification.from_bytes(x).version == 200 for x in r), 60)
    (n,) = latest(notes.records).values()
    assert (n.version, n.actor_count) == (200, 200)


async def test_preferences_and_mutes_suppress(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    service = service_for(settings)
    muted = Preferences.model_validate(
        {"user_id": "bob", "muted_objects": ["post:p1"], "updated_at": T0.isoformat()}
    )
    no_social = Preferences.model_validate(
        {
            "user_id": "eve",
            "categories": {"social": {"in_app": False, "push": False, "email": False}},
            "updated_at": T0.isoformat(),
        }
    )
    async with service.app:
        await produce(producer, settings.topic(PREFERENCES), [muted], key="bob")
        await produce(producer, settings.topic(PREFERENCES), [no_social], key="eve")

        async def stored() -> bool:
            users = await service.store.load_contexts(["bob", "eve"])
            return all(u.prefs is not None for u in users.values())

        await wait_until(stored)
        await produce(
            producer,
            settings.topic(DOMAIN_EVENTS),
            [
                event(actor="alice", recipients=["bob", "eve", "dan"]),
                event(actor="alice", recipients=["bob"], obj=("post", "p2"), title="Other"),
            ],
        )
        notes = await reader(settings.topic(NOTIFICATIONS))
        records = await notes.wait_for(lambda r: len(r) >= 2)
        records = await notes.settle(1.0)
    got = {(n.recipient_id, n.object.id) for n in map(Notification.from_bytes, records)}
    assert got == {("dan", "p1"), ("bob", "p2")}


async def test_quiet_hours_defer_push_and_throttle_limits_pushes(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    clock = ManualClock(datetime(2026, 3, 2, 23, 0, tzinfo=UTC))
    service = service_for(settings, clock)
    prefs = Preferences.model_validate(
        {
            "user_id": "bob",
            "quiet_hours": {"start": "22:00", "end": "07:00"},
            "updated_at": T0.isoformat(),
        }
    )
    async with service.app:
        await produce(producer, settings.topic(PREFERENCES), [prefs], key="bob")

        async def stored() -> bool:
            return (await service.store.load_contexts(["bob"]))["bob"].prefs is not None

        await wait_until(stored)
        domain = settings.topic(DOMAIN_EVENTS)
        await produce(producer, domain, [event(actor=f"u{i}", at=T0 + timedelta(seconds=i)) for i in range(3)])
        notes = await reader(settings.topic(NOTIFICATIONS))
        await notes.wait_for(lambda r: len(r) >= 3)
        clock.advance(timedelta(minutes=5))  # the throttle interval has passed
        await produce(producer, domain, [event(actor="u9", at=T0 + timedelta(seconds=30))])
        await notes.wait_for(lambda r: len(r) >= 4)
        pushes = await reader(settings.topic(PUSH_REQUESTS))
        push_records = await pushes.wait_for(lambda r: len(r) >= 2)
        push_records = await pushes.settle(1.0)
    parsed = [PushRequest.from_bytes(r) for r in push_records]
    assert [p.version for p in parsed] == [1, 4]
    assert {p.not_before for p in parsed} == {datetime(2026, 3, 3, 7, 0, tzinfo=UTC)}
    assert parsed[1].title == "u9, u2, u1 and 1 other liked your post “Hello”"
    assert parsed[0].topic and len(parsed[0].topic) <= 32


async def test_high_priority_email_is_immediate_and_digest_flushes(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    clock = ManualClock(datetime(2026, 3, 2, 10, 30, tzinfo=UTC))
    service = service_for(settings, clock)
    prefs = Preferences.model_validate(
        {"user_id": "bob", "email_digest": "hourly", "updated_at": T0.isoformat()}
    )
    async with service.app:
        await produce(producer, settings.topic(PREFERENCES), [prefs], key="bob")

        async def stored() -> bool:
            return (await service.store.load_contexts(["bob"]))["bob"].prefs is not None

        await wait_until(stored)
        await produce(
            producer,
            settings.topic(DOMAIN_EVENTS),
            [
                event(actor="alice"),
                event(actor="carol", at=T0 + timedelta(seconds=1)),
                event(actor="dan", event_type="user.followed", obj=("user", "bob"), title=None),
                event(actor="erin", event_type="repo.member_added", obj=("repo", "o/r"),
                      title="o/r", priority="high"),
            ],
        )
        notes = await reader(settings.topic(NOTIFICATIONS))
        await notes.wait_for(lambda r: len(r) >= 4)
        emails = await reader(settings.topic(EMAIL_REQUESTS))
        await emails.wait_for(lambda r: len(r) >= 1)
        assert await service.store.pending_digests() == 1
        clock.advance(timedelta(minutes=31))  # past 11:00, the hourly digest is due
        await emails.wait_for(lambda r: len(r) >= 2)
        records = await emails.settle(0.5)
        assert await service.store.pending_digests() == 0
    parsed = [EmailRequest.from_bytes(r) for r in records]
    assert [p.kind for p in parsed] == [EmailKind.IMMEDIATE, EmailKind.DIGEST]
    immediate, digest = parsed
    assert immediate.items[0].title == "erin added you as a collaborator to o/r"
    assert digest.request_id == "digest:bob:20260302T1000Z"
    assert digest.period_end == datetime(2026, 3, 2, 11, 0, tzinfo=UTC)
    assert sorted(i.title for i in digest.items) == [
        "carol and alice liked your post “Hello”",
        "dan started following you",
    ]


async def test_audience_fan_out_to_all_and_segment(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory(fanout_batch_size=7)
    service = service_for(settings)
    profiles = [
        UserProfile.model_validate(
            {
                "user_id": f"u{i}",
                "name": f"User {i}",
                "segments": ["beta"] if i % 3 == 0 else [],
                "updated_at": T0.isoformat(),
            }
        )
        for i in range(30)
    ]
    async with service.app:
        futures = [
            await producer.send(settings.topic(USER_PROFILES), p.to_bytes(), key=p.user_id.encode())
            for p in profiles
        ]
        await asyncio.gather(*futures)

        async def all_known() -> bool:
            return int(await service.redis.scard(service.store.key("users"))) == 30

        await wait_until(all_known)
        announce = {"event_type": "clarion.announcement", "obj": ("announcement", "a1"),
                    "title": "Maintenance", "data": {"body": "Tonight 22:00"}}
        await produce(
            producer,
            settings.topic(DOMAIN_EVENTS),
            [
                event(actor="u0", audience={"all": True}, **announce),
                event(actor="admin", audience={"segment": "beta"}, event_type="clarion.announcement",
                      obj=("announcement", "a2"), title="Beta news"),
            ],
        )
        notes = await reader(settings.topic(NOTIFICATIONS))
        records = await notes.wait_for(lambda r: len(r) >= 29 + 10)
        records = await notes.settle(0.5)
    parsed = [Notification.from_bytes(r) for r in records]
    everyone = {n.recipient_id for n in parsed if n.object.id == "a1"}
    beta = {n.recipient_id for n in parsed if n.object.id == "a2"}
    assert everyone == {f"u{i}" for i in range(1, 30)}
    assert beta == {f"u{i}" for i in range(0, 30, 3)}
    sample = next(n for n in parsed if n.object.id == "a1")
    assert (sample.title, sample.body, sample.category) == ("Maintenance", "Tonight 22:00", "announcements")


async def test_restart_keeps_aggregation_state(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    domain = settings.topic(DOMAIN_EVENTS)
    notes = await reader(settings.topic(NOTIFICATIONS))
    first = service_for(settings)
    async with first.app:
        await produce(producer, domain, [event(actor="u1"), event(actor="u2", at=T0 + timedelta(seconds=1))])
        await notes.wait_for(lambda r: len(r) >= 2)
    second = service_for(settings)
    async with second.app:
        await produce(producer, domain, [event(actor="u3", at=T0 + timedelta(seconds=2))])
        await notes.wait_for(lambda r: any(Notification.from_bytes(x).version == 3 for x in r))
    got = latest(notes.records)
    assert len(got) == 1
    (n,) = got.values()
    assert (n.version, n.actor_count) == (3, 3)


async def test_invalid_record_goes_to_the_dlq(
    settings_factory: Callable[..., Any], producer: Any, reader: Any, event: Event
) -> None:
    settings = settings_factory()
    service = service_for(settings)
    async with service.app:
        domain = settings.topic(DOMAIN_EVENTS)
        await (await producer.send(domain, b'{"type": "post.liked"}', key=b"bob"))
        await produce(producer, domain, [event(actor="alice")])
        notes = await reader(settings.topic(NOTIFICATIONS))
        await notes.wait_for(lambda r: len(r) >= 1)
        dlq = await reader(settings.dlq(DOMAIN_EVENTS))
        dead = await dlq.wait_for(lambda r: len(r) >= 1)
    assert dead == [b'{"type": "post.liked"}']
