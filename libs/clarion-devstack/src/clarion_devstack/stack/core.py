"""The :class:`Stack`: a Kafka-protocol broker, Redis and PostgreSQL as one start/stop unit.

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
import contextlib
import fcntl
import functools
import os
import shutil
import signal
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from clarion_devstack.ports import find_free_port
from clarion_devstack.stack.config import (
    ENV_DATABASE,
    ENV_KAFKA,
    ENV_REDIS,
    KAFKA,
    POSTGRES,
    REDIS,
    SERVER_ENV,
    StackConfig,
    StackError,
    StackInfo,
)
from clarion_devstack.stack.kafka import spawn_kafka
from clarion_devstack.stack.postgres import (
    ensure_database,
    init_postgres,
    pgdata_dir,
    postgres_account,
    spawn_postgres,
)
from clarion_devstack.stack.process import ManagedProcess, run_coroutine
from clarion_devstack.stack.redis import spawn_redis

#: A server that exits during start-up is started again on a new port this many times
#: (another process may have taken the port between choosing and binding it).
START_ATTEMPTS = 3


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
            servers[KAFKA].spawn = lambda port: spawn_kafka(host, port, kafka_dir)
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
            servers[REDIS].spawn = lambda port: spawn_redis(host, port, redis_dir)

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
            account = postgres_account()
            pgdata_holder: list[Path] = []

            def spawn_pg(port: int) -> ManagedProcess:
                # initdb runs on the first attempt only; Tansu and Redis boot meanwhile.
                if not pgdata_holder:
                    pgdata = pgdata_dir(pg_dir, account)
                    self._pgdata = pgdata  # removed by stop(), even if initdb fails
                    pgdata_holder.append(pgdata)
                    init_postgres(config, pgdata, account)
                return spawn_postgres(host, port, pg_dir, pgdata_holder[0], account)

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
                lambda: ensure_database(maintenance_url, self.config.postgres_database, 10.0)
            )
