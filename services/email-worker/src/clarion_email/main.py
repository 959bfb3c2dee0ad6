"""``clarion-email-worker``: run email-worker until SIGINT/SIGTERM."""

from __future__ import annotations

import asyncio

from clarion_email.app import create_app


def main() -> None:
    """Run the email-worker application (FastStream handles the signals)."""
    asyncio.run(create_app().run())


if __name__ == "__main__":
    main()
