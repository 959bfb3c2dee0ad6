"""Hostile input over HTTP: every refused text, date, depth and URL answers 422
problem+json (never a 5xx), and nothing refused reaches the broker."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest

from clarion_contracts.registry import DOMAIN_EVENTS
from clarion_kit.auth import issue_token
from clarion_kit.problems import PROBLEM_MEDIA_TYPE

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


def assert_problem(response: httpx.Response, status: int = 422) -> None:
    assert response.status_code == status, (response.request.url, response.text)
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


async def test_nul_in_inbox_paths_and_queries_is_422(ingest: Any) -> None:
    user = ingest.user_headers("bob")
    http = ingest.http
    for method, path in [
        ("GET", "/v1/me/notifications/a%00b"),
        ("POST", "/v1/me/notifications/a%00b/read"),
        ("POST", "/v1/me/notifications/a%00b/unread"),
        ("DELETE", "/v1/me/notifications/a%00b"),
        ("GET", "/v1/me/notifications?category=a%00"),
        ("GET", "/v1/me/notifications?type=a%00"),
        ("GET", "/v1/me/notifications/%EF%BF%BE"),
        ("DELETE", "/v1/me/push-subscriptions/a%00b"),
    ]:
        assert_problem(await http.request(method, path, headers=user))
    assert_problem(
        await http.post(
            "/v1/me/notifications:batch-delete", json={"ids": ["ok", "a\x00b"]}, headers=user
        )
    )


async def test_nul_in_preferences_and_subscriptions_is_422(ingest: Any) -> None:
    user = ingest.user_headers("bob")
    http = ingest.http
    for body in [{"categories": {"a\x00": {"email": False}}}, {"muted_objects": ["post:\x00"]}]:
        assert_problem(await http.put("/v1/me/preferences", json=body, headers=user))
    keys = {"p256dh": "BNc", "auth": "tB"}
    for body in [
        {"endpoint": "https://push.example/a", "keys": {**keys, "p256dh": "a\x00"}},
        {"endpoint": "https://push.example/a", "keys": {**keys, "auth": "\x00"}},
        {"endpoint": "https://push.example/a", "keys": keys, "user_agent": "ua\x00"},
    ]:
        assert_problem(await http.post("/v1/me/push-subscriptions", json=body, headers=user))


async def test_nul_in_profiles_and_tokens_is_refused(ingest: Any) -> None:
    http = ingest.http
    producer = ingest.producer_headers()
    assert_problem(await http.put("/v1/users/a%00b", json={"name": "A"}, headers=producer))
    assert_problem(await http.put("/v1/users/a", json={"name": "A\x00"}, headers=producer))
    assert_problem(
        await http.put("/v1/users/a", json={"name": "A", "segments": ["s\x00"]}, headers=producer)
    )
    assert_problem(await http.get("/v1/dev/token", params={"user": "a\x00b"}))
    token = issue_token(ingest.settings, "a\x00b", ttl=600)
    response = await http.get("/v1/me/notifications", headers={"Authorization": f"Bearer {token}"})
    assert_problem(response, 401)


async def test_cursor_outside_the_supported_range_is_422(ingest: Any) -> None:
    raw = json.dumps(["0001-01-01T00:00:00+05:00", "x"]).encode()
    cursor = base64.urlsafe_b64encode(raw).decode().rstrip("=")
    response = await ingest.http.get(
        "/v1/me/notifications", params={"cursor": cursor}, headers=ingest.user_headers("bob")
    )
    assert_problem(response)
    assert response.json()["errors"][0]["loc"] == ["query", "cursor"]


async def test_deep_json_is_refused_before_parsing_fails(ingest: Any) -> None:
    headers = {**ingest.producer_headers(), "Content-Type": "application/json"}
    huge = b"[" * 200_000 + b"]" * 200_000
    assert_problem(await ingest.http.post("/v1/events", content=huge, headers=headers))
    assert_problem(await ingest.http.post("/v1/events:batch", content=huge, headers=headers))
    moderate = b"[" * 100 + b"]" * 100
    assert_problem(await ingest.http.post("/v1/events", content=moderate, headers=headers))
    deep_data: dict[str, Any] = {}
    for _ in range(40):
        deep_data = {"a": deep_data}
    response = await ingest.http.post(
        "/v1/events", json=event(data=deep_data), headers=ingest.producer_headers()
    )
    assert_problem(response)
    user = ingest.user_headers("bob")
    response = await ingest.http.put("/v1/me/preferences", content=huge, headers=user)
    assert response.status_code in (400, 422), response.text
    assert response.headers["content-type"] == PROBLEM_MEDIA_TYPE


@pytest.mark.parametrize(
    "overrides",
    [
        {"actor": {"id": "alice", "name": "Al\x00ice"}},
        {"data": {"comment": "a\x00b"}},
        {"data": {"a\x00": 1}},
        {"recipients": ["b\x00ob"]},
        {"object": {"type": "post", "id": "p1", "url": "javascript:alert(1)"}},
        {"object": {"type": "post", "id": "p1", "url": "data:text/html,<b>x</b>"}},
    ],
    ids=["actor.name", "data value", "data key", "recipient", "javascript url", "data url"],
)
async def test_event_that_cannot_be_stored_is_422_not_202(
    ingest: Any, overrides: dict[str, Any]
) -> None:
    response = await ingest.http.post(
        "/v1/events", json=event(**overrides), headers=ingest.producer_headers()
    )
    assert_problem(response)
    batch = {"events": [event(), event(**overrides)]}
    response = await ingest.http.post(
        "/v1/events:batch", json=batch, headers=ingest.producer_headers()
    )
    assert_problem(response)
    assert await ingest.read_topic(DOMAIN_EVENTS, 1, timeout=1.0) == []


async def test_announcement_url_must_be_http(ingest: Any) -> None:
    admin = ingest.user_headers("root", "admin")
    body = {"title": "T", "body": "B", "url": "javascript:alert(1)", "all": True}
    assert_problem(await ingest.http.post("/v1/admin/announcements", json=body, headers=admin))
