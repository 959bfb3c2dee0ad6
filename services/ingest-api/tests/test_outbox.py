"""The transactional outbox on the embedded stack: idempotency, atomic writes, PostgreSQL
unreachable, one relay at a time, and at-least-once across a relay that dies between
producing a batch and marking it relayed."""

from __future__ import annotations

import asyncio
import socket
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from clarion_contracts.registry import DOMAIN_EVENTS, INBOX_EVENTS, NOTIFICATIONS, USER_PROFILES
from clarion_contracts.v1 import DomainEvent, Notification
from clarion_ingest import app as app_module
from clarion_ingest.adapters import outbox
from clarion_ingest.adapters.relay import OutboxRelay
from clarion_ingest.api import events as events_api
from clarion_ingest.api import inbox as inbox_api
from clarion_ingest.domain.outbox import RelayState

pytestmark = pytest.mark.integration


def event(*recipients: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "post.liked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": {"id": "alice", "name": "Alice"},
        "recipients": list(recipients or ["bob"]),
        "object": {"type": "post", "id": "p1"},
    }


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def _outbox(svc: Any) -> list[Any]:
    return await svc.query("SELECT id, topic, key, event_id, relayed_at FROM ingest.outbox")


async def test_same_event_id_is_stored_once(ingest: Any) -> None:
    headers = ingest.producer_headers()
    single = event("bob")
    for _ in range(3):
        response = await ingest.http.post("/v1/events", json=single, headers=headers)
        assert response.status_code == 202, response.text
        assert response.json() == {"accepted": [single["event_id"]]}
    pair = event("carol", "dave")
    fresh = event("erin")
    first = await ingest.http.post("/v1/events:batch", json={"events": [pair]}, headers=headers)
    assert first.status_code == 202
    # A retried batch holding an already stored event stores only what is new.
    retry = await ingest.http.post(
        "/v1/events:batch", json={"events": [pair, fresh, single]}, headers=headers
    )
    assert retry.status_code == 202
    assert retry.json()["accepted"] == [pair["event_id"], fresh["event_id"], single["event_id"]]

    rows = await _outbox(ingest)
    stored = sorted((str(r.event_id), bytes(r.key)) for r in rows)
    assert stored == sorted(
        [
            (single["event_id"], b"bob"),
            (pair["event_id"], b"carol"),
            (pair["event_id"], b"dave"),
            (fresh["event_id"], b"erin"),
        ]
    )
    records = await ingest.read_topic(DOMAIN_EVENTS, 5, timeout=5.0)
    assert len(records) == 4


async def test_postgres_unreachable_answers_503_and_accepts_nothing(
    start_ingest: Any, devstack: Any
) -> None:
    database_url = f"postgresql+asyncpg://clarion:clarion@127.0.0.1:{_closed_port()}/nowhere"
    async with start_ingest(
        database_url=database_url, run_migrations=False, retry_after_seconds=7
    ) as svc:
        headers = svc.producer_headers()
        requests = [
            ("POST", "/v1/events", {"json": event("bob")}),
            ("POST", "/v1/events:batch", {"json": {"events": [event("bob")]}}),
            ("PUT", "/v1/users/bob", {"json": {"name": "Bob"}}),
            ("PUT", "/v1/users:batch", {"json": {"profiles": [{"user_id": "bob", "name": "B"}]}}),
        ]
        for method, path, kwargs in requests:
            response = await svc.http.request(method, path, headers=headers, **kwargs)
            assert response.status_code == 503, (path, response.text)
            assert response.headers["retry-after"] == "7"
            assert response.headers["content-type"] == "application/problem+json"
            assert response.json()["status"] == 503
        user = svc.user_headers("bob")
        put = await svc.http.put("/v1/me/preferences", json={"email_digest": "off"}, headers=user)
        assert put.status_code == 503
        assert put.headers["retry-after"] == "7"

        ready = await svc.http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["checks"]["postgres"]["ok"] is False
        assert await svc.read_topic(DOMAIN_EVENTS, 1, timeout=2.0) == []
        assert await svc.read_topic(USER_PROFILES, 1, timeout=1.0) == []


async def test_event_after_postgres_closed_every_connection_is_accepted_once(
    ingest: Any,
) -> None:
    headers = ingest.producer_headers()
    warm = await ingest.http.post("/v1/events", json=event("bob"), headers=headers)
    assert warm.status_code == 202
    # What a PostgreSQL restart or failover does to the pooled connections.
    terminated = await ingest.query(
        "SELECT pg_terminate_backend(pid) AS done FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    )
    assert terminated
    assert all(r.done for r in terminated)
    sent = event("carol")
    response = await ingest.http.post("/v1/events", json=sent, headers=headers)
    assert response.status_code == 202, response.text
    rows = await ingest.query(
        "SELECT count(*) AS n FROM ingest.outbox WHERE event_id = :id",
        id=uuid.UUID(sent["event_id"]),
    )
    assert rows[0].n == 1

    # The relay lost its session too: it reconnects, takes the lock again, relays.
    async def relayed() -> bool:
        records = await ingest.read_topic(DOMAIN_EVENTS, 2, timeout=1.0)
        ids = [str(DomainEvent.from_bytes(r.value).event_id) for r in records]
        return sent["event_id"] in ids

    await ingest.eventually(relayed)


async def test_profile_and_its_record_commit_together(
    ingest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_enqueue = events_api.enqueue

    async def enqueue_then_crash(conn: Any, records: Any) -> int:
        await real_enqueue(conn, records)
        raise RuntimeError("the process failed after storing the record")

    monkeypatch.setattr(events_api, "enqueue", enqueue_then_crash)
    headers = ingest.producer_headers()
    failed = await ingest.http.put("/v1/users/bob", json={"name": "Bob"}, headers=headers)
    assert failed.status_code == 500
    assert await ingest.query("SELECT user_id FROM ingest.profiles") == []
    assert await _outbox(ingest) == []

    monkeypatch.setattr(events_api, "enqueue", real_enqueue)
    ok = await ingest.http.put("/v1/users/bob", json={"name": "Bob"}, headers=headers)
    assert ok.status_code == 200
    assert [r.user_id for r in await ingest.query("SELECT user_id FROM ingest.profiles")] == ["bob"]
    rows = await _outbox(ingest)
    assert [(r.topic, bytes(r.key)) for r in rows] == [(ingest.topic(USER_PROFILES), b"bob")]


async def test_read_state_and_its_inbox_event_commit_together(
    inbox_service: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    svc = inbox_service
    now = datetime.now(UTC)
    note = Notification(
        notification_id="n1",
        version=1,
        recipient_id="bob",
        type="post.liked",
        category="social",
        group_key="bob|post.liked|post:p1|0",
        object={"type": "post", "id": "p1"},
        actors=[{"id": "alice", "name": "Alice"}],
        actor_count=1,
        event_ids=[uuid.uuid4()],
        title="Alice liked your post",
        body="body",
        body_html="<p>body</p>",
        channels=["in_app"],
        created_at=now,
        updated_at=now,
        first_occurred_at=now,
        last_occurred_at=now,
    )
    await svc.produce(NOTIFICATIONS, [(b"bob", note.to_bytes())])
    user = svc.user_headers("bob")

    async def stored() -> Any:
        response = await svc.http.get("/v1/me/notifications/n1", headers=user)
        return response.json() if response.status_code == 200 else None

    assert (await svc.eventually(stored))["read"] is False
    real_enqueue = inbox_api.enqueue

    async def enqueue_then_crash(conn: Any, records: Any) -> int:
        await real_enqueue(conn, records)
        raise RuntimeError("the process failed after storing the record")

    monkeypatch.setattr(inbox_api, "enqueue", enqueue_then_crash)
    failed = await svc.http.post("/v1/me/notifications/n1/read", headers=user)
    assert failed.status_code == 500
    assert (await stored())["read"] is False
    assert await _outbox(svc) == []

    monkeypatch.setattr(inbox_api, "enqueue", real_enqueue)
    ok = await svc.http.post("/v1/me/notifications/n1/read", headers=user)
    assert ok.status_code == 200
    assert (await stored())["read"] is True
    assert [r.topic for r in await _outbox(svc)] == [svc.topic(INBOX_EVENTS)]


async def test_one_relay_at_a_time_and_a_standby_takes_over(start_ingest: Any) -> None:
    async with start_ingest() as first:

        async def first_relays() -> bool:
            return bool(first.app.state.runtime.relay.status.state is RelayState.RELAYING)

        await first.eventually(first_relays, timeout=60)
        async with start_ingest() as second:
            relay = second.app.state.runtime.relay

            async def standing_by() -> bool:
                return bool(relay.status.state is RelayState.STANDBY)

            await second.eventually(standing_by, timeout=60)
            body = (await second.http.get("/readyz")).json()
            assert body["checks"]["outbox"]["detail"].startswith("standby")
            assert first.app.state.runtime.relay.status.state is RelayState.RELAYING

            await first.app.state.runtime.relay.stop()

            async def took_over() -> bool:
                return bool(relay.status.state is RelayState.RELAYING)

            await second.eventually(took_over, timeout=30)
            sent = event("bob")
            response = await second.http.post(
                "/v1/events", json=sent, headers=second.producer_headers()
            )
            assert response.status_code == 202
            records = await second.read_topic(DOMAIN_EVENTS, 1)
            assert [str(DomainEvent.from_bytes(r.value).event_id) for r in records] == [
                sent["event_id"]
            ]


class _DiesAfterProducing(OutboxRelay):
    """A relay that produces its first batch, then hangs until cancelled before marking it."""

    produced: asyncio.Event

    async def _mark_and_fetch(self, conn: Any, ids: Any, limit: int) -> Any:
        type(self).produced.set()
        await asyncio.Event().wait()


async def test_relay_dying_between_produce_and_mark_resends_at_least_once(
    start_ingest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    batch_size = 16
    keys = ("k0", "k1", "k2", "k3")
    bodies = [event(keys[i % len(keys)]) for i in range(40)]
    _DiesAfterProducing.produced = asyncio.Event()
    monkeypatch.setattr(app_module, "OutboxRelay", _DiesAfterProducing)
    async with start_ingest(outbox_batch_size=batch_size) as dying:
        await dying.eventually(
            lambda: _true(dying.app.state.runtime.connection.connected), timeout=60
        )
        response = await dying.http.post(
            "/v1/events:batch", json={"events": bodies}, headers=dying.producer_headers()
        )
        assert response.status_code == 202
        await asyncio.wait_for(_DiesAfterProducing.produced.wait(), timeout=60)
        produced = await dying.read_topic(DOMAIN_EVENTS, batch_size)
        assert len(produced) == batch_size
        # The relay dies with the service: nothing was marked relayed.
        assert all(r.relayed_at is None for r in await _outbox(dying))
    monkeypatch.setattr(app_module, "OutboxRelay", OutboxRelay)

    async with start_ingest(outbox_batch_size=batch_size) as svc:
        records = await svc.read_topic(DOMAIN_EVENTS, len(bodies) + batch_size, timeout=60)
        ids = [str(DomainEvent.from_bytes(r.value).event_id) for r in records]
        expected = [b["event_id"] for b in bodies]
        # Every record, the first batch twice (sent, not marked, sent again), in order.
        assert ids == expected[:batch_size] + expected
        per_key: dict[bytes, list[str]] = {}
        for record, event_id in zip(records, ids, strict=True):
            if event_id not in per_key.get(record.key, []):
                per_key.setdefault(record.key, []).append(event_id)
        assert per_key == {
            k.encode(): [b["event_id"] for b in bodies if b["recipients"] == [k]] for k in keys
        }

        async def drained() -> bool:
            return all(r.relayed_at is not None for r in await _outbox(svc))

        await svc.eventually(drained)


async def test_marking_a_batch_reads_the_next_in_the_same_statement(start_ingest: Any) -> None:
    async with start_ingest(outbox_relay=False) as svc:
        bodies = [event(f"u{i}") for i in range(5)]
        response = await svc.http.post(
            "/v1/events:batch", json={"events": bodies}, headers=svc.producer_headers()
        )
        assert response.status_code == 202
        async with svc.app.state.runtime.engine.connect() as conn:
            await conn.execution_options(isolation_level="AUTOCOMMIT")
            first = await outbox.fetch_pending(conn, 2)
            second = await outbox.mark_and_fetch(conn, [p.id for p in first], 2)
            third = await outbox.mark_and_fetch(conn, [p.id for p in second], 2)
            rest = await outbox.mark_and_fetch(conn, [p.id for p in third], 2)
        assert [len(b) for b in (first, second, third, rest)] == [2, 2, 1, 0]
        relayed = [p.record.key for b in (first, second, third) for p in b]
        assert relayed == [f"u{i}".encode() for i in range(5)]
        assert all(r.relayed_at is not None for r in await _outbox(svc))


async def _true(value: Any) -> bool:
    return bool(value)
