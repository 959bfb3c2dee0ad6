"""The body size limit answers 413 problem+json before the app reads anything."""

from __future__ import annotations

from collections.abc import AsyncIterator

import httpx
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route

from clarion_ingest.api.middleware import BodySizeLimitMiddleware

LIMIT = 1024


def make_app() -> tuple[Starlette, list[int]]:
    seen: list[int] = []

    async def echo(request: Request) -> JSONResponse:
        body = await request.body()
        seen.append(len(body))
        return JSONResponse({"size": len(body)})

    app = Starlette(routes=[Route("/echo", echo, methods=["POST", "GET"])])
    app.add_middleware(BodySizeLimitMiddleware, max_bytes=LIMIT)
    return app, seen


async def post(app: Starlette, **kwargs: object) -> httpx.Response:
    async with httpx.AsyncClient(
        transport=httpx.ASGITransport(app=app), base_url="http://test"
    ) as client:
        return await client.post("/echo", **kwargs)  # type: ignore[arg-type]


async def test_body_within_limit_reaches_the_app_whole() -> None:
    app, seen = make_app()
    response = await post(app, content=b"x" * LIMIT)
    assert response.status_code == 200
    assert response.json() == {"size": LIMIT}
    assert seen == [LIMIT]


async def test_declared_oversize_is_refused_before_the_app_runs() -> None:
    app, seen = make_app()
    response = await post(app, content=b"x" * (LIMIT + 1))
    assert response.status_code == 413
    assert response.headers["content-type"] == "application/problem+json"
    assert response.json()["status"] == 413
    assert seen == []


async def test_chunked_oversize_is_refused() -> None:
    app, seen = make_app()

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(4):
            yield b"y" * 400

    response = await post(app, content=chunks())
    assert response.status_code == 413
    assert seen == []


async def test_invalid_content_length_is_a_400() -> None:
    app, seen = make_app()
    response = await post(app, content=b"{}", headers={"content-length": "abc"})
    assert response.status_code == 400
    assert seen == []
