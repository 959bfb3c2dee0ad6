"""``clarion-email-worker`` as a process: becomes ready, stops cleanly on SIGTERM."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest

pytestmark = pytest.mark.integration


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def test_process_serves_readyz_and_exits_on_sigterm(stack_env: dict[str, str]) -> None:
    port = free_port()
    env = {
        **os.environ,
        **stack_env,
        "CLARION_EMAIL_HTTP_PORT": str(port),
        "CLARION_KAFKA_SESSION_TIMEOUT_MS": "2000",
        "CLARION_LOG_JSON": "true",
    }
    script = Path(sys.executable).with_name("clarion-email-worker")
    proc = await asyncio.create_subprocess_exec(
        str(script), env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.STDOUT
    )
    try:
        ready: Any = None
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            for _ in range(300):
                try:
                    ready = await client.get("/readyz")
                    if ready.status_code == 200:
                        break
                except httpx.TransportError:
                    pass
                if proc.returncode is not None:
                    break
                await asyncio.sleep(0.1)
        assert ready is not None
        assert ready.status_code == 200
        assert ready.json()["checks"]["redis"]["ok"] is True
        proc.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(proc.communicate(), timeout=30)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
    assert proc.returncode == 0, output.decode()[-2000:]
