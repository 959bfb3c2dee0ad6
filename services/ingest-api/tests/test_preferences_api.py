"""Preferences, push subscriptions, one-click unsubscribe, announcements and dev pages over HTTP."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest

from clarion_contracts.registry import DOMAIN_EVENTS, PREFERENCES, PUSH_SUBSCRIPTIONS
from clarion_contracts.v1 import DomainEvent, Preferences, PushSubscription
from clarion_ingest.settings import IngestSettings
from clarion_kit.auth import issue_token, verify_token
from clarion_kit.unsubscribe_tokens import issue_unsubscribe_token

pytestmark = pytest.mark.integration

PREFS = {
    "categories": {"social": {"push": False}, "system": {"email": True}},
    "muted_objects": ["post:p1"],
    "email_digest": "hourly",
    "digest_hour": 8,
    "quiet_hours": {"start": "22:00", "end": "07:30"},
    "timezone": "Europe/Paris",
}


async def test_preferences_round_trip_and_publish(ingest: Any) -> None:
    bob = ingest.user_headers("bob")
    defaults = await ingest.http.get("/v1/me/preferences", headers=bob)
    assert defaults.status_code == 200
    assert defaults.json()["updated_at"] is None

    saved = await ingest.http.put("/v1/me/preferences", json=PREFS, headers=bob)
    assert saved.status_code == 200, saved.text
    assert saved.json()["timezone"] == "Europe/Paris"
    current = (await ingest.http.get("/v1/me/preferences", headers=bob)).json()
    assert current["categories"]["social"] == {"in_app": None, "push": False, "email": None}
    assert current["quiet_hours"] == {"start": "22:00", "end": "07:30"}
    assert current["updated_at"] is not None

    for bad in (
        {**PREFS, "timezone": "Mars/Olympus"},
        {**PREFS, "user_id": "mallory"},
        {**PREFS, "digest_hour": 30},
        {**PREFS, "email_digest": "weekly"},
        {**PREFS, "muted_objects": "post:p1"},
    ):
        response = await ingest.http.put("/v1/me/preferences", json=bad, headers=bob)
        assert response.status_code == 422, bad
        assert response.headers["content-type"] == "application/problem+json"

    records = await ingest.read_topic(PREFERENCES, 2, timeout=3.0)
    assert len(records) == 1
    assert records[0].key == b"bob"
    published = Preferences.from_bytes(records[0].value)
    assert published.user_id == "bob"
    assert published.email_digest == "hourly"
    assert published.muted_objects == ["post:p1"]
    # Another user's preferences are theirs alone.
    carol = await ingest.http.get("/v1/me/preferences", headers=ingest.user_headers("carol"))
    assert carol.json()["updated_at"] is None


async def test_push_subscription_lifecycle(ingest: Any) -> None:
    endpoint = "https://push.example.com/send/abc123"
    body = {
        "endpoint": endpoint,
        "expirationTime": None,
        "keys": {"p256dh": "BNcRd-key", "auth": "tBHI-auth"},
        "user_agent": "Firefox",
    }
    bob = ingest.user_headers("bob")
    created = await ingest.http.post("/v1/me/push-subscriptions", json=body, headers=bob)
    assert created.status_code == 201, created.text
    sub_id = created.json()["subscription_id"]
    assert sub_id == hashlib.sha256(endpoint.encode()).hexdigest()

    theirs = await ingest.http.delete(
        f"/v1/me/push-subscriptions/{sub_id}", headers=ingest.user_headers("mallory")
    )
    assert theirs.status_code == 404
    removed = await ingest.http.delete(f"/v1/me/push-subscriptions/{sub_id}", headers=bob)
    assert removed.status_code == 204
    again = await ingest.http.delete(f"/v1/me/push-subscriptions/{sub_id}", headers=bob)
    assert again.status_code == 404

    bad = await ingest.http.post(
        "/v1/me/push-subscriptions", json={**body, "keys": {"p256dh": "x"}}, headers=bob
    )
    assert bad.status_code == 422

    records = await ingest.read_topic(PUSH_SUBSCRIPTIONS, 3, timeout=3.0)
    subs = [PushSubscription.from_bytes(r.value) for r in records]
    assert [(s.subscription_id, s.user_id, s.active) for s in subs] == [
        (sub_id, "bob", True),
        (sub_id, "bob", False),
    ]
    assert all(r.key == sub_id.encode() for r in records)
    assert subs[0].keys.auth == "tBHI-auth"


async def test_vapid_public_key(start_ingest: Any) -> None:
    async with start_ingest() as svc:
        missing = await svc.http.get("/v1/push/vapid-public-key")
        assert missing.status_code == 404
        assert missing.headers["content-type"] == "application/problem+json"
    async with start_ingest(vapid_public_key="BPublicKey") as svc:
        found = await svc.http.get("/v1/push/vapid-public-key")
        assert found.json() == {"public_key": "BPublicKey"}


async def test_one_click_unsubscribe_turns_email_off(ingest: Any) -> None:
    bob = ingest.user_headers("bob")
    assert (await ingest.http.put("/v1/me/preferences", json=PREFS, headers=bob)).status_code == 200
    token = issue_unsubscribe_token(ingest.settings, "bob", "social", 3600)

    page = await ingest.http.get("/v1/unsubscribe", params={"token": token})
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    assert "<form" in page.text
    # GET changes nothing (link scanners follow GET links).
    current = (await ingest.http.get("/v1/me/preferences", headers=bob)).json()
    assert current["categories"]["social"]["email"] is None

    done = await ingest.http.post(
        "/v1/unsubscribe",
        params={"token": token},
        content=b"List-Unsubscribe=One-Click",
        headers={"content-type": "application/x-www-form-urlencoded"},
    )
    assert done.status_code == 200
    assert "social" in done.text
    current = (await ingest.http.get("/v1/me/preferences", headers=bob)).json()
    assert current["categories"]["social"] == {"in_app": None, "push": False, "email": False}
    assert current["email_digest"] == "hourly"  # the rest is kept

    records = await ingest.read_topic(PREFERENCES, 2)
    last = Preferences.from_bytes(records[-1].value)
    assert last.categories["social"].email is False

    # An access token is not an unsubscribe link, whatever its scopes.
    access = issue_token(ingest.settings, "bob", ttl=3600)
    assert (await ingest.http.post("/v1/unsubscribe", params={"token": access})).status_code == 401
    assert (await ingest.http.post("/v1/unsubscribe", params={"token": "x.y.z"})).status_code == 401
    assert (await ingest.http.post("/v1/unsubscribe")).status_code == 422


async def test_admin_announcement(ingest: Any) -> None:
    body = {"title": "Maintenance", "body": "Tonight 22:00 UTC", "all": True, "priority": "high"}
    refused = await ingest.http.post(
        "/v1/admin/announcements", json=body, headers=ingest.user_headers("bob")
    )
    assert refused.status_code == 403
    invalid = await ingest.http.post(
        "/v1/admin/announcements",
        json={**body, "recipients": ["a"]},
        headers=ingest.user_headers("root", "admin"),
    )
    assert invalid.status_code == 422
    accepted = await ingest.http.post(
        "/v1/admin/announcements", json=body, headers=ingest.user_headers("root", "admin")
    )
    assert accepted.status_code == 202, accepted.text
    (event_id,) = accepted.json()["accepted"]
    records = await ingest.read_topic(DOMAIN_EVENTS, 2, timeout=3.0)
    assert len(records) == 1
    event = DomainEvent.from_bytes(records[0].value)
    assert str(event.event_id) == event_id
    assert event.type == "clarion.announcement"
    assert event.actor.id == "root"
    assert event.audience is not None
    assert event.audience.all is True
    assert event.data["title"] == "Maintenance"


async def test_demo_page_and_config_in_development(ingest: Any) -> None:
    config = await ingest.http.get("/v1/config")
    assert config.json()["gateway_url"] == "ws://localhost:8001/v1/ws"
    page = await ingest.http.get("/")
    assert page.status_code == 200
    assert "text/html" in page.headers["content-type"]
    unknown = await ingest.http.get("/v1/nothing")
    assert unknown.status_code == 404
    issued = await ingest.http.get("/v1/dev/token", params={"user": "zoe"})
    assert issued.status_code == 200
    token = issued.json()["token"]
    assert verify_token(IngestSettings(environment="development"), token).subject == "zoe"
    inbox = await ingest.http.get(
        "/v1/me/notifications", headers={"Authorization": f"Bearer {token}"}
    )
    assert inbox.status_code == 200
    assert (await ingest.http.get("/v1/dev/token", params={"user": "a b"})).status_code == 422


async def test_no_demo_page_or_config_outside_development(start_ingest: Any) -> None:
    async with start_ingest(environment="test") as svc:
        assert (await svc.http.get("/v1/config")).status_code == 404
        assert (await svc.http.get("/v1/dev/token", params={"user": "zoe"})).status_code == 404
        assert (await svc.http.get("/")).status_code == 404
