"""``clarion-push-worker``: run push-worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from clarion_kit.process import freeze_startup_heap_hook
from clarion_push.app import create_app


def main() -> None:
    """Run the push-worker application (FastStream handles the signals)."""
    app = create_app()
    app.after_startup(freeze_startup_heap_hook)
    asyncio.run(app.run())


if __name__ == "__main__":
    main()
