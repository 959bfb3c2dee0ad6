"""The helpers for service tests: polling, taps, in-process workers, service processes."""

from __future__ import annotations

import sys
import textwrap
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from faststream import FastStream
from faststream.kafka import KafkaBroker

from clarion_contracts.base import Channel
from clarion_contracts.registry import DELIVERY_STATUS
from clarion_contracts.v1 import DeliveryState, DeliveryStatus
from clarion_devstack.ports import find_free_port
from clarion_devstack.testing import (
    ProcessRun,
    WorkerHarness,
    console_script,
    eventually,
    record_headers,
    run_until_ready,
    running_worker,
)
from clarion_kit.kafka import ensure_topics
from clarion_kit.settings import ServiceSettings

# --- unit -----------------------------------------------------------------------------


async def test_eventually_returns_the_first_truthy_result() -> None:
    answers = iter([None, 0, [], "done"])
    assert await eventually(lambda: next(answers), interval=0.001) == "done"


async def test_eventually_awaits_async_predicates() -> None:
    calls: list[int] = []

    async def grows() -> list[int]:
        calls.append(1)
        return calls if len(calls) >= 3 else []

    assert await eventually(grows, interval=0.001) == [1, 1, 1]


async def test_eventually_fails_after_the_timeout() -> None:
    with pytest.raises(AssertionError, match=r"within 0\.05s"):
        await eventually(lambda: False, timeout=0.05, interval=0.01)


def test_record_headers_decodes_each_value() -> None:
    rec = SimpleNamespace(headers=[("a", b"1"), ("b", "ü".encode()), ("a", b"2")])
    assert record_headers(rec) == {"a": "2", "b": "ü"}


def test_console_script_is_beside_the_interpreter() -> None:
    assert Path(console_script("clarion")) == Path(sys.executable).parent / "clarion"


SERVER = textwrap.dedent(
    """
    import http.server, signal, sys

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            body = b'{"status": "ready", "checks": {"redis": {"ok": true}}}'
            self.send_response(200 if self.path == "/readyz" else 404)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args):
            pass

    signal.signal(signal.SIGTERM, lambda *_: sys.exit(0))
    print("serving", flush=True)
    http.server.HTTPServer(("127.0.0.1", int(sys.argv[1])), Handler).serve_forever()
    """
)


async def test_run_until_ready_stops_a_ready_process_with_sigterm(tmp_path: Path) -> None:
    script = tmp_path / "server.py"
    script.write_text(SERVER)
    port = find_free_port()
    run = await run_until_ready([sys.executable, str(script), str(port)], {}, port)
    run.assert_ready_then_stopped("redis")
    assert b"serving" in run.output


async def test_run_until_ready_reports_a_process_that_exits_first() -> None:
    port = find_free_port()
    command = [sys.executable, "-c", "print('no config'); raise SystemExit(3)"]
    run = await run_until_ready(command, {}, port, interval=0.01)
    assert (run.ready, run.returncode) == (None, 3)
    assert "no config" in run.output_tail
    with pytest.raises(AssertionError, match="never answered"):
        run.assert_ready_then_stopped()


def test_assert_ready_then_stopped_names_the_failing_check() -> None:
    ready = SimpleNamespace(
        status_code=200, text="", json=lambda: {"checks": {"redis": {"ok": False}}}
    )
    with pytest.raises(AssertionError, match="check redis"):
        ProcessRun(ready, 0, b"").assert_ready_then_stopped("redis")
    with pytest.raises(AssertionError, match="exit status 1"):
        ProcessRun(ready, 1, b"").assert_ready_then_stopped()


# --- integration ----------------------------------------------------------------------


@pytest.mark.integration
async def test_a_worker_harness_publishes_taps_and_reads_the_dlq(
    stack_settings: dict[str, Any],
) -> None:
    settings = ServiceSettings(**stack_settings)
    await ensure_topics(settings, specs=(DELIVERY_STATUS,))
    bootstrap = settings.kafka_bootstrap_servers
    app = FastStream(KafkaBroker(bootstrap))
    marker = object()
    app.context.set_global("demo_worker", marker)
    status = DeliveryStatus(
        status_id="push:r1:s1:delivered:1",
        notification_id="n1",
        version=1,
        recipient_id="ann",
        channel=Channel.PUSH,
        status=DeliveryState.DELIVERED,
        occurred_at=datetime(2025, 1, 2, tzinfo=UTC),
    )
    status_topic = settings.topic(DELIVERY_STATUS)
    async with running_worker(app, "demo_worker", bootstrap, [status_topic]) as running:
        worker, producer, tap = running
        assert worker is marker
        harness = WorkerHarness(settings, worker, producer, tap)
        await harness.publish(DELIVERY_STATUS, "n1", status.to_bytes())
        assert await eventually(harness.statuses) == [status]
        assert tap.values("another-topic") == []
        await producer.send_and_wait(
            settings.dlq(DELIVERY_STATUS),
            b"dead",
            key=b"n1",
            headers=[("x-clarion-attempts", b"3")],
        )
        value, headers = await harness.first_dead_letter(DELIVERY_STATUS)
    assert (value, headers) == (b"dead", {"x-clarion-attempts": "3"})
