"""``clarion-aggregator``: run the aggregator until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from clarion_aggregator.app import create_app
from clarion_kit.process import freeze_startup_heap_hook


def main() -> None:
    """Run the aggregator with settings from the environment (``CLARION_AGGREGATOR_*``)."""
    app = create_app()
    app.after_startup(freeze_startup_heap_hook)
    asyncio.run(app.run(log_level=logging.INFO))


if __name__ == "__main__":
    main()
