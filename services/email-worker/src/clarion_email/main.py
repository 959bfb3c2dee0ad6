"""``clarion-email-worker``: run email-worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from clarion_email.app import create_app
from clarion_kit.process import freeze_startup_heap_hook


def main() -> None:
    """Run the email-worker application (FastStream handles the signals)."""
    app = create_app()
    app.after_startup(freeze_startup_heap_hook)
    asyncio.run(app.run())


if __name__ == "__main__":
    main()
