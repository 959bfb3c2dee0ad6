"""``clarion-ingest-api``: run ingest-api with uvicorn."""

from __future__ import annotations

from clarion_ingest.app import create_app
from clarion_ingest.settings import IngestSettings
from clarion_kit.logging import configure_logging
from clarion_kit.process import run_uvicorn
from clarion_kit.tracing import configure_tracing


def main() -> None:
    """Read settings from the environment, configure logs and traces, and serve HTTP.

    The start-up heap is frozen once the server started (:mod:`clarion_kit.process`).
    """
    settings = IngestSettings()
    configure_logging(settings)
    configure_tracing(settings)
    run_uvicorn(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()
