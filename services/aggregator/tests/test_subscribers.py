"""Unit tests of the Kafka wiring with FastStream's TestKafkaBroker (no broker, no Redis).

The store is an in-memory stand-in built on the reference aggregation rule
(:class:`~clarion_aggregator.domain.grouping.InMemoryGroups`); the real Redis
store is covered by the integration tests.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import AsyncIterator, Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from faststream.kafka import KafkaBroker, TestKafkaBroker

from clarion_aggregator.adapters.kafka import KafkaPublisher, create_broker
from clarion_aggregator.adapters.redis_store import (
    AggregateInput,
    DigestEntry,
    GroupSnapshot,
    UserContext,
)
from clarion_aggregator.domain.clock import ManualClock
from clarion_aggregator.domain.grouping import InMemoryGroups, Outcome
from clarion_aggregator.domain.rendering import Renderer
from clarion_aggregator.domain.rules import load_rules
from clarion_aggregator.handlers.pipeline import Pipeline
from clarion_aggregator.handlers.subscribers import register
from clarion_aggregator.metrics import AggregatorMetrics
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.registry import (
    DOMAIN_EVENTS,
    NOTIFICATIONS,
    PREFERENCES,
    PRESENCE,
    PUSH_REQUESTS,
    USER_PROFILES,
)
from clarion_contracts.v1 import (
    DomainEvent,
    Notification,
    Preferences,
    PresenceEvent,
    PushRequest,
    UserProfile,
)

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


@dataclass
class MemoryStore:
    """The subset of RedisStateStore the pipeline and subscribers use, in memory."""

    groups: InMemoryGroups = field(default_factory=InMemoryGroups)
    prefs: dict[str, Preferences] = field(default_factory=dict)
    profiles: dict[str, UserProfile] = field(default_factory=dict)
    online: set[str] = field(default_factory=set)
    digests: list[DigestEntry] = field(default_factory=list)
    contexts: dict[str, str] = field(default_factory=dict)

    async def aggregate_many(self, items: Sequence[AggregateInput]) -> list[GroupSnapshot | None]:
        out: list[GroupSnapshot | None] = []
        for it in items:
            outcome, g = self.groups.apply(
                recipient_id=it.recipient_id,
                event_type=it.event_type,
                object_ref=it.object_ref,
                event_id=it.event_id,
                occurred_ms=it.occurred_ms,
                actor_id=str(it.actor[0]),
                actor_name=str(it.actor[1]),
                window_ms=it.window_ms,
                max_actors=it.max_actors,
            )
            if outcome is not Outcome.DUPLICATE:
                self.contexts[g.notification_id] = it.context
            out.append(
                GroupSnapshot(
                    outcome=outcome,
                    notification_id=g.notification_id,
                    version=g.version,
                    actor_count=g.actor_count,
                    actors=[[a, n, None] for a, n in g.actors],
                    event_ids=list(g.event_ids),
                    first_occurred_ms=g.first_occurred_ms,
                    last_occurred_ms=g.last_occurred_ms,
                    created_ms=it.now_ms,
                    updated_ms=it.now_ms,
                    context_json=self.contexts[g.notification_id],
                    alert_version=g.version if it.alert_wanted else None,
                )
            )
        return out

    async def load_contexts(self, user_ids: Iterable[str]) -> dict[str, UserContext]:
        return {
            u: UserContext(
                prefs=self.prefs.get(u),
                locale=self.profiles[u].locale if u in self.profiles else None,
                timezone=self.profiles[u].timezone if u in self.profiles else None,
                online=u in self.online,
            )
            for u in user_ids
        }

    async def add_digest_items(self, entries: Sequence[DigestEntry]) -> None:
        self.digests.extend(entries)

    async def put_preferences_many(self, items: Sequence[Preferences]) -> None:
        self.prefs.update({p.user_id: p for p in items})

    async def put_profiles(self, items: Sequence[UserProfile]) -> None:
        self.profiles.update({p.user_id: p for p in items})

    async def put_presence(self, event: PresenceEvent) -> None:
        if event.status == "online":
            self.online.add(event.user_id)
        else:
            self.online.discard(event.user_id)

    async def audience(
        self, *, segment: str | None = None, batch_size: int = 1000
    ) -> AsyncIterator[list[str]]:
        users = [
            u for u, p in sorted(self.profiles.items()) if segment is None or segment in p.segments
        ]
        for i in range(0, len(users), batch_size):
            yield users[i : i + batch_size]


@dataclass
class Wired:
    broker: KafkaBroker
    store: MemoryStore
    settings: AggregatorSettings
    received: dict[str, list[Any]]


@pytest.fixture
async def wired() -> AsyncIterator[Wired]:
    settings = AggregatorSettings(topic_prefix="unit.", environment="test", fanout_batch_size=2)
    broker = create_broker(settings)
    store = MemoryStore()
    publisher = KafkaPublisher(broker)
    metrics = AggregatorMetrics.create()
    pipeline = Pipeline(
        settings,
        store,
        publisher,
        load_rules(),
        Renderer(),
        ManualClock(T0),
        metrics,  # type: ignore[arg-type]
    )
    register(broker, settings, pipeline, store, publisher, metrics)  # type: ignore[arg-type]
    received: dict[str, list[Any]] = {"notifications": [], "push": [], "dlq": []}

    @broker.subscriber(settings.topic(NOTIFICATIONS))
    async def _notes(body: Any) -> None:
        received["notifications"].append(Notification.model_validate(body))

    @broker.subscriber(settings.topic(PUSH_REQUESTS))
    async def _pushes(body: Any) -> None:
        received["push"].append(PushRequest.model_validate(body))

    @broker.subscriber(settings.dlq(DOMAIN_EVENTS))
    async def _dead(body: Any) -> None:
        received["dlq"].append(body)

    async with TestKafkaBroker(broker):
        yield Wired(broker, store, settings, received)


def like(actor: str, seconds: int = 0, recipients: list[str] | None = None) -> DomainEvent:
    return DomainEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "type": "post.liked",
            "occurred_at": (T0 + timedelta(seconds=seconds)).isoformat(),
            "actor": {"id": actor, "name": actor},
            "recipients": recipients or ["bob"],
            "object": {"type": "post", "id": "p1", "title": "Hello"},
        }
    )


async def test_domain_events_become_notifications_and_pushes(wired: Wired) -> None:
    topic = wired.settings.topic(DOMAIN_EVENTS)
    await wired.broker.publish(like("alice").to_bytes(), topic, key=b"bob")
    await wired.broker.publish(like("carol", 10).to_bytes(), topic, key=b"bob")
    notes = wired.received["notifications"]
    assert [(n.version, n.actor_count) for n in notes] == [(1, 1), (2, 2)]
    assert notes[1].title == "carol and alice liked your post “Hello”"
    assert [p.version for p in wired.received["push"]] == [1, 2]
    assert len(wired.store.digests) == 2


async def test_online_user_gets_no_push(wired: Wired) -> None:
    presence = PresenceEvent(
        event_id=uuid.uuid4(),
        user_id="bob",
        status="online",
        sessions=1,
        instance_id="gw",
        occurred_at=T0,
    )
    await wired.broker.publish(presence.to_bytes(), wired.settings.topic(PRESENCE), key=b"bob")
    assert wired.store.online == {"bob"}
    await wired.broker.publish(like("alice").to_bytes(), wired.settings.topic(DOMAIN_EVENTS))
    assert len(wired.received["notifications"]) == 1
    assert wired.received["push"] == []


async def test_preferences_and_profiles_are_materialised(wired: Wired) -> None:
    prefs = Preferences(user_id="bob", muted_objects=["post:p1"], updated_at=T0)
    profile = UserProfile(user_id="eve", name="Eve", segments=["beta"], updated_at=T0)
    await wired.broker.publish(prefs.to_bytes(), wired.settings.topic(PREFERENCES))
    await wired.broker.publish(profile.to_bytes(), wired.settings.topic(USER_PROFILES))
    assert wired.store.prefs == {"bob": prefs}
    assert wired.store.profiles == {"eve": profile}
    await wired.broker.publish(
        like("alice", recipients=["bob", "eve"]).to_bytes(), wired.settings.topic(DOMAIN_EVENTS)
    )
    assert [n.recipient_id for n in wired.received["notifications"]] == ["eve"]


async def test_audience_fans_out_in_batches(wired: Wired) -> None:
    for i in range(5):
        profile = UserProfile(user_id=f"u{i}", name="U", updated_at=T0)
        await wired.broker.publish(profile.to_bytes(), wired.settings.topic(USER_PROFILES))
    event = DomainEvent.model_validate(
        {
            "event_id": str(uuid.uuid4()),
            "type": "clarion.announcement",
            "occurred_at": T0.isoformat(),
            "actor": {"id": "u0", "name": "Admin"},
            "audience": {"all": True},
            "object": {"type": "announcement", "id": "a1", "title": "Hi"},
        }
    )
    await wired.broker.publish(event.to_bytes(), wired.settings.topic(DOMAIN_EVENTS))
    got = sorted(n.recipient_id for n in wired.received["notifications"])
    assert got == ["u1", "u2", "u3", "u4"]


async def test_invalid_record_is_dead_lettered_and_the_batch_goes_on(wired: Wired) -> None:
    topic = wired.settings.topic(DOMAIN_EVENTS)
    await wired.broker.publish_batch(b'{"not": "an event"}', like("alice").to_bytes(), topic=topic)
    assert len(wired.received["dlq"]) == 1
    assert json.loads(json.dumps(wired.received["dlq"][0])) == {"not": "an event"}
    assert len(wired.received["notifications"]) == 1
