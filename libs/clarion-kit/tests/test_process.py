"""Start-up of a service process: the frozen heap and uvicorn serving with it."""

from __future__ import annotations

import gc
import signal
import socket
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from clarion_kit.process import STARTUP_FAILURE, freeze_startup_heap, run_uvicorn


@pytest.fixture
def unfrozen() -> Iterator[None]:
    gc.unfreeze()
    yield
    gc.unfreeze()


def test_freeze_moves_the_live_heap_out_of_collections(unfrozen: None) -> None:
    state = [{"key": [n]} for n in range(1000)]  # long-lived containers built at start-up
    frozen = freeze_startup_heap()
    assert frozen >= len(state)
    assert gc.get_freeze_count() == frozen
    assert not any(obj is state for obj in gc.get_objects())  # no longer walked
    later: list[object] = []
    assert any(obj is later for obj in gc.get_objects())  # what comes after still is


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


SERVER = """
import gc, sys
from clarion_kit.process import run_uvicorn

async def app(scope, receive, send):
    if scope["type"] == "lifespan":
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                await send({"type": "lifespan.startup.complete"})
            else:
                await send({"type": "lifespan.shutdown.complete"})
                return
    body = str(gc.get_freeze_count()).encode()
    await send({"type": "http.response.start", "status": 200, "headers": []})
    await send({"type": "http.response.body", "body": body})

run_uvicorn(app, host="127.0.0.1", port=int(sys.argv[1]), log_config=None)
"""


def test_run_uvicorn_serves_with_the_startup_heap_frozen(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(textwrap.dedent(SERVER))
    port = _free_port()
    proc = subprocess.Popen([sys.executable, str(script), str(port)])
    try:
        frozen = None
        deadline = time.monotonic() + 30
        while frozen is None and time.monotonic() < deadline:
            try:
                frozen = int(httpx.get(f"http://127.0.0.1:{port}/", timeout=2).text)
            except httpx.HTTPError:
                time.sleep(0.1)
        assert frozen is not None
        assert frozen > 1000  # modules, uvicorn, the app
        proc.send_signal(signal.SIGTERM)
        # After its graceful shutdown uvicorn raises the signal it caught again.
        assert proc.wait(20) == -signal.SIGTERM
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def test_run_uvicorn_exits_with_startup_failure_when_the_lifespan_fails() -> None:
    async def app(scope: dict[str, object], receive: object, send: object) -> None:
        raise RuntimeError("cannot start")

    with pytest.raises(SystemExit) as exited:
        run_uvicorn(app, host="127.0.0.1", port=_free_port(), lifespan="on", log_config=None)
    assert exited.value.code == STARTUP_FAILURE
