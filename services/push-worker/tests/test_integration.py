"""push-worker on the embedded stack, delivering to a local push service that decrypts."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import httpx
import pytest

from clarion_contracts.registry import PUSH_REQUESTS
from clarion_contracts.v1 import DeliveryState, PushRequest, PushSubscription, utc_now
from clarion_push.domain.headers import derive_topic

pytestmark = pytest.mark.integration


def push_request(n: int, user: str, **overrides: Any) -> PushRequest:
    data: dict[str, Any] = {
        "request_id": f"notif-{n}:1:push",
        "notification_id": f"notif-{n}",
        "version": 1,
        "recipient_id": user,
        "type": "post.liked",
        "category": "social",
        "title": f"bob liked your post {n}",
        "body": "“Hello” — ünïcode body",
        "url": f"https://app.example.com/posts/{n}",
        "urgency": "high",
        "ttl_seconds": 3600,
        "created_at": utc_now(),
    }
    data.update(overrides)
    return PushRequest.model_validate(data)


async def send(harness: Any, request: PushRequest) -> None:
    await harness.publish(PUSH_REQUESTS, request.recipient_id, request.to_bytes())


async def test_offline_user_gets_the_decrypted_payload_once(
    harness: Any, push_service: Any, wait_until: Any
) -> None:
    await harness.subscribe("laptop", "alice")
    await harness.subscribe("phone", "alice")
    request = push_request(1, "alice", topic="post1")
    await send(harness, request)

    await wait_until(lambda: len([r for r in push_service.received if r.status == 201]) == 2)
    assert [r.error for r in push_service.received] == [None, None]
    for name in ("laptop", "phone"):
        (got,) = push_service.for_endpoint(name)
        assert got.payload == {
            "title": "bob liked your post 1",
            "body": "“Hello” — ünïcode body",
            "url": "https://app.example.com/posts/1",
            "notification_id": "notif-1",
            "version": 1,
            "type": "post.liked",
            "category": "social",
            "icon": None,
        }
        assert got.headers["TTL"] == "3600"
        assert got.headers["Urgency"] == "high"
        assert got.headers["Topic"] == "post1"
        assert got.claims["aud"] == f"http://127.0.0.1:{push_service.port}"
        assert got.claims["sub"] == "mailto:ops@clarion.test"

    delivered = await wait_until(
        lambda: (
            [
                s
                for s in harness.statuses()
                if s.request_id == request.request_id and s.status is DeliveryState.DELIVERED
            ]
            if len(harness.statuses()) >= 2
            else None
        )
    )
    assert len(delivered) == 2
    assert {s.channel.value for s in delivered} == {"push"}
    assert all(s.notification_id == "notif-1" for s in delivered)

    # Redelivery of the same request, then a later one for the same user (same partition):
    # once the later one is delivered the duplicate was handled, and it sent nothing.
    await send(harness, request)
    await send(harness, push_request(2, "alice"))
    await wait_until(lambda: len([r for r in push_service.received if r.status == 201]) >= 4)
    await harness.worker.dispatcher.drain(timeout=10)
    paths = [(r.path, r.payload["notification_id"]) for r in push_service.received]
    assert sorted(paths) == sorted(
        [
            ("/push/laptop", "notif-1"),
            ("/push/phone", "notif-1"),
            ("/push/laptop", "notif-2"),
            ("/push/phone", "notif-2"),
        ]
    )
    # Without a topic in the request, the notification's derived topic is used.
    later = [r for r in push_service.received if r.payload["notification_id"] == "notif-2"]
    assert {r.headers["Topic"] for r in later} == {derive_topic("notif-2")}


async def test_gone_subscription_is_removed_and_tombstoned(
    harness: Any, push_service: Any, wait_until: Any
) -> None:
    await harness.subscribe("old", "bob")
    push_service.script("old", [(410, {})])
    await send(harness, push_request(3, "bob"))

    failed = await wait_until(
        lambda: [s for s in harness.statuses() if s.status is DeliveryState.FAILED]
    )
    assert failed[0].reason == "gone"
    assert await harness.worker.dispatcher.store.get("sub-old") is None
    assert await harness.worker.dispatcher.store.for_user("bob") == []

    subs_topic = harness.settings.topic("clarion.push-subscriptions.v1")

    def tombstones() -> list[PushSubscription]:
        return [
            PushSubscription.from_bytes(r.value)
            for r in harness.tap.values(subs_topic)
            if not PushSubscription.from_bytes(r.value).active
        ]

    (tombstone,) = await wait_until(tombstones)
    assert tombstone.subscription_id == "sub-old"
    assert tombstone.user_id == "bob"
    assert tombstone.reason == "push_service_410"

    # The next request finds no subscription and says so.
    await send(harness, push_request(4, "bob"))
    skipped = await wait_until(
        lambda: [s for s in harness.statuses() if s.status is DeliveryState.SKIPPED]
    )
    assert skipped[0].reason == "no_subscription"
    assert len(push_service.for_endpoint("old")) == 1


async def test_429_retry_after_is_honoured(
    harness: Any, push_service: Any, wait_until: Any
) -> None:
    await harness.subscribe("busy", "carol")
    push_service.script("busy", [(429, {"Retry-After": "1"})])
    await send(harness, push_request(5, "carol"))

    await wait_until(lambda: len(push_service.for_endpoint("busy")) == 2)
    first, second = push_service.for_endpoint("busy")
    assert (first.status, second.status) == (429, 201)
    assert second.arrived - first.arrived >= 1.0  # not before Retry-After
    assert second.payload == first.payload

    states = await wait_until(
        lambda: (
            [(s.status, s.attempt) for s in harness.statuses()]
            if any(s.status is DeliveryState.DELIVERED for s in harness.statuses())
            else None
        )
    )
    assert (DeliveryState.RETRYING, 1) in states
    assert (DeliveryState.DELIVERED, 2) in states
    retrying = next(s for s in harness.statuses() if s.status is DeliveryState.RETRYING)
    assert retrying.reason == "rate_limited"


async def test_413_trims_the_body_and_retries_once(
    harness: Any, push_service: Any, wait_until: Any
) -> None:
    await harness.subscribe("small", "dave")
    push_service.script("small", [(413, {})])
    await send(harness, push_request(6, "dave", body="word " * 600))

    await wait_until(lambda: len(push_service.for_endpoint("small")) == 2)
    refused, accepted = push_service.for_endpoint("small")
    assert refused.status == 413
    assert accepted.status == 201
    assert len(json.dumps(accepted.payload)) < len(json.dumps(refused.payload))
    assert accepted.payload["body"].endswith("…")
    assert accepted.payload["title"] == refused.payload["title"]
    delivered = await wait_until(
        lambda: [s for s in harness.statuses() if s.status is DeliveryState.DELIVERED]
    )
    assert delivered[0].reason == "trimmed"


async def test_retries_run_out_into_the_dlq(
    harness: Any, push_service: Any, wait_until: Any
) -> None:
    await harness.subscribe("down", "erin")
    push_service.script("down", [(503, {})] * 3)
    request = push_request(7, "erin")
    await send(harness, request)

    failed = await wait_until(
        lambda: [s for s in harness.statuses() if s.status is DeliveryState.FAILED]
    )
    assert failed[0].reason == "retries_exhausted"
    assert failed[0].attempt == 3
    assert len(push_service.for_endpoint("down")) == 3

    value, headers = await harness.first_dead_letter(PUSH_REQUESTS)
    assert PushRequest.from_bytes(value) == request
    assert headers["x-clarion-error-type"] == "http_503"
    assert headers["x-clarion-attempts"] == "3"
    assert headers["x-clarion-original-topic"] == harness.settings.topic(PUSH_REQUESTS)
    assert headers["x-clarion-subscription-id"] == "sub-down"


async def test_not_before_defers_without_blocking_the_partition(
    harness: Any, push_service: Any, wait_until: Any
) -> None:
    await harness.subscribe("night", "frank")
    later = push_request(8, "frank", not_before=utc_now() + timedelta(hours=8))
    now = push_request(9, "frank")
    await send(harness, later)
    await send(harness, now)

    await wait_until(lambda: len(push_service.for_endpoint("night")) == 1)
    assert push_service.for_endpoint("night")[0].payload["notification_id"] == "notif-9"
    deferred = await wait_until(
        lambda: [s for s in harness.statuses() if s.status is DeliveryState.DEFERRED]
    )
    assert deferred[0].notification_id == "notif-8"
    await harness.worker.dispatcher.drain(timeout=10)
    # Only the deferred request is left in the schedule, due at its not_before.
    assert await harness.worker.dispatcher.schedule.pending() == 1
    redis = harness.worker.redis
    due = await redis.zscore(f"{harness.settings.redis_prefix}push:schedule", "notif-8:1:push|*")
    assert due == pytest.approx(later.not_before.timestamp())


async def test_health_and_metrics_are_served(harness: Any) -> None:
    port = harness.worker.health_server.port
    async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
        assert (await client.get("/healthz")).status_code == 200
        ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        metrics = await client.get("/metrics")
    assert metrics.status_code == 200


async def test_requests_for_users_without_subscriptions_are_skipped_as_a_batch(
    harness: Any, push_service: Any, wait_until: Any
) -> None:
    await harness.subscribe("desk", "gina")
    # One produce of many records: the worker sees them in few fetches, most of them
    # for users who never subscribed, one poison record and one subscribed user among them.
    producer = harness.producer
    topic = harness.settings.topic(PUSH_REQUESTS)
    requests = [push_request(100 + n, f"nobody-{n}") for n in range(200)]
    requests.insert(120, push_request(99, "gina"))
    futures = [
        await producer.send(topic, r.to_bytes(), key=r.recipient_id.encode()) for r in requests
    ]
    futures.insert(50, await producer.send(topic, b'{"not": "a push request"}', key=b"x"))
    for future in futures:
        await future

    skipped = await wait_until(
        lambda: (
            found
            if len(
                found := [
                    s
                    for s in harness.statuses()
                    if s.status is DeliveryState.SKIPPED and s.reason == "no_subscription"
                ]
            )
            >= 200
            else None
        )
    )
    assert sorted(s.recipient_id for s in skipped) == sorted(f"nobody-{n}" for n in range(200))
    assert len({s.status_id for s in skipped}) == 200
    await wait_until(lambda: len(push_service.for_endpoint("desk")) == 1)
    assert push_service.for_endpoint("desk")[0].payload["notification_id"] == "notif-99"
    value, headers = await harness.first_dead_letter(PUSH_REQUESTS)
    assert value == b'{"not": "a push request"}'
    assert headers["x-clarion-error-type"] == "ValidationError"
    # Skipped requests never went through the schedule.
    await harness.worker.dispatcher.drain(timeout=10)
    assert await harness.worker.dispatcher.schedule.pending() == 0
