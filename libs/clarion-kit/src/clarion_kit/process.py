"""Start-up of a service process: a frozen start-up heap, and uvicorn serving with it.

A service builds most of its long-lived objects while it starts: imported modules,
pydantic and FastAPI schemas, the OpenAPI document, Jinja2 templates, clients and
their pools. CPython's cyclic garbage collector walks all of them again in every
full (oldest generation) collection; for ingest-api that is about 160,000 objects
and 95 ms on one of the 2-core benchmark machines, a pause every request waiting on
the event loop takes in its latency. :func:`freeze_startup_heap` moves what is alive
once start-up is over to the collector's permanent generation (``gc.freeze``, as
the Python documentation describes for long-lived state), so later collections walk
only what was allocated since.

The entry points call it when the service is ready: :func:`run_uvicorn` for the
HTTP services, a FastStream ``after_startup`` hook for the workers, and the
gateway after its lifespan started. Applications built in tests are never frozen.
"""

from __future__ import annotations

import asyncio
import gc
import socket
from typing import Any

import uvicorn

STARTUP_FAILURE = 3
"""Exit status when the server did not start (uvicorn's own value)."""


def freeze_startup_heap() -> int:
    """Collect garbage, then exempt every object still alive from later collections.

    Objects frozen here are never walked or freed by the cyclic collector again
    (reference counting still frees them), which is right for state that lives as
    long as the process. Call it once, when start-up is over.

    Returns:
        How many objects are now in the permanent generation.
    """
    gc.collect()
    gc.freeze()
    return gc.get_freeze_count()


async def freeze_startup_heap_hook() -> None:
    """:func:`freeze_startup_heap` as an async FastStream ``after_startup`` hook."""
    freeze_startup_heap()


def run_uvicorn(app: Any, **options: Any) -> None:
    """Serve ``app`` like ``uvicorn.run(app, **options)``, freezing the heap once started.

    The heap is frozen as soon as uvicorn's start-up completed (the lifespan's
    start-up has run and the sockets listen), before the first request is served.

    Args:
        app: the ASGI application.
        **options: ``uvicorn.Config`` keyword arguments (host, port, log_config...);
            reload and several workers are not supported here.

    Raises:
        SystemExit: with :data:`STARTUP_FAILURE` when the server did not start (for
            example the lifespan's start-up raised), as ``uvicorn.run`` does.
    """
    config = uvicorn.Config(app, **options)
    server = _FreezingServer(config)
    with asyncio.Runner(loop_factory=config.get_loop_factory()) as runner:
        runner.run(server.serve())
    if not server.started:
        raise SystemExit(STARTUP_FAILURE)


class _FreezingServer(uvicorn.Server):
    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets=sockets)
        # Synchronous, before the loop runs again: no request is served unfrozen.
        if self.started:
            freeze_startup_heap()
