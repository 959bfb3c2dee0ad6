"""``clarion-gateway``: run one realtime-gateway instance until SIGTERM/SIGINT."""

from __future__ import annotations

import asyncio
import signal

from clarion_gateway.app import create_app
from clarion_gateway.settings import GatewaySettings
from clarion_kit.logging import configure_logging
from clarion_kit.process import freeze_startup_heap
from clarion_kit.tracing import configure_tracing


async def serve(settings: GatewaySettings) -> None:
    """Start the gateway and stop it gracefully on SIGTERM or SIGINT."""
    gateway = create_app(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with gateway.lifespan():
        freeze_startup_heap()
        await stop.wait()


def main() -> None:
    """Console entry point (settings from ``CLARION_GATEWAY_*`` / ``CLARION_*``)."""
    settings = GatewaySettings()
    configure_logging(settings)
    configure_tracing(settings)
    if settings.event_loop == "uvloop":
        import uvloop

        uvloop.run(serve(settings))
    else:
        asyncio.run(serve(settings))


if __name__ == "__main__":
    main()
