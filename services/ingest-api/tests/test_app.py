"""The app's error surface without any server behind it (no lifespan run)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
import pytest

from clarion_ingest.app import create_app
from clarion_ingest.settings import IngestSettings


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    app = create_app(IngestSettings(environment="development", max_body_bytes=2048))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://ingest") as http:
        yield http


async def test_requests_before_start_up_answer_503_with_retry_after(
    client: httpx.AsyncClient,
) -> None:
    response = await client.get("/v1/me/notifications")
    assert response.status_code == 503
    assert response.headers["retry-after"] == "1"
    assert response.headers["content-type"] == "application/problem+json"


async def test_unknown_route_and_method_are_problems(client: httpx.AsyncClient) -> None:
    missing = await client.get("/v1/nope/nothing")
    assert missing.status_code == 404
    assert missing.headers["content-type"] == "application/problem+json"
    assert missing.json()["status"] == 404
    wrong = await client.patch("/v1/events", json={})
    assert wrong.status_code == 405
    assert wrong.json()["title"] == "Method Not Allowed"


async def test_oversize_body_is_refused_before_anything_else(client: httpx.AsyncClient) -> None:
    response = await client.post("/v1/events", content=b"x" * 4096)
    assert response.status_code == 413
    assert response.json()["detail"] == "the request body exceeds 2048 bytes"


async def test_not_ready_before_start_up(client: httpx.AsyncClient) -> None:
    assert (await client.get("/healthz")).status_code == 200
    ready = await client.get("/readyz")
    assert ready.status_code == 503
    assert ready.json()["checks"]["startup"]["ok"] is False
