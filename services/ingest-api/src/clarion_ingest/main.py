"""``clarion-ingest-api``: run ingest-api with uvicorn."""

from __future__ import annotations

import uvicorn

from clarion_ingest.app import create_app
from clarion_ingest.settings import IngestSettings
from clarion_kit.logging import configure_logging
from clarion_kit.tracing import configure_tracing


def main() -> None:
    """Read settings from the environment, configure logs and traces, and serve HTTP."""
    settings = IngestSettings()
    configure_logging(settings)
    configure_tracing(settings)
    uvicorn.run(
        create_app(settings),
        host=settings.http_host,
        port=settings.http_port,
        log_config=None,
        proxy_headers=True,
        timeout_graceful_shutdown=15,
    )


if __name__ == "__main__":
    main()
