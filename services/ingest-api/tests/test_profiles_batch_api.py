"""``PUT /v1/users:batch`` on the embedded stack: atomic rows and outbox records,
idempotent retries, and a batch refused whole when one profile is invalid."""

from __future__ import annotations

import json
from typing import Any

import pytest

from clarion_contracts.registry import USER_PROFILES
from clarion_contracts.v1 import UserProfile
from clarion_ingest.api import profiles as profiles_api

pytestmark = pytest.mark.integration


def profiles(*users: str) -> dict[str, Any]:
    return {
        "profiles": [
            {"user_id": u, "name": u.title(), "email": f"{u}@example.com", "timezone": "UTC"}
            for u in users
        ]
    }


async def _stored(svc: Any) -> dict[str, dict[str, Any]]:
    rows = await svc.query("SELECT user_id, document FROM ingest.profiles")
    return {
        r.user_id: (json.loads(r.document) if isinstance(r.document, str) else r.document)
        for r in rows
    }


async def _outbox_keys(svc: Any) -> list[bytes]:
    rows = await svc.query("SELECT key FROM ingest.outbox ORDER BY id")
    return [bytes(r.key) for r in rows]


async def test_batch_stores_every_profile_and_its_record(ingest: Any) -> None:
    users = [f"user{i:03d}" for i in range(300)]
    response = await ingest.http.put(
        "/v1/users:batch", json=profiles(*users), headers=ingest.producer_headers()
    )
    assert response.status_code == 200, response.text
    assert response.json() == {"stored": users}
    stored = await _stored(ingest)
    assert set(stored) == set(users)
    assert stored["user007"]["email"] == "user007@example.com"
    assert await _outbox_keys(ingest) == [u.encode() for u in users]

    records = await ingest.read_topic(USER_PROFILES, len(users))
    assert [r.key for r in records] == [u.encode() for u in users]
    first = UserProfile.from_bytes(records[0].value)
    assert (first.user_id, first.name, first.email) == ("user000", "User000", "user000@example.com")


async def test_same_batch_again_replaces_the_profiles(ingest: Any) -> None:
    headers = ingest.producer_headers()
    body = profiles("ann", "ben")
    for _ in range(2):
        response = await ingest.http.put("/v1/users:batch", json=body, headers=headers)
        assert response.status_code == 200, response.text
    changed = profiles("ann")
    changed["profiles"][0]["name"] = "Ann Smith"
    response = await ingest.http.put("/v1/users:batch", json=changed, headers=headers)
    assert response.status_code == 200, response.text
    stored = await _stored(ingest)
    assert sorted(stored) == ["ann", "ben"]
    assert stored["ann"]["name"] == "Ann Smith"
    # Every accepted request is a new version on the compacted topic: 2 + 2 + 1.
    assert await _outbox_keys(ingest) == [b"ann", b"ben", b"ann", b"ben", b"ann"]


@pytest.mark.parametrize(
    ("change", "loc"),
    [
        ({"timezone": "Mars/Olympus"}, ["body", "profiles", 2, "timezone"]),
        ({"age": 3}, ["body", "profiles", 2, "age"]),
        ({"user_id": "a b"}, ["body", "profiles", 2, "user_id"]),
        ({"user_id": "u0"}, ["body", "profiles"]),
    ],
)
async def test_one_bad_profile_refuses_the_whole_batch(
    ingest: Any, change: dict[str, Any], loc: list[Any]
) -> None:
    body = profiles("u0", "u1", "u2", "u3")
    body["profiles"][2].update(change)
    response = await ingest.http.put(
        "/v1/users:batch", json=body, headers=ingest.producer_headers()
    )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert [e["loc"] for e in response.json()["errors"]] == [loc]
    assert await _stored(ingest) == {}
    assert await _outbox_keys(ingest) == []


async def test_batch_size_and_key_are_enforced(ingest: Any) -> None:
    too_many = profiles(*(f"u{i}" for i in range(1001)))
    empty: dict[str, Any] = {"profiles": []}
    for body in (too_many, empty):
        response = await ingest.http.put(
            "/v1/users:batch", json=body, headers=ingest.producer_headers()
        )
        assert response.status_code == 422, response.text
    user = await ingest.http.put(
        "/v1/users:batch", json=profiles("ann"), headers=ingest.user_headers("ann")
    )
    assert user.status_code in (401, 403)
    assert await _stored(ingest) == {}


async def test_profiles_and_their_records_commit_together(
    ingest: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    real_enqueue = profiles_api.enqueue

    async def enqueue_then_crash(conn: Any, records: Any) -> int:
        await real_enqueue(conn, records)
        raise RuntimeError("the process failed after storing the records")

    monkeypatch.setattr(profiles_api, "enqueue", enqueue_then_crash)
    headers = ingest.producer_headers()
    failed = await ingest.http.put("/v1/users:batch", json=profiles("ann", "ben"), headers=headers)
    assert failed.status_code == 500
    assert await _stored(ingest) == {}
    assert await _outbox_keys(ingest) == []

    monkeypatch.setattr(profiles_api, "enqueue", real_enqueue)
    ok = await ingest.http.put("/v1/users:batch", json=profiles("ann", "ben"), headers=headers)
    assert ok.status_code == 200
    assert sorted(await _stored(ingest)) == ["ann", "ben"]
    assert await _outbox_keys(ingest) == [b"ann", b"ben"]
