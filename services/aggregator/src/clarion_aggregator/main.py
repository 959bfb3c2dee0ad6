"""``clarion-aggregator``: run the aggregator until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio
import logging

from clarion_aggregator.app import create_app


def main() -> None:
    """Run the aggregator with settings from the environment (``CLARION_AGGREGATOR_*``)."""
    asyncio.run(create_app().run(log_level=logging.INFO))


if __name__ == "__main__":
    main()
