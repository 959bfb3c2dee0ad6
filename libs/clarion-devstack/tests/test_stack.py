"""Tests of the embedded stack: pure parts (unit) and real start/stop (integration)."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
import tempfile
import textwrap
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from clarion_devstack.background import process_alive
from clarion_devstack.ports import find_free_port, port_is_free
from clarion_devstack.probes import probe_kafka, probe_postgres, probe_redis
from clarion_devstack.stack import (
    ENV_DATA_DIR,
    ENV_DATABASE,
    ENV_KAFKA,
    ENV_REDIS,
    Stack,
    StackConfig,
    StackError,
    StackInfo,
    default_data_dir,
    find_project_root,
    redis_config,
    remove_stale_data_dirs,
    render_env_file,
    render_exports,
    run_coroutine,
    server_ports,
    traversable_by_others,
)

INFO = StackInfo(
    kafka_bootstrap_servers="127.0.0.1:9092",
    redis_url="redis://127.0.0.1:6379/0",
    database_url="postgresql+asyncpg://clarion:clarion@127.0.0.1:5432/clarion",
)


# --- unit -----------------------------------------------------------------------------


def test_env_maps_settings_to_the_shared_clarion_variables() -> None:
    assert INFO.env() == {
        "CLARION_KAFKA_BOOTSTRAP_SERVERS": "127.0.0.1:9092",
        "CLARION_REDIS_URL": "redis://127.0.0.1:6379/0",
        "CLARION_DATABASE_URL": "postgresql+asyncpg://clarion:clarion@127.0.0.1:5432/clarion",
    }


def test_info_round_trips_through_a_dict() -> None:
    assert StackInfo.from_dict(json.loads(json.dumps(INFO.to_dict()))) == INFO


def test_render_exports_is_evaluated_back_to_the_same_values_by_a_shell() -> None:
    env = {"CLARION_A": "plain", "CLARION_B": 'it\'s $HOME; `x` "q" &'}
    script = render_exports(env) + 'printf "%s\\n%s" "$CLARION_A" "$CLARION_B"'
    out = subprocess.run(["sh", "-c", script], capture_output=True, text=True, check=True)
    assert out.stdout == 'plain\nit\'s $HOME; `x` "q" &'
    assert render_exports({}) == ""
    assert render_exports(INFO.env()).splitlines()[0].startswith("export CLARION_DATABASE_URL=")


def test_render_env_file_has_one_sorted_line_per_variable() -> None:
    lines = render_env_file(INFO.env()).splitlines()
    assert lines[0].startswith("#")
    assert lines[1:] == [
        "CLARION_DATABASE_URL=postgresql+asyncpg://clarion:clarion@127.0.0.1:5432/clarion",
        "CLARION_KAFKA_BOOTSTRAP_SERVERS=127.0.0.1:9092",
        "CLARION_REDIS_URL=redis://127.0.0.1:6379/0",
    ]


def test_redis_config_binds_loopback_without_persistence(tmp_path: Path) -> None:
    conf = redis_config("127.0.0.1", 7001, tmp_path).splitlines()
    assert "bind 127.0.0.1" in conf
    assert "port 7001" in conf
    assert 'save ""' in conf
    assert "appendonly no" in conf
    assert f'dir "{tmp_path}"' in conf


def test_server_ports_reads_every_address() -> None:
    assert server_ports(INFO) == {
        "kafka": ("127.0.0.1", 9092),
        "redis": ("127.0.0.1", 6379),
        "postgres": ("127.0.0.1", 5432),
    }


def test_find_project_root_stops_at_the_git_directory(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    nested = tmp_path / "services" / "x" / "src"
    nested.mkdir(parents=True)
    assert find_project_root(nested) == tmp_path.resolve()


def test_default_data_dir_honours_the_override(tmp_path: Path) -> None:
    assert default_data_dir({ENV_DATA_DIR: str(tmp_path / "d")}) == (tmp_path / "d").resolve()
    assert default_data_dir({}).parts[-2:] == (".clarion", "devstack")


def test_run_coroutine_works_inside_a_running_loop() -> None:
    async def answer() -> int:
        return 42

    async def outer() -> int:
        return run_coroutine(answer)

    assert run_coroutine(outer) == 42


def test_remove_stale_data_dirs_spares_young_and_locked_directories(tmp_path: Path) -> None:
    import fcntl

    stale, young, locked, other = (tmp_path / n for n in ("ds-a", "ds-b", "ds-c", "x-d"))
    for path in (stale, young, locked, other):
        path.mkdir()
        (path / "file").write_text("x")
    old = time.time() - 3600
    for path in (stale, locked, other):
        os.utime(path, (old, old))
    holder = os.open(locked / ".lock", os.O_RDWR | os.O_CREAT)
    fcntl.flock(holder, fcntl.LOCK_EX)
    try:
        assert remove_stale_data_dirs(tmp_path, "ds-", min_age=600) == [stale]
    finally:
        os.close(holder)
    assert not stale.exists()
    assert young.exists()
    assert locked.exists()
    assert other.exists()


def test_traversable_by_others(tmp_path: Path) -> None:
    private = tmp_path / "private"
    private.mkdir(mode=0o700)
    (private / "inner").mkdir(mode=0o755)
    assert not traversable_by_others(private / "inner")
    assert traversable_by_others(Path("/"))
    private.chmod(0o711)
    assert traversable_by_others(private / "inner") is traversable_by_others(tmp_path)


@pytest.mark.integration
@pytest.mark.skipif(os.geteuid() != 0, reason="PostgreSQL runs under its own account only as root")
def test_as_root_a_cluster_in_a_private_directory_goes_to_the_temp_directory(
    devstack: StackInfo,
) -> None:
    with tempfile.TemporaryDirectory(prefix="clarion-private-") as private:  # mode 0700
        environ = {ENV_KAFKA: devstack.kafka_bootstrap_servers, ENV_REDIS: devstack.redis_url}
        stack = Stack(StackConfig(data_dir=Path(private) / "devstack", environ=environ))
        info = stack.start()
        try:
            pgdata = stack.postgres_data_dir
            assert pgdata is not None
            assert pgdata.parent == Path(tempfile.gettempdir())
            assert pgdata.name.startswith("clarion-pgdata-")
            _answers(info)
        finally:
            stack.stop()
        assert not pgdata.exists()


# --- integration ----------------------------------------------------------------------


@pytest.fixture
def data_dir() -> Iterator[Path]:
    path = Path(tempfile.mkdtemp(prefix="clarion-devstack-test-"))
    path.chmod(0o755)
    yield path
    import shutil

    shutil.rmtree(path, ignore_errors=True)


def _answers(info: StackInfo) -> None:
    async def check() -> None:
        await probe_kafka(info.kafka_bootstrap_servers, create_topic=True)
        await probe_redis(info.redis_url)
        await probe_postgres(info.database_url)

    run_coroutine(check)


@pytest.mark.integration
def test_stack_starts_every_server_and_frees_the_ports_after_stop(data_dir: Path) -> None:
    stack = Stack(StackConfig(data_dir=data_dir, environ={}))
    info = stack.start()
    try:
        _answers(info)
        assert set(stack.processes) == {"kafka", "redis", "postgres"}
        assert stack.external == frozenset()
        ports = {name: port for name, (_, port) in server_ports(info).items()}
        assert len(set(ports.values())) == 3
        assert all(not port_is_free(port) for port in ports.values())
        assert info.database_url.startswith("postgresql+asyncpg://clarion:clarion@127.0.0.1:")
        assert info.database_url.endswith("/clarion")
        pids = [process.pid for process in stack.processes.values()]
        pgdata = stack.postgres_data_dir
        assert pgdata == data_dir / "postgres" / "pgdata"
        assert (pgdata / "PG_VERSION").is_file()
    finally:
        stack.stop()
    assert not stack.running
    assert all(not process_alive(pid) for pid in pids)
    assert all(port_is_free(port) for port in ports.values()), ports
    assert not pgdata.exists()
    assert stack.postgres_data_dir is None
    stack.stop()  # idempotent


@pytest.mark.integration
def test_a_second_stack_cannot_share_a_data_directory(data_dir: Path, devstack: StackInfo) -> None:
    # Reuse the session's servers so the first stack starts nothing.
    environ = devstack.env()
    second = Stack(StackConfig(data_dir=data_dir, environ=environ))
    with (
        Stack(StackConfig(data_dir=data_dir, environ=environ)),
        pytest.raises(StackError, match="another development stack"),
    ):
        second.start()
    assert not second.running


@pytest.mark.integration
def test_env_override_reuses_an_already_running_redis(data_dir: Path, devstack: StackInfo) -> None:
    import redis

    stack = Stack(StackConfig(data_dir=data_dir, environ={ENV_REDIS: devstack.redis_url}))
    info = stack.start()
    try:
        assert info.redis_url == devstack.redis_url
        assert stack.external == frozenset({"redis"})
        assert set(stack.processes) == {"kafka", "postgres"}
        assert info.kafka_bootstrap_servers != devstack.kafka_bootstrap_servers
        key = f"override-{os.getpid()}-{time.monotonic_ns()}"
        with redis.Redis.from_url(info.redis_url) as via_stack:
            via_stack.set(key, b"shared", ex=60)
        with redis.Redis.from_url(devstack.redis_url) as via_session:
            assert via_session.get(key) == b"shared"
    finally:
        stack.stop()
    # Stopping the stack must leave the server it did not start running.
    with redis.Redis.from_url(devstack.redis_url) as via_session:
        assert via_session.ping()


@pytest.mark.integration
def test_env_override_waits_for_the_server_and_fails_when_it_never_answers(
    data_dir: Path, devstack: StackInfo
) -> None:
    dead = f"127.0.0.1:{find_free_port()}"
    environ = {ENV_KAFKA: dead, ENV_REDIS: devstack.redis_url, ENV_DATABASE: devstack.database_url}
    stack = Stack(StackConfig(data_dir=data_dir, environ=environ, startup_timeout=1.5))
    with pytest.raises(StackError, match=r"kafka did not become ready.*\$CLARION_KAFKA"):
        stack.start()
    assert not stack.running
    assert stack.processes == {}


@pytest.mark.integration
def test_servers_outlive_the_thread_that_started_them(data_dir: Path, devstack: StackInfo) -> None:
    import redis

    environ = {ENV_KAFKA: devstack.kafka_bootstrap_servers, ENV_DATABASE: devstack.database_url}
    stack = Stack(StackConfig(data_dir=data_dir, environ=environ))
    starter = threading.Thread(target=stack.start)
    starter.start()
    starter.join()
    try:
        assert set(stack.processes) == {"redis"}
        for _ in range(10):  # the kernel would signal right after the thread exits
            assert stack.processes["redis"].popen.poll() is None
            with redis.Redis.from_url(stack.info.redis_url) as client:
                assert client.ping()
            time.sleep(0.05)
    finally:
        stack.stop()


@pytest.mark.integration
def test_a_server_whose_port_was_taken_is_restarted_on_another_port(
    data_dir: Path, devstack: StackInfo, monkeypatch: pytest.MonkeyPatch
) -> None:
    import socket

    import clarion_devstack.stack.core as stack_core

    taken = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    taken.bind(("127.0.0.1", 0))
    taken.listen()
    taken_port = taken.getsockname()[1]
    offered = iter([taken_port])

    def finder(host: str, *, exclude: frozenset[int] = frozenset()) -> int:
        return next(offered, None) or find_free_port(host, exclude=exclude)

    monkeypatch.setattr(stack_core, "find_free_port", finder)
    environ = {ENV_KAFKA: devstack.kafka_bootstrap_servers, ENV_DATABASE: devstack.database_url}
    try:
        with Stack(StackConfig(data_dir=data_dir, environ=environ)) as info:
            _, port = server_ports(info)["redis"]
            assert port != taken_port
            _answers(info)
        log = (data_dir / "redis" / "redis.log").read_text()
        assert "Address already in use" in log
    finally:
        taken.close()


_CHILD = textwrap.dedent(
    """
    import json, sys, time
    from pathlib import Path
    from clarion_devstack.stack import Stack, StackConfig

    stack = Stack(StackConfig(data_dir=Path(sys.argv[1]), environ={}))
    stack.start()
    print(json.dumps({n: p.pid for n, p in stack.processes.items()}), flush=True)
    time.sleep(120)
    """
)


@pytest.mark.integration
def test_servers_die_with_a_parent_killed_by_sigkill(data_dir: Path) -> None:
    parent = subprocess.Popen(
        [sys.executable, "-c", _CHILD, str(data_dir)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert parent.stdout is not None
        pids = json.loads(parent.stdout.readline())
        assert set(pids) == {"kafka", "redis", "postgres"}
        assert all(process_alive(pid) for pid in pids.values())
    finally:
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
    deadline = time.monotonic() + 15
    while any(process_alive(pid) for pid in pids.values()) and time.monotonic() < deadline:
        time.sleep(0.05)
    survivors = {name: pid for name, pid in pids.items() if process_alive(pid)}
    for pid in survivors.values():
        os.kill(pid, signal.SIGKILL)
    assert survivors == {}


@pytest.mark.integration
def test_a_crashed_server_restarts_on_its_port_keeping_what_a_real_one_keeps(
    data_dir: Path,
) -> None:
    import asyncpg
    import redis.asyncio as aioredis

    from clarion_devstack.probes import asyncpg_dsn

    stack = Stack(StackConfig(data_dir=data_dir, environ={}))
    info = stack.start()
    dsn = asyncpg_dsn(info.database_url)

    async def commit_rows(count: int) -> None:
        conn = await asyncpg.connect(dsn)
        try:
            await conn.execute("CREATE TABLE IF NOT EXISTS acked (n int PRIMARY KEY)")
            # One transaction per row, as the inbox consumer commits batches: every
            # commit that returned is one the server promised to keep.
            for n in range(count):
                await conn.execute("INSERT INTO acked VALUES ($1)", n)
        finally:
            await conn.close()

    async def rows() -> int:
        conn = await asyncpg.connect(dsn)
        try:
            return int(await conn.fetchval("SELECT count(*) FROM acked"))
        finally:
            await conn.close()

    async def redis_keys() -> int:
        client = aioredis.from_url(info.redis_url)
        try:
            return int(await client.dbsize())
        finally:
            await client.aclose()

    async def fill_redis() -> None:
        client = aioredis.from_url(info.redis_url)
        try:
            await client.set("k", "v")
        finally:
            await client.aclose()

    try:
        ports = server_ports(info)
        run_coroutine(lambda: commit_rows(2000))
        # SIGKILL right after the last acknowledged commit: with asynchronous commit
        # the WAL of the last few hundred milliseconds died with the server.
        stack.restart("postgres")
        assert run_coroutine(rows) == 2000
        run_coroutine(fill_redis)
        assert run_coroutine(redis_keys) == 1
        stack.restart("redis")
        assert run_coroutine(redis_keys) == 0
        stack.restart("kafka")
        _answers(info)
        assert server_ports(info) == ports
        stack.signal("redis", signal.SIGSTOP)
        stack.signal("redis", signal.SIGCONT)
        assert run_coroutine(redis_keys) == 0
        with pytest.raises(StackError):
            stack.restart("nonexistent")
        # Nothing restarts a server that died on its own; watch() says which one.
        stack.signal("kafka", signal.SIGKILL)
        died = run_coroutine(lambda: asyncio.wait_for(stack.watch(0.05), 10))
        assert died.startswith("kafka exited")
    finally:
        stack.stop()
