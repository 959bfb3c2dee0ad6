"""The process supervisor: output, CPU priority and the launch plan of a full Clarion."""

from __future__ import annotations

import asyncio
import os
import sys
from pathlib import Path

import httpx
import pytest

from clarion_devstack.supervisor import ServiceSpec, Supervisor

_SLEEPER = "import time; print('up', flush=True); time.sleep(60)"


async def test_a_service_runs_at_its_cpu_priority_and_its_output_is_echoed(
    tmp_path: Path,
) -> None:
    lines: list[tuple[str, str]] = []
    supervisor = Supervisor(tmp_path, lambda name, _colour, line: lines.append((name, line)))
    base = os.getpriority(os.PRIO_PROCESS, 0)
    try:
        await supervisor.start(ServiceSpec("plain", [sys.executable, "-c", _SLEEPER]))
        await supervisor.start(ServiceSpec("low", [sys.executable, "-c", _SLEEPER], nice=7))
        for _ in range(100):
            if {name for name, line in lines if "up" in line} == {"plain", "low"}:
                break
            await asyncio.sleep(0.05)
        plain, low = supervisor.pid("plain"), supervisor.pid("low")
        assert plain is not None
        assert low is not None
        assert os.getpriority(os.PRIO_PROCESS, plain) == base
        assert os.getpriority(os.PRIO_PROCESS, low) == min(base + 7, 19)
        assert {name for name, line in lines if "up" in line} == {"plain", "low"}
    finally:
        await supervisor.stop()
    assert supervisor.pid("low") is None
    assert "up" in (tmp_path / "low.log").read_text()


def test_services_off_the_live_path_yield_the_cpu(tmp_path: Path) -> None:
    from clarion_devstack.launch import OFF_PATH_NICE, LaunchConfig, Ports, service_specs
    from clarion_devstack.stack import StackInfo

    info = StackInfo(
        kafka_bootstrap_servers="127.0.0.1:1",
        redis_url="redis://127.0.0.1:2/0",
        database_url="postgresql+asyncpg://u:p@127.0.0.1:3/d",
    )
    config = LaunchConfig(info=info, ports=Ports.free(), state_dir=tmp_path)
    nice = {spec.name: spec.nice for spec in service_specs(config)}
    assert OFF_PATH_NICE > 0
    assert nice == {
        "mail-sink": OFF_PATH_NICE,
        "aggregator": 0,
        "realtime-gateway": 0,
        "push-worker": OFF_PATH_NICE,
        "email-worker": OFF_PATH_NICE,
        "analytics": OFF_PATH_NICE,
        "ingest-api": 0,
    }


async def test_start_all_starts_every_service_then_waits_until_each_is_ready(
    tmp_path: Path,
) -> None:
    from clarion_devstack.ports import find_free_port
    from clarion_devstack.supervisor import ServiceFailed

    port = find_free_port("127.0.0.1")
    web = ServiceSpec(
        "web",
        [sys.executable, "-m", "http.server", str(port), "--bind", "127.0.0.1"],
        ready_url=f"http://127.0.0.1:{port}/",
    )
    supervisor = Supervisor(tmp_path, lambda *_: None)
    try:
        await supervisor.start_all([web, ServiceSpec("plain", [sys.executable, "-c", _SLEEPER])])
        assert supervisor.names == ["web", "plain"]
        assert supervisor.pid("web") is not None
        assert supervisor.pid("plain") is not None
        # Ready means the URL answers, not that the process merely started.
        async with httpx.AsyncClient() as http:
            assert (await http.get(f"http://127.0.0.1:{port}/")).status_code == 200
    finally:
        await supervisor.stop()

    silent = ServiceSpec(
        "silent",
        [sys.executable, "-c", _SLEEPER],
        ready_url=f"http://127.0.0.1:{find_free_port('127.0.0.1')}/readyz",
    )
    supervisor = Supervisor(tmp_path, lambda *_: None)
    try:
        with pytest.raises(ServiceFailed, match="silent not ready"):
            await supervisor.start_all([silent], ready_timeout=1)
    finally:
        await supervisor.stop()
