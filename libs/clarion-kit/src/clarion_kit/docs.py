"""Interactive API documentation (Swagger UI and ReDoc) served without any CDN.

FastAPI's own ``/docs`` and ``/redoc`` pages load their JavaScript and CSS from a
CDN, so an offline or air-gapped installation shows a blank page. The same pages
here load the assets shipped inside the ``fastapi-offline`` wheel, served by the
application itself under ``/api-docs-assets``.

Usage, with FastAPI's built-in pages switched off::

    app = FastAPI(docs_url=None, redoc_url=None, openapi_url="/openapi.json")
    if settings.serves_api_docs:
        serve_api_docs(app)
"""

from __future__ import annotations

from importlib.resources import files

from fastapi import FastAPI
from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
from fastapi.staticfiles import StaticFiles
from starlette.requests import Request
from starlette.responses import HTMLResponse

ASSETS_PATH = "/api-docs-assets"
"""Where the Swagger UI and ReDoc assets are served."""


def assets_dir() -> str:
    """The directory of the packaged Swagger UI / ReDoc assets (``fastapi_offline/static``).

    Raises:
        ModuleNotFoundError: the ``fastapi-offline`` wheel is not installed.
    """
    return str(files("fastapi_offline").joinpath("static"))


def serve_api_docs(app: FastAPI, *, docs_url: str = "/docs", redoc_url: str = "/redoc") -> None:
    """Add Swagger UI at ``docs_url`` and ReDoc at ``redoc_url``, assets served locally.

    Both pages read the schema from ``app.openapi_url`` and honour the ASGI
    ``root_path`` (behind a path-prefixing proxy). Neither page is in the schema.

    Raises:
        ValueError: ``app`` serves no OpenAPI schema (``openapi_url`` is None).
    """
    if app.openapi_url is None:
        raise ValueError("the application serves no OpenAPI schema to document")
    openapi_url = app.openapi_url
    app.mount(ASSETS_PATH, StaticFiles(directory=assets_dir()), name="api-docs-assets")

    @app.get(docs_url, include_in_schema=False)
    async def swagger_ui(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_swagger_ui_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - Swagger UI",
            swagger_js_url=f"{root}{ASSETS_PATH}/swagger-ui-bundle.js",
            swagger_css_url=f"{root}{ASSETS_PATH}/swagger-ui.css",
            swagger_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
        )

    @app.get(redoc_url, include_in_schema=False)
    async def redoc(request: Request) -> HTMLResponse:
        root = request.scope.get("root_path", "")
        return get_redoc_html(
            openapi_url=f"{root}{openapi_url}",
            title=f"{app.title} - ReDoc",
            redoc_js_url=f"{root}{ASSETS_PATH}/redoc.standalone.js",
            redoc_favicon_url=f"{root}{ASSETS_PATH}/favicon.png",
            with_google_fonts=False,
        )
