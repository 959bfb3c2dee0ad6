"""Producer endpoints over HTTP on the embedded stack: events, batches, profiles, errors."""

from __future__ import annotations

import hashlib
import json
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from clarion_contracts.registry import DOMAIN_EVENTS, PREFERENCES, USER_PROFILES
from clarion_contracts.v1 import DomainEvent, UserProfile

pytestmark = pytest.mark.integration


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "post.liked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": {"id": "alice", "name": "Alice"},
        "recipients": ["bob"],
        "object": {"type": "post", "id": "p1", "title": "Hello"},
    }
    body.update(overrides)
    return body


async def test_event_is_on_the_topic_when_202_is_answered(ingest: Any) -> None:
    body = event()
    before = datetime.now(UTC)
    response = await ingest.http.post("/v1/events", json=body, headers=ingest.producer_headers())
    assert response.status_code == 202, response.text
    assert response.json() == {"accepted": [body["event_id"]]}
    records = await ingest.read_topic(DOMAIN_EVENTS, 1)
    assert len(records) == 1
    assert records[0].key == b"bob"
    produced = DomainEvent.from_bytes(records[0].value)
    assert str(produced.event_id) == body["event_id"]
    assert produced.ingested_at is not None
    assert produced.ingested_at >= before
    assert produced.object.title == "Hello"


async def test_batch_is_published_whole_with_keys(ingest: Any) -> None:
    events = [
        event(),
        event(recipients=["carol", "dave"]),
        event(recipients=None, audience={"all": True}),
    ]
    response = await ingest.http.post(
        "/v1/events:batch",
        json={"events": events},
        headers={"X-API-Key": ingest.api_key},
    )
    assert response.status_code == 202, response.text
    assert response.json()["accepted"] == [e["event_id"] for e in events]
    records = await ingest.read_topic(DOMAIN_EVENTS, 4)
    keys = sorted(
        (
            str(DomainEvent.from_bytes(r.value).event_id),
            DomainEvent.from_bytes(r.value).recipients,
            r.key,
        )
        for r in records
    )
    assert keys == sorted(
        [
            (events[0]["event_id"], ["bob"], b"bob"),
            (events[1]["event_id"], ["carol"], b"carol"),
            (events[1]["event_id"], ["dave"], b"dave"),
            (events[2]["event_id"], None, events[2]["event_id"].encode()),
        ]
    )


async def test_bad_inputs_answer_problems_and_write_nothing(ingest: Any) -> None:
    key = ingest.producer_headers()
    json_headers = {**key, "content-type": "application/json"}
    too_big = ingest.settings.max_body_bytes + 1
    cases: list[tuple[str, dict[str, Any], int]] = [
        ("/v1/events", {"content": b"{not json", "headers": json_headers}, 422),
        ("/v1/events", {"content": b"\xff\xfe", "headers": json_headers}, 422),
        ("/v1/events", {"json": event(event_id=42), "headers": key}, 422),
        ("/v1/events", {"json": event(recipients="bob"), "headers": key}, 422),
        ("/v1/events", {"json": event(occurred_at="yesterday"), "headers": key}, 422),
        ("/v1/events", {"json": event(surprise=True), "headers": key}, 422),
        ("/v1/events", {"json": [event()], "headers": key}, 422),
        ("/v1/events", {"content": b"x" * too_big, "headers": json_headers}, 413),
        ("/v1/events", {"json": event()}, 401),
        ("/v1/events", {"json": event(), "headers": {"X-API-Key": "clk_wrong"}}, 401),
        ("/v1/events", {"json": event(), "headers": {"Authorization": "Basic abc"}}, 401),
        (
            "/v1/events",
            {"content": json.dumps(event()), "headers": {**key, "content-type": "text/plain"}},
            415,
        ),
        ("/v1/events:batch", {"json": {"events": []}, "headers": key}, 422),
        ("/v1/events:batch", {"json": {"events": [event(), {"bad": 1}]}, "headers": key}, 422),
        (
            "/v1/events:batch",
            {"json": {"events": [event() for _ in range(501)]}, "headers": key},
            422,
        ),
        ("/v1/events:batch", {"json": {"events": [event()], "extra": 1}, "headers": key}, 422),
    ]
    for path, kwargs, status in cases:
        response = await ingest.http.post(path, **kwargs)
        assert response.status_code == status, (path, kwargs.get("json"), response.text)
        assert response.headers["content-type"] == "application/problem+json"
        problem = response.json()
        assert problem["status"] == status
        assert problem["title"]
        if status == 401:
            assert response.headers["www-authenticate"].startswith("Bearer")
        if status == 422:
            assert problem["errors"], problem
    # One valid event as a sentinel: it must be the only record on the topic.
    sentinel = event()
    ok = await ingest.http.post("/v1/events", json=sentinel, headers=key)
    assert ok.status_code == 202
    records = await ingest.read_topic(DOMAIN_EVENTS, 2, timeout=3.0)
    assert [DomainEvent.from_bytes(r.value).event_id for r in records] == [
        uuid.UUID(sentinel["event_id"])
    ]


async def test_unknown_field_error_names_the_field(ingest: Any) -> None:
    response = await ingest.http.post(
        "/v1/events", json=event(recipient="bob"), headers=ingest.producer_headers()
    )
    assert response.status_code == 422
    assert {"loc": ["recipient"], "msg": "unknown field", "type": "extra_forbidden"} in (
        response.json()["errors"]
    )


async def test_profile_is_stored_and_published(ingest: Any) -> None:
    body = {
        "name": "Bob",
        "email": "bob@example.com",
        "locale": "fr-FR",
        "timezone": "Europe/Paris",
        "segments": ["beta"],
    }
    response = await ingest.http.put("/v1/users/bob", json=body, headers=ingest.producer_headers())
    assert response.status_code == 200, response.text
    assert response.json()["timezone"] == "Europe/Paris"
    records = await ingest.read_topic(USER_PROFILES, 1)
    assert records[0].key == b"bob"
    profile = UserProfile.from_bytes(records[0].value)
    assert (profile.user_id, profile.email, profile.segments) == (
        "bob",
        "bob@example.com",
        ["beta"],
    )

    bad = await ingest.http.put(
        "/v1/users/bob",
        json={**body, "timezone": "Mars/Olympus"},
        headers=ingest.producer_headers(),
    )
    assert bad.status_code == 422
    assert bad.json()["errors"][0]["loc"][-1] == "timezone"
    unknown = await ingest.http.put(
        "/v1/users/bob", json={**body, "age": 3}, headers=ingest.producer_headers()
    )
    assert unknown.status_code == 422
    records = await ingest.read_topic(USER_PROFILES, 2, timeout=2.0)
    assert len(records) == 1


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_broker_unreachable_still_accepts_into_the_outbox(
    start_ingest: Any, devstack: Any
) -> None:
    async with start_ingest(kafka_bootstrap_servers=f"127.0.0.1:{_closed_port()}") as ingest:
        single = event()
        response = await ingest.http.post(
            "/v1/events", json=single, headers=ingest.producer_headers()
        )
        assert response.status_code == 202, response.text
        batch = await ingest.http.post(
            "/v1/events:batch", json={"events": [event()]}, headers=ingest.producer_headers()
        )
        assert batch.status_code == 202, batch.text

        # A store-then-publish write commits with its record.
        user = ingest.user_headers("bob")
        put = await ingest.http.put(
            "/v1/me/preferences", json={"email_digest": "off"}, headers=user
        )
        assert put.status_code == 200, put.text
        current = await ingest.http.get("/v1/me/preferences", headers=user)
        assert current.json()["email_digest"] == "off"

        # 202 is true: the three records wait in the outbox, none relayed.
        pending = await ingest.query(
            "SELECT topic FROM ingest.outbox WHERE relayed_at IS NULL ORDER BY id"
        )
        assert [r.topic for r in pending] == [
            ingest.topic(DOMAIN_EVENTS),
            ingest.topic(DOMAIN_EVENTS),
            ingest.topic(PREFERENCES),
        ]

        async def relay_failing() -> Any:
            body = (await ingest.http.get("/readyz")).json()
            return body if body["checks"]["outbox"]["ok"] is False else None

        body = await ingest.eventually(relay_failing)
        assert body["status"] == "ready"
        assert body["checks"]["kafka"] == {
            **body["checks"]["kafka"],
            "ok": False,
            "required": False,
        }
        assert body["checks"]["outbox"]["required"] is False
        assert "BrokerUnavailableError" in body["checks"]["outbox"]["error"]

        async def gauges() -> Any:
            text = (await ingest.http.get("/metrics")).text
            return text if "clarion_ingest_api_outbox_pending 3.0" in text else None

        metrics = await ingest.eventually(gauges)
        age = next(
            line.split()[-1]
            for line in metrics.splitlines()
            if line.startswith("clarion_ingest_api_outbox_oldest_pending_age_seconds ")
        )
        assert float(age) > 0
        # Nothing reached the real broker under this prefix.
        real = ingest.settings.model_copy(
            update={"kafka_bootstrap_servers": devstack.kafka_bootstrap_servers}
        )
        probe = type(ingest)(settings=real, http=ingest.http, app=None)
        assert await probe.read_topic(DOMAIN_EVENTS, 1, timeout=1.0) == []


async def test_readiness_reports_every_dependency(ingest: Any) -> None:
    async def ready() -> bool:
        response = await ingest.http.get("/readyz")
        return response.status_code == 200

    await ingest.eventually(ready, timeout=60)
    body = (await ingest.http.get("/readyz")).json()
    assert set(body["checks"]) == {"postgres", "redis", "kafka", "outbox"}
    assert (await ingest.http.get("/healthz")).status_code == 200
    await ingest.http.put("/v1/users/u1", json={"name": "U"}, headers=ingest.producer_headers())
    assert await ingest.read_topic(USER_PROFILES, 1)
    metrics = await ingest.http.get("/metrics")
    assert "clarion_ingest_api_http_requests_total" in metrics.text
    assert (
        'clarion_ingest_api_outbox_relayed_total{topic="clarion.user-profiles.v1"}' in metrics.text
    )
    assert "clarion_ingest_api_outbox_pending " in metrics.text
    assert "clarion_ingest_api_outbox_oldest_pending_age_seconds " in metrics.text
    assert "clarion_ingest_api_outbox_relay_failures_total " in metrics.text


async def test_configured_api_keys_are_accepted_by_hash(start_ingest: Any) -> None:
    key = "clk_custom-producer-key"
    digest = hashlib.sha256(key.encode()).hexdigest()
    async with start_ingest(api_key_hashes=[digest]) as svc:
        await svc.eventually(_kafka_connected(svc))
        for headers in ({"X-API-Key": key}, {"Authorization": f"Bearer {key}"}):
            response = await svc.http.post("/v1/events", json=event(), headers=headers)
            assert response.status_code == 202, response.text
        wrong = await svc.http.post("/v1/events", json=event(), headers={"X-API-Key": key + "x"})
        assert wrong.status_code == 401


def _kafka_connected(svc: Any) -> Any:
    async def check() -> bool:
        return bool(svc.app.state.runtime.connection.connected)

    return check
