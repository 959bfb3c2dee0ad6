"""Integration tests of ``clarion devstack up|status|env|down``."""

from __future__ import annotations

import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from clarion_devstack.background import StackPaths, process_alive, read_state
from clarion_devstack.commands.devstack import app
from clarion_devstack.probes import probe_kafka, probe_postgres, probe_redis
from clarion_devstack.stack import run_coroutine

pytestmark = pytest.mark.integration

runner = CliRunner()


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLARION_KAFKA_BOOTSTRAP_SERVERS", "CLARION_REDIS_URL", "CLARION_DATABASE_URL"):
        monkeypatch.delenv(name, raising=False)


def _exports(text: str) -> dict[str, str]:
    env = {}
    for line in text.splitlines():
        assert line.startswith("export ")
        key, _, value = line.removeprefix("export ").partition("=")
        env[key] = shlex.split(value)[0]
    return env


def test_up_status_env_down(tmp_path: Path) -> None:
    data_dir = tmp_path / "devstack"
    args = ["--data-dir", str(data_dir)]
    up = runner.invoke(app, ["up", *args])
    assert up.exit_code == 0, up.output
    assert "ready in" in up.output
    state = read_state(StackPaths(data_dir))
    assert state is not None
    try:
        again = runner.invoke(app, ["up", *args])
        assert again.exit_code == 0
        assert "already running" in again.output

        status = runner.invoke(app, ["status", *args])
        assert status.exit_code == 0, status.output
        assert status.output.count("yes") == 3

        env_result = runner.invoke(app, ["env", *args])
        assert env_result.exit_code == 0
        env = _exports(env_result.output)
        assert env == state.info.env()

        async def answers() -> None:
            await probe_kafka(env["CLARION_KAFKA_BOOTSTRAP_SERVERS"], create_topic=True)
            await probe_redis(env["CLARION_REDIS_URL"])
            await probe_postgres(env["CLARION_DATABASE_URL"])

        run_coroutine(answers)
    finally:
        down = runner.invoke(app, ["down", *args])
    assert down.exit_code == 0
    assert "stopped" in down.output
    assert not process_alive(state.pid)
    assert all(pid is None or not process_alive(pid) for pid in state.server_pids.values())

    assert "not running" in runner.invoke(app, ["down", *args]).output
    assert runner.invoke(app, ["status", *args]).exit_code == 1
    assert runner.invoke(app, ["env", *args]).exit_code == 1


def test_up_foreground_runs_until_interrupted(tmp_path: Path) -> None:
    data_dir = tmp_path / "devstack"
    paths = StackPaths(data_dir)
    clarion = Path(sys.executable).with_name("clarion")
    process = subprocess.Popen(
        [str(clarion), "devstack", "up", "--foreground", "--data-dir", str(data_dir)],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 60
        while (state := read_state(paths)) is None:
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "foreground stack not ready"
            time.sleep(0.05)
        assert state.pid == process.pid
        assert paths.env_file.is_file()
        process.send_signal(signal.SIGINT)
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    assert process.returncode == 0, output
    assert "ready in" in output
    assert "stopped" in output
    assert all(pid is None or not process_alive(pid) for pid in state.server_pids.values())
    assert not paths.state_file.exists()
    assert not paths.env_file.exists()
