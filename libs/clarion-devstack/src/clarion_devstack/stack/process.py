"""Server processes of the development stack, and the thread they are forked from.

Child processes never outlive their parent: they are stopped by
:meth:`ManagedProcess.stop` (signal, wait, kill), by the stack's ``atexit`` hook, and on
Linux the kernel signals them when their parent process dies (``PR_SET_PDEATHSIG``),
even by ``SIGKILL``. Each runs as leader of its own process group, so a kill can take
the whole group (PostgreSQL's backends too).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import ctypes
import os
import queue
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any, TypeVar

_T = TypeVar("_T")


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


def clean_env(drop_prefixes: tuple[str, ...]) -> dict[str, str]:
    """Return a copy of ``os.environ`` without the variables starting with ``drop_prefixes``.

    Servers read some options from their environment (Tansu its ``SCHEMA_REGISTRY_*``,
    PostgreSQL its ``PG*``); a variable meant for another program must not leak in.
    """
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


def spawn_server(
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
    """Start a server from the spawner thread, output appended to ``log_path``.

    Args:
        name: server name (``"kafka"``, ``"redis"``, ``"postgres"``).
        argv: program and arguments.
        port: TCP port the server was told to listen on.
        log_path: file receiving its stdout and stderr.
        stop_signal: signal asking it to shut down cleanly.
        death_signal: signal the kernel sends it when this process dies (Linux).
        env: its complete environment.
        account: ``(uid, gid)`` to run it under, ``None`` for the current account.
        cwd: its working directory, the current one when ``None``.

    Returns:
        The started process, leader of its own process group.

    Raises:
        OSError: the program could not be started.
    """
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
