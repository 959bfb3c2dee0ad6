"""Tests of the background stack's records (unit) and its supervisor (integration)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from clarion_devstack.background import (
    StackPaths,
    StackState,
    process_alive,
    read_pid,
    read_state,
    start_background,
    stop_background,
)
from clarion_devstack.stack import StackConfig, StackError, StackInfo

INFO = StackInfo("127.0.0.1:1", "redis://127.0.0.1:2/0", "postgresql+asyncpg://u:p@127.0.0.1:3/d")


def _state(pid: int, data_dir: Path) -> StackState:
    return StackState(
        pid=pid,
        info=INFO,
        server_pids={"kafka": 11, "redis": None, "postgres": 13},
        started_at=1_800_000_000.5,
        startup_seconds=1.25,
        data_dir=data_dir,
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_paths_follow_the_documented_layout(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path / ".clarion" / "devstack")
    assert paths.state_file == tmp_path / ".clarion" / "devstack" / "state.json"
    assert paths.pid_file == tmp_path / ".clarion" / "devstack" / "devstack.pid"
    assert paths.env_file == tmp_path / ".clarion" / "devstack.env"


def test_state_round_trips_through_json(tmp_path: Path) -> None:
    state = _state(123, tmp_path)
    assert StackState.from_json(state.to_json()) == state


def test_malformed_state_is_rejected() -> None:
    with pytest.raises(ValueError, match="malformed"):
        StackState.from_json('{"pid": 1}')
    with pytest.raises(ValueError, match="malformed"):
        StackState.from_json("not json")


def test_process_alive() -> None:
    assert process_alive(os.getpid())
    assert not process_alive(_dead_pid())


def test_records_of_a_dead_supervisor_are_ignored(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    dead = _dead_pid()
    paths.state_file.write_text(_state(dead, tmp_path).to_json(), "utf-8")
    paths.pid_file.write_text(f"{dead}\n", "utf-8")
    assert read_state(paths) is None
    assert read_pid(paths) is None
    assert stop_background(paths) is False
    assert not paths.state_file.exists()
    assert not paths.pid_file.exists()


def test_records_of_a_live_supervisor_are_read(tmp_path: Path) -> None:
    paths = StackPaths(tmp_path)
    paths.state_file.write_text(_state(os.getpid(), tmp_path).to_json(), "utf-8")
    paths.pid_file.write_text(f"{os.getpid()}\n", "utf-8")
    assert read_state(paths) == _state(os.getpid(), tmp_path)
    assert read_pid(paths) == os.getpid()


@pytest.mark.integration
def test_background_stack_starts_detached_and_stops(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, devstack: StackInfo
) -> None:
    # Kafka and PostgreSQL come from the session stack: this test is about supervision.
    monkeypatch.setenv("CLARION_KAFKA_BOOTSTRAP_SERVERS", devstack.kafka_bootstrap_servers)
    monkeypatch.setenv("CLARION_DATABASE_URL", devstack.database_url)
    monkeypatch.delenv("CLARION_REDIS_URL", raising=False)
    paths = StackPaths(tmp_path / "devstack")
    state = start_background(StackConfig(data_dir=paths.data_dir))
    try:
        assert state.pid != os.getpid()
        assert read_state(paths) == state
        assert state.server_pids["kafka"] is None
        assert state.server_pids["postgres"] is None
        redis_pid = state.server_pids["redis"]
        assert redis_pid is not None
        assert process_alive(redis_pid)
        assert state.info.redis_url != devstack.redis_url
        assert "CLARION_REDIS_URL=" + state.info.redis_url in paths.env_file.read_text("utf-8")
        with pytest.raises(StackError, match="already runs"):
            start_background(StackConfig(data_dir=paths.data_dir))
        # A second supervisor started behind the CLI's back leaves the records alone.
        second = subprocess.run(
            [
                sys.executable,
                "-m",
                "clarion_devstack.background",
                "--data-dir",
                str(paths.data_dir),
            ],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        assert second.returncode == 1
        assert "already runs" in second.stderr
        assert read_state(paths) == state
        assert read_pid(paths) == state.pid
    finally:
        assert stop_background(paths) is True
    assert not process_alive(state.pid)
    assert not process_alive(redis_pid)
    assert not paths.state_file.exists()
    assert not paths.env_file.exists()
