"""HTTP API without a database: authentication, the development token, the dashboard page."""

from __future__ import annotations

import time
from collections.abc import AsyncIterator

import httpx
import jwt
import pytest
from prometheus_client import CollectorRegistry

from clarion_analytics.app import create_app
from clarion_analytics.settings import AnalyticsSettings
from clarion_kit.auth import issue_token, verify_token
from clarion_kit.unsubscribe_tokens import issue_unsubscribe_token

ENDPOINTS = ("summary", "funnel", "latency", "failures", "online")


def _settings(**kw: object) -> AnalyticsSettings:
    return AnalyticsSettings(consume=False, migrate_on_start=False, **kw)  # type: ignore[arg-type]


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    # The lifespan is not run: no database, so an authorised request gets 503, which is
    # enough to tell that authentication passed.
    app = create_app(_settings(), registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as c:
        yield c


def _bearer(settings: AnalyticsSettings, *scopes: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {issue_token(settings, 'someone', scopes=scopes)}"}


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_no_token_is_401_problem(client: httpx.AsyncClient, endpoint: str) -> None:
    response = await client.get(f"/v1/analytics/{endpoint}")
    assert response.status_code == 401
    assert response.headers["content-type"] == "application/problem+json"
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert body["status"] == 401
    assert body["title"] == "Unauthorized"
    assert body["instance"] == f"/v1/analytics/{endpoint}"


@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_non_admin_token_is_403_problem(client: httpx.AsyncClient, endpoint: str) -> None:
    response = await client.get(
        f"/v1/analytics/{endpoint}", headers=_bearer(_settings(), "inbox:read")
    )
    assert response.status_code == 403
    assert response.headers["content-type"] == "application/problem+json"
    assert 'error="insufficient_scope"' in response.headers["www-authenticate"]
    assert "admin" in response.json()["detail"]


async def test_invalid_tokens_are_401(client: httpx.AsyncClient) -> None:
    forged = _bearer(_settings(jwt_secret="another-secret-0123456789abcdef0123"), "admin")
    for headers in (
        forged,
        {"Authorization": "Bearer not-a-jwt"},
        {"Authorization": "Basic dXNlcjpwYXNz"},
    ):
        response = await client.get("/v1/analytics/summary", headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["content-type"] == "application/problem+json"
    response = await client.get("/v1/analytics/summary", headers=forged)
    assert response.headers["www-authenticate"] == 'Bearer error="invalid_token"'


async def test_unsubscribe_and_long_lived_tokens_are_401(client: httpx.AsyncClient) -> None:
    settings = _settings()
    now = int(time.time())
    century = jwt.encode(
        {"sub": "ops", "scope": "admin", "iat": now, "exp": now + 100 * 365 * 86400},
        settings.jwt_secret,
        algorithm="HS256",
    )
    unsubscribe = issue_unsubscribe_token(settings, "ops", "social", 3600)
    for token in (century, unsubscribe):
        response = await client.get(
            "/v1/analytics/summary", headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 401
        assert response.headers["content-type"] == "application/problem+json"


@pytest.mark.parametrize("environment", ["staging", "production"])
async def test_api_docs_are_not_served_outside_development(environment: str) -> None:
    settings = _settings(environment=environment, jwt_secret="s" * 40)
    app = create_app(settings, registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as c:
        for path in ("/docs", "/redoc", "/openapi.json"):
            assert (await c.get(path)).status_code == 404, path


async def test_api_docs_are_served_in_development(client: httpx.AsyncClient) -> None:
    assert (await client.get("/openapi.json")).status_code == 200


async def test_admin_passes_authentication(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/analytics/summary", headers=_bearer(_settings(), "admin"))
    assert response.status_code == 503  # authenticated; the repository is not open
    assert response.headers["retry-after"] == "1"


async def test_bad_filters_are_422_problems() -> None:
    app = create_app(_settings(), registry=CollectorRegistry())
    app.state.repo = object()  # validation fails before the endpoint would use it
    transport = httpx.ASGITransport(app=app)
    client = httpx.AsyncClient(transport=transport, base_url="http://analytics")
    headers = _bearer(_settings(), "admin")
    for params in ({"channel": "pigeon"}, {"type": "Not A Type"}, {"from": "yesterday"}):
        response = await client.get("/v1/analytics/summary", params=params, headers=headers)
        assert response.status_code == 422, params
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["errors"], params
    response = await client.get("/v1/analytics/latency", params={"step": "5"}, headers=headers)
    assert response.status_code == 422
    await client.aclose()


async def test_dev_token_is_an_admin_jwt_in_development(client: httpx.AsyncClient) -> None:
    response = await client.get("/v1/dev/admin-token")
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "Bearer"
    claims = verify_token(_settings(), body["access_token"])
    assert claims.has_scope("admin")


@pytest.mark.parametrize("environment", ["test", "staging", "production"])
async def test_dev_token_is_refused_outside_development(environment: str) -> None:
    secret = "a-production-secret-that-is-long-enough-0123"
    settings = _settings(environment=environment, jwt_secret=secret)
    app = create_app(settings, registry=CollectorRegistry())
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as c:
        response = await c.get("/v1/dev/admin-token")
    assert response.status_code == 404
    assert response.headers["content-type"] == "application/problem+json"
    assert "access_token" not in response.text


async def test_dashboard_page_and_assets_are_served(client: httpx.AsyncClient) -> None:
    page = await client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    assert '<script src="/static/dashboard.js">' in page.text
    assert "http://" not in page.text  # nothing external
    assert "https://" not in page.text
    script = await client.get("/static/dashboard.js")
    assert script.status_code == 200
    assert "createElementNS" in script.text
    assert "innerHTML" not in script.text  # API text is only ever set as textContent
    css = await client.get("/static/dashboard.css")
    assert css.status_code == 200


async def test_healthz_and_metrics_without_lifespan(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    metrics = await client.get("/metrics")
    assert metrics.status_code == 200
    assert "clarion_analytics_messages_total" in metrics.text


@pytest.mark.parametrize(
    "params",
    [
        {"to": "0001-01-01T00:00:00Z"},
        {"to": "9999-12-31T23:59:59-01:00"},
        {"from": "0001-01-01T00:00:00+05:00", "to": "0001-01-02T00:00:00Z"},
    ],
)
@pytest.mark.parametrize("endpoint", ENDPOINTS)
async def test_extreme_dates_are_422_not_an_overflow(endpoint: str, params: dict[str, str]) -> None:
    settings = _settings()
    app = create_app(settings, registry=CollectorRegistry())
    # Any object will do: the range is checked before the repository is used.
    app.state.repo = object()
    transport = httpx.ASGITransport(app=app, raise_app_exceptions=False)
    async with httpx.AsyncClient(transport=transport, base_url="http://analytics") as c:
        response = await c.get(
            f"/v1/analytics/{endpoint}", params=params, headers=_bearer(settings, "admin")
        )
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["type"] == "/problems/invalid-range"
