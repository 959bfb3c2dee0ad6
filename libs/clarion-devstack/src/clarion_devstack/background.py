"""Running the development stack as a background process, and finding it again.

``clarion devstack up`` starts a detached supervisor process (``python -m
clarion_devstack.background``) that owns the servers. The supervisor records itself in
files under the data directory so that later commands (``status``, ``env``, ``down``)
and other terminals find the stack:

* ``<data_dir>/devstack.pid``: the supervisor's process id, written before any server
  starts, so ``down`` can stop a stack that is still starting;
* ``<data_dir>/state.json``: connection settings, server process ids and start-up time,
  written once every server answers;
* ``<data_dir>/../devstack.env``: the ``CLARION_*`` settings as a ``.env`` file;
* ``<data_dir>/devstack.log``: the supervisor's own output.

The supervisor stops the servers and removes these files on ``SIGTERM``/``SIGINT``.
Were it killed outright, its servers die with it (see :mod:`clarion_devstack.stack`).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

from clarion_devstack.stack import (
    SERVERS,
    Stack,
    StackConfig,
    StackError,
    StackInfo,
    render_env_file,
)

STATE_VERSION = 1


@dataclass(frozen=True)
class StackPaths:
    """Files recording a background stack, derived from its data directory."""

    data_dir: Path

    @property
    def state_file(self) -> Path:
        """``<data_dir>/state.json``."""
        return self.data_dir / "state.json"

    @property
    def pid_file(self) -> Path:
        """``<data_dir>/devstack.pid``."""
        return self.data_dir / "devstack.pid"

    @property
    def supervisor_lock(self) -> Path:
        """``<data_dir>/supervisor.lock``, locked by the supervisor while it runs."""
        return self.data_dir / "supervisor.lock"

    @property
    def log_file(self) -> Path:
        """``<data_dir>/devstack.log``."""
        return self.data_dir / "devstack.log"

    @property
    def env_file(self) -> Path:
        """``<data_dir>/../devstack.env`` (``.clarion/devstack.env`` by default)."""
        return self.data_dir.parent / "devstack.env"


@dataclass(frozen=True)
class StackState:
    """What ``state.json`` records about a running stack.

    Attributes:
        pid: process id of the supervisor owning the servers.
        info: connection settings.
        server_pids: server name to process id; ``None`` for a server taken from a
            ``CLARION_*`` variable instead of started.
        started_at: Unix time (seconds) the stack became ready.
        startup_seconds: seconds from the start request until every server answered.
        data_dir: the stack's data directory.
    """

    pid: int
    info: StackInfo
    server_pids: Mapping[str, int | None]
    started_at: float
    startup_seconds: float
    data_dir: Path

    def to_json(self) -> str:
        """Serialise for ``state.json``."""
        return json.dumps(
            {
                "version": STATE_VERSION,
                "pid": self.pid,
                "info": self.info.to_dict(),
                "env": self.info.env(),
                "server_pids": dict(self.server_pids),
                "started_at": self.started_at,
                "startup_seconds": self.startup_seconds,
                "data_dir": str(self.data_dir),
            },
            indent=2,
        )

    @classmethod
    def from_json(cls, text: str) -> StackState:
        """Parse ``state.json`` text.

        Raises:
            ValueError: on malformed JSON or missing fields.
        """
        try:
            data = json.loads(text)
            return cls(
                pid=int(data["pid"]),
                info=StackInfo.from_dict(data["info"]),
                server_pids={
                    name: (None if pid is None else int(pid))
                    for name, pid in data["server_pids"].items()
                },
                started_at=float(data["started_at"]),
                startup_seconds=float(data["startup_seconds"]),
                data_dir=Path(data["data_dir"]),
            )
        except (KeyError, TypeError, json.JSONDecodeError) as exc:
            raise ValueError(f"malformed devstack state: {exc}") from exc


def process_alive(pid: int) -> bool:
    """Tell whether a process with this id exists (zombies count as gone)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return True


def read_pid(paths: StackPaths) -> int | None:
    """Return the supervisor's pid from the pid file when that process still runs."""
    try:
        pid = int(paths.pid_file.read_text("utf-8").strip())
    except (OSError, ValueError):
        return None
    return pid if process_alive(pid) else None


def read_state(paths: StackPaths) -> StackState | None:
    """Return the state of a running background stack, or ``None`` when none runs.

    State files left behind by a supervisor that no longer runs are ignored.
    """
    try:
        state = StackState.from_json(paths.state_file.read_text("utf-8"))
    except (OSError, ValueError):
        return None
    return state if process_alive(state.pid) else None


def _write_atomic(path: Path, text: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, "utf-8")
    tmp.replace(path)


def remove_records(paths: StackPaths) -> None:
    """Delete the pid, state and env files of a stack."""
    for path in (paths.state_file, paths.pid_file, paths.env_file):
        path.unlink(missing_ok=True)


def state_of(stack: Stack, pid: int) -> StackState:
    """Build the :class:`StackState` of a started ``stack`` owned by process ``pid``."""
    return StackState(
        pid=pid,
        info=stack.info,
        server_pids={
            name: (stack.processes[name].pid if name in stack.processes else None)
            for name in SERVERS
        },
        started_at=time.time(),
        startup_seconds=stack.startup_seconds or 0.0,
        data_dir=stack.config.data_dir,
    )


def serve(
    config: StackConfig,
    *,
    ready_fd: int | None = None,
    on_ready: Callable[[StackState], None] | None = None,
) -> int:
    """Run the stack in this process until ``SIGTERM`` or ``SIGINT``.

    Writes the pid file first, then (once every server answers) ``state.json`` and the
    env file; removes them after stopping. With ``ready_fd`` the state JSON, or an
    ``{"error": ...}`` object, is written to that descriptor, which is then closed.

    Args:
        config: the stack to run.
        ready_fd: writable descriptor the launching process waits on.
        on_ready: called with the state once every server answers.

    Returns:
        Exit status: 0 after a stop on request; 1 when the stack failed to start, another
        supervisor already runs from the data directory, or a server died.
    """
    paths = StackPaths(config.data_dir)
    config.data_dir.mkdir(parents=True, exist_ok=True)
    # Held for the supervisor's lifetime, before any record is written: a second
    # supervisor on the same directory gives up without touching the first one's files.
    lock_fd = os.open(paths.supervisor_lock, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        os.close(lock_fd)
        message = f"a development stack already runs from {config.data_dir}"
        _report(ready_fd, json.dumps({"error": message}))
        print(message, file=sys.stderr, flush=True)
        return 1
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    previous = {sig: signal.signal(sig, on_signal) for sig in (signal.SIGTERM, signal.SIGINT)}
    stack = Stack(config)
    try:
        _write_atomic(paths.pid_file, f"{os.getpid()}\n")
        try:
            stack.start()
        except (StackError, OSError) as exc:
            _report(ready_fd, json.dumps({"error": str(exc)}))
            print(f"development stack failed to start: {exc}", file=sys.stderr, flush=True)
            return 1
        state = state_of(stack, os.getpid())
        _write_atomic(paths.state_file, state.to_json())
        _write_atomic(paths.env_file, render_env_file(state.info.env()))
        _report(ready_fd, state.to_json())
        if on_ready is not None:
            on_ready(state)
        else:
            print(f"development stack ready in {state.startup_seconds:.2f}s", flush=True)
        while not stop.wait(0.5):
            dead = [p.name for p in stack.processes.values() if p.popen.poll() is not None]
            if dead:
                print(f"servers exited unexpectedly: {dead}; stopping", file=sys.stderr)
                return 1
        return 0
    finally:
        stack.stop()
        remove_records(paths)
        os.close(lock_fd)
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _report(fd: int | None, text: str) -> None:
    if fd is None:
        return
    with contextlib.suppress(OSError), os.fdopen(fd, "w", encoding="utf-8") as pipe:
        pipe.write(text)


def start_background(config: StackConfig, *, timeout: float | None = None) -> StackState:
    """Start a detached supervisor running the stack; return once every server answers.

    The supervisor runs in a new session (it survives the calling terminal), inherits
    the caller's environment (so ``CLARION_*`` overrides apply) and logs to
    ``<data_dir>/devstack.log``.

    Args:
        config: the stack to run; ``config.environ`` is not forwarded, the process
            environment is.
        timeout: seconds to wait; defaults to ``config.startup_timeout`` plus 30.

    Returns:
        The state of the started stack.

    Raises:
        StackError: when a stack already runs in the data directory, or the supervisor
            reports a failure, exits, or is not ready in time (then it is stopped).
    """
    paths = StackPaths(config.data_dir)
    if read_pid(paths) is not None:
        raise StackError(f"a development stack already runs from {config.data_dir}")
    config.data_dir.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    argv = [
        sys.executable,
        "-m",
        "clarion_devstack.background",
        "--data-dir",
        str(config.data_dir),
        "--host",
        config.host,
        "--startup-timeout",
        str(config.startup_timeout),
        "--ready-fd",
        str(write_end),
    ]
    env = dict(os.environ if config.environ is None else config.environ)
    with paths.log_file.open("ab") as log:
        process = subprocess.Popen(
            argv,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            pass_fds=(write_end,),
            start_new_session=True,
        )
    os.close(write_end)
    limit = time.monotonic() + (timeout if timeout is not None else config.startup_timeout + 30)
    chunks: list[bytes] = []
    try:
        while True:
            remaining = limit - time.monotonic()
            if remaining <= 0:
                process.terminate()
                raise StackError(f"development stack not ready in time; see {paths.log_file}")
            readable, _, _ = select.select([read_end], [], [], min(remaining, 0.5))
            if readable:
                chunk = os.read(read_end, 65536)
                if not chunk:
                    break
                chunks.append(chunk)
    finally:
        os.close(read_end)
    text = b"".join(chunks).decode("utf-8", "replace")
    if not text:
        process.wait(10)
        raise StackError(
            f"development stack supervisor exited with status {process.returncode}; "
            f"see {paths.log_file}"
        )
    data = json.loads(text)
    if "error" in data:
        process.wait(config.stop_timeout + 10)
        raise StackError(str(data["error"]))
    return StackState.from_json(text)


def stop_background(paths: StackPaths, *, timeout: float = 30.0) -> bool:
    """Stop the background stack recorded under ``paths``.

    Sends ``SIGTERM`` to the supervisor and waits up to ``timeout`` seconds; then kills
    it and any recorded server still running (process group ``SIGKILL``).

    Returns:
        ``True`` when a running stack was stopped, ``False`` when none was running.
    """
    pid = read_pid(paths)
    state = None
    with contextlib.suppress(OSError, ValueError):
        state = StackState.from_json(paths.state_file.read_text("utf-8"))
    if pid is None and state is not None and process_alive(state.pid):
        pid = state.pid
    if pid is None:
        remove_records(paths)
        return False
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGTERM)
    limit = time.monotonic() + timeout
    while process_alive(pid) and time.monotonic() < limit:
        time.sleep(0.05)
    if process_alive(pid):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        if state is not None:
            for name, server_pid in state.server_pids.items():
                if server_pid is not None and _is_server(server_pid, name):
                    with contextlib.suppress(ProcessLookupError, PermissionError):
                        os.killpg(server_pid, signal.SIGKILL)
    remove_records(paths)
    return True


_SERVER_MARKERS = {"kafka": "tansu", "redis": "redis-server", "postgres": "postgres"}


def _is_server(pid: int, name: str) -> bool:
    """Tell whether ``pid`` still runs the recorded server (not a reused process id)."""
    if not process_alive(pid):
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return False
    return _SERVER_MARKERS.get(name, name).encode() in cmdline


def _main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Clarion development stack supervisor")
    parser.add_argument("--data-dir", type=Path, required=True)
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--startup-timeout", type=float, default=60.0)
    parser.add_argument("--ready-fd", type=int, default=None)
    args = parser.parse_args(argv)
    config = StackConfig(
        data_dir=args.data_dir, host=args.host, startup_timeout=args.startup_timeout
    )
    return serve(config, ready_fd=args.ready_fd)


if __name__ == "__main__":
    sys.exit(_main())
