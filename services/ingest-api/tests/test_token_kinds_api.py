"""Token kinds over HTTP: the unsubscribe token in an email opens nothing but the
unsubscribe endpoint; long-lived tokens, the public development credentials outside
development, API docs in production and API-key guessing are refused."""

from __future__ import annotations

import re
import time
from types import SimpleNamespace
from typing import Any

import httpx
import jwt
import pytest
from fastapi.routing import iter_route_contexts
from pydantic import ValidationError

from clarion_email.app import EmailWorker
from clarion_email.settings import EmailSettings
from clarion_ingest.app import create_app
from clarion_ingest.deps import require_admin, require_producer, require_user
from clarion_ingest.settings import IngestSettings
from clarion_kit.auth import dev_api_key
from clarion_kit.settings import DEV_JWT_SECRET

pytestmark = pytest.mark.integration

SECRET = "a-deployment-secret-of-enough-length-0123456789"

# Endpoints that need no credential at all. Every other route must depend on a user,
# admin or producer credential: a new endpoint is checked by the tests below as soon
# as it is added, and one without any credential fails here until it is listed.
PUBLIC = {
    ("GET", "/openapi.json"),
    ("GET", "/docs"),
    ("GET", "/docs/oauth2-redirect"),
    ("GET", "/redoc"),
    ("GET", "/healthz"),
    ("GET", "/readyz"),
    ("GET", "/metrics"),
    ("GET", "/v1/push/vapid-public-key"),
    ("GET", "/v1/config"),
    ("GET", "/v1/dev/token"),
    ("GET", "/v1/unsubscribe"),
    ("POST", "/v1/unsubscribe"),
}
AUTH_DEPENDENCIES = {require_user, require_admin, require_producer}


def email_unsubscribe_token(user_id: str, category: str) -> str:
    """The token email-worker puts in List-Unsubscribe, from its own code path."""
    worker: Any = SimpleNamespace(settings=EmailSettings(environment="development"))
    token: str = EmailWorker._token_for(worker, user_id, category)
    return token


def _calls(dependant: Any) -> set[Any]:
    found = {dependant.call}
    for sub in dependant.dependencies:
        found |= _calls(sub)
    return found


def _routes(app: Any) -> list[tuple[str, str, set[Any]]]:
    """(method, path, dependency callables) of every HTTP route, included routers too."""
    found = []
    for context in iter_route_contexts(app.routes):
        dependant = getattr(context, "dependant", None)
        calls = _calls(dependant) if dependant is not None else set()
        for method in sorted(context.methods or ()):
            if method != "HEAD":
                found.append((method, context.path or "", calls))
    return found


def _concrete(path: str) -> str:
    return re.sub(r"\{[^}]+\}", "x1", path)


async def test_every_endpoint_but_the_public_ones_needs_a_credential(ingest: Any) -> None:
    unguarded = {
        (method, path)
        for method, path, calls in _routes(ingest.app)
        if not (calls & AUTH_DEPENDENCIES)
    }
    assert unguarded == PUBLIC


async def test_unsubscribe_token_opens_no_other_endpoint(ingest: Any) -> None:
    token = email_unsubscribe_token("bob", "social")
    guarded = [
        (method, path) for method, path, _ in _routes(ingest.app) if (method, path) not in PUBLIC
    ]
    assert ("GET", "/v1/me/notifications") in guarded
    assert ("POST", "/v1/me/push-subscriptions") in guarded
    for method, path in guarded:
        response = await ingest.http.request(
            method,
            _concrete(path),
            headers={"Authorization": f"Bearer {token}"},
            json={},
        )
        assert response.status_code in (401, 403), (method, path, response.text)
        assert response.headers["content-type"] == "application/problem+json", (method, path)
        assert response.headers["www-authenticate"].startswith("Bearer"), (method, path)
    # Only the unsubscribe endpoint takes it, for its own user and category.
    done = await ingest.http.post("/v1/unsubscribe", params={"token": token})
    assert done.status_code == 200
    bob = (await ingest.http.get("/v1/me/preferences", headers=ingest.user_headers("bob"))).json()
    assert bob["categories"]["social"]["email"] is False
    assert [c for c, v in bob["categories"].items() if v.get("email") is False] == ["social"]
    alice = ingest.user_headers("alice")
    alice_prefs = (await ingest.http.get("/v1/me/preferences", headers=alice)).json()
    assert alice_prefs["updated_at"] is None


async def test_legacy_unsubscribe_shaped_token_is_not_an_access_token(ingest: Any) -> None:
    # Emails sent before unsubscribe tokens had a kind of their own carry this shape.
    now = int(time.time())
    legacy = jwt.encode(
        {"sub": "bob", "scope": "unsubscribe:social", "iat": now, "exp": now + 60 * 86400},
        ingest.settings.jwt_secret,
        algorithm="HS256",
    )
    response = await ingest.http.get(
        "/v1/me/notifications", headers={"Authorization": f"Bearer {legacy}"}
    )
    assert response.status_code == 401


async def test_long_lived_token_is_refused(ingest: Any) -> None:
    now = int(time.time())
    century = jwt.encode(
        {"sub": "bob", "iat": now, "exp": now + 100 * 365 * 86400},
        ingest.settings.jwt_secret,
        algorithm="HS256",
    )
    response = await ingest.http.get(
        "/v1/me/notifications", headers={"Authorization": f"Bearer {century}"}
    )
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    fine = await ingest.http.get("/v1/me/notifications", headers=ingest.user_headers("bob"))
    assert fine.status_code == 200


def test_dev_secret_refused_in_staging() -> None:
    with pytest.raises(ValidationError, match="development JWT secret"):
        IngestSettings(environment="staging", jwt_secret=DEV_JWT_SECRET)


async def test_dev_api_key_refused_in_staging(start_ingest: Any) -> None:
    async with start_ingest(environment="staging", jwt_secret=SECRET) as svc:
        dev_key = dev_api_key(svc.settings.model_copy(update={"environment": "development"}))
        response = await svc.http.post(
            "/v1/events", headers={"X-API-Key": dev_key}, json={"event_id": "e"}
        )
        assert response.status_code == 401


@pytest.mark.parametrize("environment", ["staging", "production"])
async def test_api_docs_are_not_served_outside_development(environment: str) -> None:
    settings = IngestSettings(environment=environment, jwt_secret=SECRET)
    app = create_app(settings)
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://ingest"
    ) as http:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await http.get(path)).status_code == 404, path
    enabled = create_app(settings.model_copy(update={"api_docs_enabled": True}))
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=enabled), base_url="http://ingest"
    ) as http:
        assert (await http.get("/openapi.json")).status_code == 200


async def test_api_key_guessing_is_throttled_per_client_ip(start_ingest: Any) -> None:
    limit = 5
    # A long window: the count cannot roll over while the test runs.
    async with start_ingest(api_key_failure_limit=limit, rate_limit_window_seconds=3600) as svc:
        for attempt in range(limit):
            wrong = {"X-API-Key": f"clk_guess_{attempt}"}
            response = await svc.http.post("/v1/events", headers=wrong, json={})
            assert response.status_code == 401, attempt
        throttled = await svc.http.post(
            "/v1/events", headers={"X-API-Key": "clk_guess_next"}, json={}
        )
        assert throttled.status_code == 429
        assert throttled.headers["content-type"] == "application/problem+json"
        assert int(throttled.headers["retry-after"]) >= 1
        # The right key learns nothing either while the address is throttled.
        right = await svc.http.post("/v1/events", headers=svc.producer_headers(), json={})
        assert right.status_code == 429
