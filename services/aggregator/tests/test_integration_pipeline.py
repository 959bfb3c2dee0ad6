"""Integration: one aggregator on the embedded Kafka broker and Redis.

Domain events are produced to the real domain topic, the service consumes them
with its FastStream app, and the tests read what it produced. One service (with
a manual clock) serves the whole module; each test uses its own recipients.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer

from clarion_aggregator.app import AggregatorService, build_service
from clarion_aggregator.domain.clock import ManualClock
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.base import ContractModel
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

pytestmark = pytest.mark.integration

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)
Event = Callable[..., DomainEvent]


@dataclass
class Running:
    settings: AggregatorSettings
    clock: ManualClock
    service: AggregatorService
    producer: AIOKafkaProducer

    async def send(
        self, spec: Any, messages: list[ContractModel], key: Callable[[Any], str]
    ) -> None:
        topic = self.settings.topic(spec)
        futures = [
            await self.producer.send(topic, m.to_bytes(), key=key(m).encode()) for m in messages
        ]
        await asyncio.gather(*futures)

    async def events(self, events: list[DomainEvent]) -> None:
        await self.send(DOMAIN_EVENTS, list(events), lambda e: (e.recipients or ["-"])[0])

    async def preferences(self, *prefs: Preferences) -> None:
        await self.send(PREFERENCES, list(prefs), lambda p: p.user_id)
        deadline = time.monotonic() + 20
        users = [p.user_id for p in prefs]
        while True:
            got = await self.service.store.load_contexts(users)
            if all(got[p.user_id].prefs == p for p in prefs):
                return
            if time.monotonic() > deadline:
                pytest.fail("preferences were not materialised")
            await asyncio.sleep(0.05)


@pytest.fixture(scope="module")
async def running(devstack: Any) -> AsyncIterator[Running]:
    name = f"t{uuid.uuid4().hex[:8]}"
    settings = AggregatorSettings(
        kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
        redis_url=devstack.redis_url,
        topic_prefix=name + ".",
        redis_prefix=name + ":",
        kafka_partitions_override=3,
        http_port=0,
        digest_interval_seconds=0.1,
        fanout_batch_size=7,
        environment="test",
        log_json=False,
    )
    clock = ManualClock(T0)
    service = build_service(settings, clock=clock)
    producer = AIOKafkaProducer(
        bootstrap_servers=devstack.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        async with service.app:
            yield Running(settings, clock, service, producer)
    finally:
        await producer.stop()


def prefs(user: str, **kw: Any) -> Preferences:
    return Preferences.model_validate({"user_id": user, "updated_at": T0.isoformat(), **kw})


def of(records: list[bytes], recipient: str) -> list[Notification]:
    return [n for n in map(Notification.from_bytes, records) if n.recipient_id == recipient]


def latest(notes: list[Notification]) -> dict[str, Notification]:
    """Newest version of each notification id."""
    out: dict[str, Notification] = {}
    for n in notes:
        if n.notification_id not in out or out[n.notification_id].version < n.version:
            out[n.notification_id] = n
    return out


async def test_likes_aggregate_into_one_notification(
    running: Running, reader: Any, event: Event
) -> None:
    events = [
        event(actor=f"u{i}", recipients=["r1"], at=T0 + timedelta(seconds=i)) for i in range(5)
    ]
    # a later like outside the 5-minute window starts a second notification
    events.append(event(actor="late", recipients=["r1"], at=T0 + timedelta(minutes=5)))
    await running.events(events)
    notes = await reader(running.settings.topic(NOTIFICATIONS))
    records = await notes.wait_for(lambda r: len(of(r, "r1")) >= 6)
    mine = of(records, "r1")
    got = sorted(latest(mine).values(), key=lambda n: n.first_occurred_at)
    assert len(got) == 2
    first, second = got
    assert (first.version, first.actor_count) == (5, 5)
    assert [a.id for a in first.actors] == ["u4", "u3", "u2"]
    assert first.title == "u4, u3, u2 and 2 others liked your post “Hello”"
    assert first.body_html.startswith("<p><strong>u4</strong>, <strong>u3</strong>")
    assert first.category == "social"
    assert first.group_key == f"r1|post.liked|post:p1|{int(T0.timestamp() * 1000)}"
    assert first.first_occurred_at == T0
    assert first.last_occurred_at == T0 + timedelta(seconds=4)
    assert len(first.event_ids) == 5
    assert first.event_ids[0] == events[4].event_id
    assert (second.version, second.actor_count, second.title) == (
        1,
        1,
        "late liked your post “Hello”",
    )
    assert [n.version for n in mine] == [1, 2, 3, 4, 5, 1]


async def test_actor_is_never_notified_and_redelivery_adds_no_actor(
    running: Running, reader: Any, event: Event
) -> None:
    first = event(actor="alice", recipients=["r2", "alice"])
    again = event(actor="carol", recipients=["r2"], at=T0 + timedelta(seconds=5))
    await running.events([first, again, first, again])
    notes = await reader(running.settings.topic(NOTIFICATIONS))
    await notes.wait_for(lambda r: len(of(r, "r2")) >= 4)
    records = await notes.settle(0.5)
    assert of(records, "alice") == []
    mine = of(records, "r2")
    assert len(latest(mine)) == 1
    # duplicates re-publish the CURRENT version: never a version 3, always two actors at 2
    assert sorted(n.version for n in mine) == [1, 2, 2, 2]
    assert {n.actor_count for n in mine if n.version == 2} == {2}


async def test_crash_between_state_update_and_publish_loses_nothing(
    running: Running, reader: Any, event: Event
) -> None:
    e = event(actor="alice", recipients=["r3"])
    pipeline = running.service.pipeline
    working = pipeline.publisher.send_many

    async def crash(records: Any) -> list[Any]:
        raise ConnectionError("broker gone")

    pipeline.publisher.send_many = crash  # type: ignore[method-assign]
    try:
        with pytest.raises(ConnectionError):
            await pipeline.process([e])
    finally:
        pipeline.publisher.send_many = working  # type: ignore[method-assign]
    # Kafka redelivers the event (it was never committed): the current version goes out.
    await running.events([e])
    notes = await reader(running.settings.topic(NOTIFICATIONS))
    records = await notes.wait_for(lambda r: len(of(r, "r3")) >= 1)
    pushes = await reader(running.settings.topic(PUSH_REQUESTS))
    push_records = await pushes.wait_for(
        lambda r: any(PushRequest.from_bytes(x).recipient_id == "r3" for x in r)
    )
    (n,) = of(records, "r3")
    assert (n.version, n.actor_count) == (1, 1)
    push = next(p for p in map(PushRequest.from_bytes, push_records) if p.recipient_id == "r3")
    assert push.request_id == f"{n.notification_id}:1:push"


async def test_preferences_and_mutes_suppress(running: Running, reader: Any, event: Event) -> None:
    await running.preferences(
        prefs("r4", muted_objects=["post:p1"]),
        prefs("r4b", categories={"social": {"in_app": False, "push": False, "email": False}}),
    )
    await running.events(
        [
            event(actor="alice", recipients=["r4", "r4b", "r4c"]),
            event(actor="alice", recipients=["r4"], obj=("post", "p2"), title="Other"),
        ]
    )
    notes = await reader(running.settings.topic(NOTIFICATIONS))
    await notes.wait_for(lambda r: len(of(r, "r4")) + len(of(r, "r4c")) >= 2)
    records = await notes.settle(0.5)
    assert [n.object.id for n in of(records, "r4")] == ["p2"]
    assert of(records, "r4b") == []
    assert [n.object.id for n in of(records, "r4c")] == ["p1"]


async def test_quiet_hours_defer_push_and_throttle_limits_pushes(
    running: Running, reader: Any, event: Event
) -> None:
    now = running.clock.now()
    start, end = now - timedelta(hours=1), now + timedelta(hours=1)
    await running.preferences(
        prefs("r5", quiet_hours={"start": f"{start:%H:%M}", "end": f"{end:%H:%M}"})
    )
    likes = [
        event(actor=f"u{i}", recipients=["r5"], at=T0 + timedelta(seconds=i)) for i in range(3)
    ]
    await running.events(likes)
    notes = await reader(running.settings.topic(NOTIFICATIONS))
    await notes.wait_for(lambda r: len(of(r, "r5")) >= 3)
    running.clock.advance(timedelta(minutes=5))  # the push throttle interval has passed
    await running.events([event(actor="u9", recipients=["r5"], at=T0 + timedelta(seconds=30))])
    await notes.wait_for(lambda r: len(of(r, "r5")) >= 4)
    pushes = await reader(running.settings.topic(PUSH_REQUESTS))
    await pushes.wait_for(lambda r: len([x for x in r if b'"r5"' in x]) >= 2)
    push_records = await pushes.settle(0.5)
    mine = [p for p in map(PushRequest.from_bytes, push_records) if p.recipient_id == "r5"]
    assert [p.version for p in mine] == [1, 4]
    assert {p.not_before for p in mine} == {end.replace(second=0, microsecond=0)}
    assert mine[1].title == "u9, u2, u1 and 1 other liked your post “Hello”"
    assert mine[0].topic
    assert len(mine[0].topic) <= 32


async def test_high_priority_email_is_immediate_and_digest_flushes(
    running: Running, reader: Any, event: Event
) -> None:
    await running.preferences(prefs("r6", email_digest="hourly"))
    await running.events(
        [
            event(actor="alice", recipients=["r6"]),
            event(actor="carol", recipients=["r6"], at=T0 + timedelta(seconds=1)),
            event(
                actor="dan",
                recipients=["r6"],
                event_type="user.followed",
                obj=("user", "r6"),
                title=None,
            ),
            event(
                actor="erin",
                recipients=["r6"],
                event_type="repo.member_added",
                obj=("repo", "o/r"),
                title="o/r",
                priority="high",
            ),
        ]
    )
    notes = await reader(running.settings.topic(NOTIFICATIONS))
    await notes.wait_for(lambda r: len(of(r, "r6")) >= 4)
    emails = await reader(running.settings.topic(EMAIL_REQUESTS))

    def mine(records: list[bytes]) -> list[EmailRequest]:
        return [e for e in map(EmailRequest.from_bytes, records) if e.recipient_id == "r6"]

    await emails.wait_for(lambda r: len(mine(r)) >= 1)
    now = running.clock.now()
    due = now.replace(minute=0, second=0, microsecond=0) + timedelta(hours=1)
    running.clock.set(due + timedelta(seconds=1))
    await emails.wait_for(lambda r: len(mine(r)) >= 2)
    records = await emails.settle(0.5)
    immediate, digest = mine(records)
    assert (immediate.kind, digest.kind) == (EmailKind.IMMEDIATE, EmailKind.DIGEST)
    assert immediate.items[0].title == "erin added you as a collaborator to o/r"
    assert digest.request_id == f"digest:r6:{due:%Y%m%dT%H%MZ}"
    assert digest.period_end == due
    assert sorted(i.title for i in digest.items) == [
        "carol and alice liked your post “Hello”",
        "dan started following you",
    ]
    assert [i.version for i in digest.items if i.type == "post.liked"] == [2]


async def test_audience_fan_out_to_all_and_segment(
    running: Running, reader: Any, event: Event
) -> None:
    profiles = [
        UserProfile.model_validate(
            {
                "user_id": f"m{i}",
                "name": f"Member {i}",
                "segments": ["beta"] if i % 3 == 0 else [],
                "updated_at": T0.isoformat(),
            }
        )
        for i in range(30)
    ]
    await running.send(USER_PROFILES, list(profiles), lambda p: p.user_id)
    store = running.service.store
    deadline = time.monotonic() + 20
    while int(await running.service.redis.scard(store.key("users"))) < 30:
        assert time.monotonic() < deadline, "profiles were not materialised"
        await asyncio.sleep(0.05)
    await running.events(
        [
            event(
                actor="m0",
                audience={"all": True},
                event_type="clarion.announcement",
                obj=("announcement", "a1"),
                title="Maintenance",
                data={"body": "Tonight 22:00"},
            ),
            event(
                actor="admin",
                audience={"segment": "beta"},
                event_type="clarion.announcement",
                obj=("announcement", "a2"),
                title="Beta news",
            ),
        ]
    )
    notes = await reader(running.settings.topic(NOTIFICATIONS))

    def announced(records: list[bytes]) -> list[Notification]:
        return [n for n in map(Notification.from_bytes, records) if n.type.startswith("clarion.")]

    await notes.wait_for(lambda r: len(announced(r)) >= 29 + 10)
    parsed = announced(await notes.settle(0.5))
    everyone = [n.recipient_id for n in parsed if n.object.id == "a1"]
    beta = [n.recipient_id for n in parsed if n.object.id == "a2"]
    assert sorted(everyone) == sorted(f"m{i}" for i in range(1, 30))
    assert sorted(beta) == sorted(f"m{i}" for i in range(0, 30, 3))
    sample = next(n for n in parsed if n.object.id == "a1")
    assert (sample.title, sample.body, sample.category) == (
        "Maintenance",
        "Tonight 22:00",
        "announcements",
    )


async def test_invalid_record_goes_to_the_dlq(running: Running, reader: Any, event: Event) -> None:
    topic = running.settings.topic(DOMAIN_EVENTS)
    await (await running.producer.send(topic, b'{"type": "post.liked"}', key=b"r8"))
    await running.events([event(actor="alice", recipients=["r8"])])
    notes = await reader(running.settings.topic(NOTIFICATIONS))
    await notes.wait_for(lambda r: len(of(r, "r8")) >= 1)
    dlq = await reader(running.settings.dlq(DOMAIN_EVENTS))
    dead = await dlq.wait_for(lambda r: len(r) >= 1)
    assert dead == [b'{"type": "post.liked"}']
