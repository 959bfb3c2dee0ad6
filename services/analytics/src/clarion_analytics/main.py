"""``clarion-analytics``: serve the analytics API, dashboard and consumers with uvicorn."""

from __future__ import annotations

from clarion_analytics.app import create_app
from clarion_analytics.settings import AnalyticsSettings
from clarion_kit.process import run_uvicorn


def main() -> None:
    """Run analytics on ``http_host:http_port`` until SIGINT/SIGTERM (graceful shutdown)."""
    settings = AnalyticsSettings()
    run_uvicorn(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        lifespan="on",
        log_config=None,
        access_log=False,
        timeout_graceful_shutdown=20,
    )


if __name__ == "__main__":
    main()
