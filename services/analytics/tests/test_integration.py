"""Analytics on the embedded stack: records published to Kafka as the other services would,
duplicates included, then exact counts and percentiles read back through the HTTP API."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from analytics_messages import make_inbox, make_notification, make_presence, make_status
from prometheus_client import CollectorRegistry

from clarion_analytics.app import create_app
from clarion_analytics.domain.latency import GROWTH, histogram_of, percentile
from clarion_analytics.settings import AnalyticsSettings
from clarion_contracts.base import Channel, ContractModel
from clarion_contracts.registry import (
    DELIVERY_STATUS,
    INBOX_EVENTS,
    NOTIFICATIONS,
    PRESENCE,
    TopicSpec,
)
from clarion_contracts.v1 import DeliveryState, InboxAction, PresenceStatus
from clarion_kit.auth import issue_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(180)]

TYPE_A = "repo.starred"
TYPE_B = "issue.opened"


@dataclass
class Running:
    """A running analytics app with an HTTP client, a producer and its settings."""

    settings: AnalyticsSettings
    client: httpx.AsyncClient
    producer: AIOKafkaProducer
    registry: CollectorRegistry
    app: Any

    async def publish(self, spec: TopicSpec, key: str, message: ContractModel | bytes) -> None:
        value = message if isinstance(message, bytes) else message.to_bytes()
        await self.producer.send_and_wait(self.settings.topic(spec), value, key=key.encode())

    def admin_headers(self) -> dict[str, str]:
        token = issue_token(self.settings, "ops", scopes=("admin",))
        return {"Authorization": f"Bearer {token}"}

    async def get(self, path: str, **params: Any) -> Any:
        response = await self.client.get(path, params=params, headers=self.admin_headers())
        assert response.status_code == 200, response.text
        return response.json()

    def metric(self, name: str, **labels: str) -> float:
        value = self.registry.get_sample_value(name, labels)
        return value or 0.0


async def eventually(check: Callable[[], Awaitable[bool]], timeout: float = 60.0) -> None:
    """Poll ``check`` until it returns True (fails the test after ``timeout`` seconds)."""
    deadline = time.monotonic() + timeout
    while True:
        if await check():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        await asyncio.sleep(0.2)


@pytest.fixture
async def analytics(
    devstack: Any, topic_prefix: str, fresh_database_url: str
) -> AsyncIterator[Running]:
    settings = AnalyticsSettings(
        kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
        database_url=fresh_database_url,
        topic_prefix=topic_prefix,
        consumer_group=f"analytics-{topic_prefix}",
        environment="development",
        kafka_partitions_override=2,
        batch_timeout_ms=20,
        log_json=False,
        log_level="WARNING",
    )
    registry = CollectorRegistry()
    app = create_app(settings, registry=registry)
    producer = AIOKafkaProducer(
        bootstrap_servers=devstack.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    async with app.router.lifespan_context(app):
        await producer.start()
        transport = httpx.ASGITransport(app=app)
        try:
            async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as c:
                yield Running(settings, c, producer, registry, app)
        finally:
            await producer.stop()


def _range_params(day: datetime) -> dict[str, str]:
    start = day.replace(hour=0, minute=0, second=0, microsecond=0)
    return {"from": start.isoformat(), "to": (start + timedelta(days=1)).isoformat()}


async def test_counts_are_exact_with_duplicates_and_out_of_order_records(
    analytics: Running,
) -> None:
    a = analytics
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=5)
    # Three notifications created "now"; n1 is updated twice (aggregation), n3 is email only.
    n1 = make_notification("n1", created_at=now, channels=(Channel.IN_APP, Channel.PUSH))
    n1v2 = make_notification("n1", version=2, created_at=now)
    n1v3 = make_notification("n1", version=3, created_at=now)
    n2 = make_notification(
        "n2", type_=TYPE_B, created_at=now, channels=(Channel.IN_APP, Channel.EMAIL)
    )
    n3 = make_notification("n3", created_at=now, channels=(Channel.EMAIL,))
    for n in (n1, n1v2, n1v3, n2, n3):
        await a.publish(NOTIFICATIONS, n.recipient_id, n)
        await a.publish(NOTIFICATIONS, n.recipient_id, n)  # at-least-once: a duplicate

    # A delivery reported BEFORE its notification reaches analytics (n4, created now).
    early = make_status(
        "n4", Channel.IN_APP, DeliveryState.DELIVERED, at=now + timedelta(milliseconds=70)
    )
    await a.publish(DELIVERY_STATUS, "n4", early)

    in_app_ms = [40.0, 55.0, 80.0]
    statuses = [
        make_status(
            "n1", Channel.IN_APP, DeliveryState.DELIVERED, at=now + timedelta(milliseconds=40)
        ),
        make_status(
            "n2", Channel.IN_APP, DeliveryState.DELIVERED, at=now + timedelta(milliseconds=55)
        ),
        make_status(
            "n1", Channel.PUSH, DeliveryState.DELIVERED, at=now + timedelta(milliseconds=900)
        ),
        make_status("n1", Channel.PUSH, DeliveryState.CLICKED, at=now + timedelta(seconds=20)),
        make_status("n2", Channel.EMAIL, DeliveryState.FAILED, at=now, reason="smtp_550"),
        make_status("n3", Channel.EMAIL, DeliveryState.FAILED, at=now, reason="smtp_550"),
        make_status("n3", Channel.EMAIL, DeliveryState.BOUNCED, at=now, reason="mailbox_full"),
        # n1 version 2 delivered in-app 80 ms after that version was emitted.
        make_status(
            "n1",
            Channel.IN_APP,
            DeliveryState.DELIVERED,
            version=2,
            at=n1v2.updated_at + timedelta(milliseconds=80),
        ),
    ]
    for s in statuses:
        await a.publish(DELIVERY_STATUS, s.notification_id, s)
        await a.publish(DELIVERY_STATUS, s.notification_id, s)  # duplicate, same status_id

    read_1 = make_inbox(InboxAction.READ, ["n1", "n2"], at=now + timedelta(minutes=1))
    unread_1 = make_inbox(InboxAction.UNREAD, ["n1"], at=now + timedelta(minutes=2))
    read_again = make_inbox(InboxAction.READ, ["n1"], at=now + timedelta(minutes=3))
    for e in (read_1, unread_1, read_again):
        await a.publish(INBOX_EVENTS, e.recipient_id, e)
        await a.publish(INBOX_EVENTS, e.recipient_id, e)

    # A record that is not a notification at all: dead-lettered, not counted.
    await a.publish(NOTIFICATIONS, "mallory", b'{"not": "a notification"')

    params = _range_params(now)

    async def all_but_n4_counted() -> bool:
        totals = (await a.get("/v1/analytics/summary", **params))["totals"]
        return bool(
            totals["created"] == 3
            and totals["read"] == 2
            and totals["failed"] == 3
            and totals["clicked"] == 1
            and totals["delivered"]["push"] == 1
            and totals["delivered"]["in_app"] == 2
        )

    await eventually(all_but_n4_counted)
    # Every status record is applied by now; n4's delivery is held (no cohort yet).
    applied = a.metric(
        "clarion_analytics_messages_total", topic=DELIVERY_STATUS.name, outcome="applied"
    )
    assert applied == 9.0
    held = await a.get("/v1/analytics/summary", **params)
    assert held["totals"]["reached"] == 2

    # n4 arrives now; its earlier delivery is counted for its cohort and its latency computed.
    n4 = make_notification("n4", created_at=now)
    await a.publish(NOTIFICATIONS, n4.recipient_id, n4)
    await a.publish(NOTIFICATIONS, n4.recipient_id, n4)

    async def n4_counted() -> bool:
        body = await a.get("/v1/analytics/summary", **params)
        return bool(body["totals"]["created"] == 4 and body["totals"]["reached"] == 3)

    await eventually(n4_counted)
    summary = await a.get("/v1/analytics/summary", **params)
    totals = summary["totals"]
    assert totals["created"] == 4
    assert totals["updated"] == 2  # n1 versions 2 and 3, each once despite duplicates
    assert totals["routed"] == {"in_app": 3, "push": 1, "email": 2}
    assert totals["delivered"] == {"in_app": 3, "push": 1, "email": 0}
    assert totals["reached"] == 3  # n1, n2, n4
    assert totals["read"] == 2  # n1 read twice (read, unread, read) counts once
    assert totals["clicked"] == 1
    assert totals["failed"] == 3
    assert totals["failed_by_channel"] == {"in_app": 0, "push": 0, "email": 3}
    assert summary["inbox"] == {"read": 2, "unread": 1, "deleted": 0, "all_read": 0}
    by_type = {t["type"]: t for t in summary["types"]}
    assert by_type[TYPE_A]["created"] == 3
    assert by_type[TYPE_B]["created"] == 1
    assert by_type[TYPE_B]["failed"] == 1
    assert [d["created"] for d in summary["days"]] == [4]

    # The type filter narrows every metric.
    only_b = await a.get("/v1/analytics/summary", type=TYPE_B, **params)
    assert only_b["totals"]["created"] == 1
    assert only_b["totals"]["delivered"]["in_app"] == 1

    funnel = await a.get("/v1/analytics/funnel", **params)
    steps = {s["step"]: s for s in funnel["steps"]}
    assert [s["step"] for s in funnel["steps"]] == ["created", "reached", "read", "clicked"]
    assert steps["created"]["count"] == 4
    assert steps["reached"]["count"] == 3
    assert steps["reached"]["from_previous"] == pytest.approx(0.75)
    assert steps["read"]["count"] == 2
    assert steps["clicked"]["from_first"] == pytest.approx(0.25)
    push = {s["step"]: s["count"] for s in funnel["channels"]["push"]}
    assert push == {"routed": 1, "delivered": 1, "clicked": 1}

    failures = await a.get("/v1/analytics/failures", **params)
    assert failures["total"] == 3
    assert failures["by_reason"] == [
        {"reason": "smtp_550", "count": 2},
        {"reason": "mailbox_full", "count": 1},
    ]
    assert {r["type"]: r["count"] for r in failures["by_type"]} == {TYPE_A: 2, TYPE_B: 1}
    only_push = await a.get("/v1/analytics/failures", channel="push", **params)
    assert only_push["total"] == 0

    # Latency: in-app deliveries at 40, 55, 80 (n1 v2) and 70 ms (n4, computed late).
    in_app_ms = [*in_app_ms, 70.0]
    latency = await a.get(
        "/v1/analytics/latency",
        **{
            "from": (now - timedelta(minutes=10)).isoformat(),
            "to": (now + timedelta(minutes=10)).isoformat(),
        },
    )
    stages = {(s["stage"], s["channel"]): s for s in latency["stages"]}
    in_app = stages[("notification_to_delivery", "in_app")]
    assert in_app["count"] == 4
    expected = histogram_of(in_app_ms)
    for q, name in ((0.5, "p50_ms"), (0.9, "p90_ms"), (0.99, "p99_ms")):
        assert in_app[name] == pytest.approx(percentile(expected, q))
    exact_p50 = sorted(in_app_ms)[1]  # nearest rank ceil(0.5 * 4) = 2
    assert exact_p50 / GROWTH <= in_app["p50_ms"] <= exact_p50 * GROWTH
    assert stages[("notification_to_delivery", "push")]["count"] == 1
    assert stages[("notification_to_delivery", "push")]["p50_ms"] == pytest.approx(
        900.0, rel=GROWTH - 1
    )
    event_stage = stages[("event_to_notification", "*")]
    assert event_stage["count"] == 6  # distinct versions: n1 x3, n2, n3, n4
    assert event_stage["p99_ms"] == pytest.approx(100.0, rel=GROWTH - 1)
    assert sum(p["count"] for p in in_app["series"]) == 4

    # Redeliveries were absorbed, the poison record went to the DLQ.
    assert (
        a.metric("clarion_analytics_messages_total", topic=NOTIFICATIONS.name, outcome="poison")
        == 1.0
    )
    assert (
        a.metric("clarion_analytics_messages_total", topic=DELIVERY_STATUS.name, outcome="applied")
        == 9.0
    )
    assert (
        a.metric(
            "clarion_analytics_messages_total", topic=DELIVERY_STATUS.name, outcome="duplicate"
        )
        == 8.0
    )
    lags = [
        sample.value
        for family in a.registry.collect()
        if family.name == "clarion_analytics_consumer_lag"
        for sample in family.samples
    ]
    assert lags
    assert all(lag == 0 for lag in lags)  # everything published was consumed

    # Retention drops dedup keys and facts, never the aggregates.
    pruned = await a.app.state.repo.prune(
        dedup_before=now + timedelta(days=1), facts_before=now + timedelta(days=1)
    )
    assert pruned >= 4 + 6 + 9 + 3  # states, versions, status keys, inbox keys
    assert (await a.get("/v1/analytics/summary", **params))["totals"] == totals

    dlq = await _read_one(a, a.settings.dlq(NOTIFICATIONS))
    assert dlq.value == b'{"not": "a notification"'
    headers = {k: v.decode() for k, v in dlq.headers}
    assert headers["x-clarion-error-type"] == "ValidationError"
    assert headers["x-clarion-original-topic"] == a.settings.topic(NOTIFICATIONS)


async def _read_one(a: Running, topic: str) -> Any:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=a.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        batch = await consumer.getmany(timeout_ms=10_000, max_records=1)
        records = [r for part in batch.values() for r in part]
        assert records, f"nothing on {topic}"
        return records[0]
    finally:
        await consumer.stop()


async def test_users_online_over_time_from_presence(analytics: Running) -> None:
    a = analytics
    t = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(minutes=30)
    events = [
        make_presence("u1", PresenceStatus.ONLINE, at=t + timedelta(seconds=1)),
        make_presence("u2", PresenceStatus.ONLINE, at=t + timedelta(seconds=2)),
        make_presence("u3", PresenceStatus.ONLINE, at=t + timedelta(seconds=3), instance="gw-2"),
        # u1 connects on a second instance, then leaves the first one: still online.
        make_presence("u1", PresenceStatus.ONLINE, at=t + timedelta(minutes=1), instance="gw-2"),
        make_presence("u1", PresenceStatus.OFFLINE, at=t + timedelta(minutes=1, seconds=5)),
        make_presence("u2", PresenceStatus.OFFLINE, at=t + timedelta(minutes=2)),
    ]
    for e in events:
        await a.publish(PRESENCE, e.user_id, e)
        await a.publish(PRESENCE, e.user_id, e)  # duplicate
    # A stale report (older than gw-1's offline for u1) must not bring u1 back there.
    stale = make_presence("u1", PresenceStatus.ONLINE, at=t + timedelta(seconds=30))
    await a.publish(PRESENCE, stale.user_id, stale)

    params = {
        "from": (t - timedelta(minutes=2)).isoformat(),
        "to": (t + timedelta(minutes=5)).isoformat(),
        "step": "60",
    }

    async def all_applied() -> bool:
        applied = a.metric(
            "clarion_analytics_messages_total", topic=PRESENCE.name, outcome="applied"
        )
        return applied == 7.0

    await eventually(all_applied)
    body = await a.get("/v1/analytics/online", **params)
    assert body["current"] == 2  # u1 (via gw-2) and u3
    series = {p["t"]: p for p in body["series"]}
    minute0 = series[t.isoformat()]
    assert minute0["online"] == 3
    assert minute0["peak"] == 3
    assert minute0["went_online"] == 3
    wide = await a.get("/v1/analytics/online", **{**params, "step": "300"})
    assert wide["series"][0]["t"] <= params["from"]  # steps are aligned on the epoch
    assert max(p["peak"] for p in wide["series"]) == 3
    assert wide["series"][-1]["online"] == 2
    assert sum(p["went_online"] for p in wide["series"]) == 3
    assert sum(p["went_offline"] for p in wide["series"]) == 1
    assert series[(t + timedelta(minutes=1)).isoformat()]["online"] == 3  # u1 never left
    m2 = series[(t + timedelta(minutes=2)).isoformat()]
    assert m2["online"] == 2
    assert m2["went_offline"] == 1
    assert series[(t + timedelta(minutes=4)).isoformat()]["online"] == 2  # carried forward
    assert series[(t - timedelta(minutes=1)).isoformat()]["online"] == 0
    assert (
        a.metric("clarion_analytics_messages_total", topic=PRESENCE.name, outcome="duplicate")
        == 6.0
    )


async def test_api_rejects_bad_ranges_and_serves_probes(analytics: Running) -> None:
    a = analytics
    now = datetime.now(UTC)
    response = await a.client.get(
        "/v1/analytics/summary",
        params={"from": now.isoformat(), "to": (now - timedelta(hours=1)).isoformat()},
        headers=a.admin_headers(),
    )
    assert response.status_code == 422
    assert response.headers["content-type"].startswith("application/problem+json")
    assert response.json()["type"] == "/problems/invalid-range"
    too_long = await a.client.get(
        "/v1/analytics/latency",
        params={"from": (now - timedelta(days=500)).isoformat()},
        headers=a.admin_headers(),
    )
    assert too_long.status_code == 422
    ready = await a.client.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert set(ready.json()["checks"]) == {"postgres", "kafka"}
    metrics = await a.client.get("/metrics")
    assert "clarion_analytics_http_requests_total" in metrics.text
    empty = await a.get("/v1/analytics/summary")
    assert empty["totals"]["created"] == 0
    assert len(empty["days"]) in (1, 2)  # the last 24 hours touch one or two UTC days
    assert json.dumps(empty)  # plain JSON all the way down


async def test_replaying_every_topic_from_the_start_changes_nothing(
    devstack: Any, topic_prefix: str, fresh_database_url: str
) -> None:
    """A second consumer group re-reads all records into the same database (as after lost
    offsets or a restore): the dedup keys absorb the whole replay."""

    def settings_for(group: str) -> AnalyticsSettings:
        return AnalyticsSettings(
            kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
            database_url=fresh_database_url,
            topic_prefix=topic_prefix,
            consumer_group=f"{group}-{topic_prefix}",
            kafka_partitions_override=2,
            batch_timeout_ms=20,
            log_json=False,
            log_level="WARNING",
        )

    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    first = settings_for("first")
    producer = AIOKafkaProducer(
        bootstrap_servers=devstack.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    token = {"Authorization": f"Bearer {issue_token(first, 'ops', scopes=('admin',))}"}
    params = _range_params(now)

    async def run(settings: AnalyticsSettings, publish: bool) -> dict[str, Any]:
        registry = CollectorRegistry()
        app = create_app(settings, registry=registry)
        async with app.router.lifespan_context(app):
            if publish:
                await producer.start()
                try:
                    for i in range(20):
                        n = make_notification(f"r{i}", created_at=now)
                        await producer.send(settings.topic(NOTIFICATIONS), n.to_bytes())
                        s = make_status(f"r{i}", Channel.IN_APP, DeliveryState.DELIVERED, at=now)
                        await producer.send(settings.topic(DELIVERY_STATUS), s.to_bytes())
                    await producer.flush()
                finally:
                    await producer.stop()

            def applied_or_duplicate() -> float:
                return sum(
                    registry.get_sample_value(
                        "clarion_analytics_messages_total", {"topic": t.name, "outcome": o}
                    )
                    or 0.0
                    for t in (NOTIFICATIONS, DELIVERY_STATUS)
                    for o in ("applied", "duplicate")
                )

            async def all_consumed() -> bool:
                return applied_or_duplicate() == 40.0

            await eventually(all_consumed)
            transport = httpx.ASGITransport(app=app)
            async with httpx.AsyncClient(transport=transport, base_url="http://a") as client:
                response = await client.get("/v1/analytics/summary", params=params, headers=token)
                assert response.status_code == 200
                return dict(response.json()["totals"])

    before = await run(first, publish=True)
    assert before["created"] == 20
    assert before["delivered"]["in_app"] == 20
    after = await run(settings_for("second"), publish=False)
    assert after == before


async def test_values_the_database_refuses_are_dead_lettered_alone(analytics: Running) -> None:
    a = analytics
    now = datetime.now(UTC).replace(microsecond=0) - timedelta(minutes=1)
    good = [make_notification(f"ok{i}", created_at=now) for i in range(3)]
    # A version beyond BIGINT (the contract only says >= 1).
    huge_version = make_notification("v", version=2, created_at=now).model_copy(
        update={"version": 2**70}
    )
    # An id larger than a btree index row may be (~2.7 kB), random so it cannot compress.
    huge_id = make_notification(secrets.token_hex(6000), created_at=now)
    for n in (good[0], huge_version, good[1], huge_id, good[2]):
        await a.producer.send(a.settings.topic(NOTIFICATIONS), n.to_bytes(), key=b"alice")
    await a.producer.flush()
    params = _range_params(now)

    async def good_ones_counted() -> bool:
        body = await a.get("/v1/analytics/summary", **params)
        poisoned = a.metric(
            "clarion_analytics_messages_total", topic=NOTIFICATIONS.name, outcome="poison"
        )
        return bool(body["totals"]["created"] == 3 and poisoned == 2.0)

    await eventually(good_ones_counted)
    consumer = AIOKafkaConsumer(
        a.settings.dlq(NOTIFICATIONS),
        bootstrap_servers=a.settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        fetch_max_wait_ms=10,
    )
    await consumer.start()
    try:
        found: list[Any] = []
        deadline = time.monotonic() + 20
        while len(found) < 2 and time.monotonic() < deadline:
            batch = await consumer.getmany(timeout_ms=1000)
            found.extend(r for part in batch.values() for r in part)
    finally:
        await consumer.stop()
    ids = sorted(len(json.loads(r.value)["notification_id"]) for r in found)
    assert ids == [1, 12000]
