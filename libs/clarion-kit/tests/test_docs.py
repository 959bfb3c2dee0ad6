"""API documentation pages that work offline: every asset from the application itself."""

from __future__ import annotations

import re

import httpx
import pytest
from fastapi import FastAPI

from clarion_kit.docs import ASSETS_PATH, serve_api_docs


def _app() -> FastAPI:
    app = FastAPI(title="Docs test", docs_url=None, redoc_url=None)

    @app.get("/things")
    async def things() -> list[str]:
        return []

    serve_api_docs(app)
    return app


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
async def test_pages_load_every_asset_from_the_application(page: str) -> None:
    transport = httpx.ASGITransport(app=_app())
    async with httpx.AsyncClient(transport=transport, base_url="http://docs.test") as client:
        html = (await client.get(page)).text
        sources = re.findall(r'(?:src|href)="([^"]+)"', html) + re.findall(r"url: '([^']+)'", html)
        assert sources, html
        # Nothing from another host: offline, a CDN link leaves the page blank.
        assert all(s.startswith("/") for s in sources), sources
        assert "fonts.googleapis" not in html
        assets = [s for s in sources if s.startswith(ASSETS_PATH)]
        assert assets, sources
        for asset in assets:
            answer = await client.get(asset)
            assert answer.status_code == 200, asset
            assert len(answer.content) > 1000, asset
        assert (await client.get("/openapi.json")).json()["info"]["title"] == "Docs test"


def test_an_application_without_a_schema_cannot_be_documented() -> None:
    with pytest.raises(ValueError, match="no OpenAPI schema"):
        serve_api_docs(FastAPI(openapi_url=None))
