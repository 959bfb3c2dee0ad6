"""``clarion-push-worker``: run push-worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from clarion_push.app import create_app


def main() -> None:
    """Run the push-worker application (FastStream handles the signals)."""
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
