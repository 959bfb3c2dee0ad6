"""The dashboard page at ``/``: static HTML + JS that draws its charts as inline SVG."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).resolve().parent.parent / "static"

router = APIRouter(include_in_schema=False)


@router.get("/")
async def index() -> FileResponse:
    """The dashboard page (no external resources: works without network)."""
    return FileResponse(STATIC_DIR / "index.html", media_type="text/html; charset=utf-8")


def static_files() -> StaticFiles:
    """The app serving ``/static`` (dashboard script and stylesheet)."""
    return StaticFiles(directory=STATIC_DIR)
