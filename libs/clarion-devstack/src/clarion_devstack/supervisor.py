"""Run Clarion's services as supervised child processes.

Each :class:`ServiceSpec` is started with its own environment; its stdout and
stderr lines are echoed with a coloured ``name |`` prefix (and kept in a log
file); a process that exits unexpectedly is restarted with exponential backoff
up to a limit. :meth:`Supervisor.stop` sends SIGTERM to every child (they
commit what they finished and nothing else), waits, then SIGKILLs stragglers.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import BinaryIO

import httpx

COLOURS = ("cyan", "magenta", "green", "yellow", "blue", "red", "bright_cyan", "bright_magenta")


@dataclass
class ServiceSpec:
    """How to start one service.

    Attributes:
        name: short name used as the log prefix (``aggregator``).
        argv: the command line.
        env: extra environment variables (added to the parent's).
        ready_url: an HTTP URL answering 200 when the service is ready, or None.
        restart: whether an unexpected exit is restarted.
        nice: CPU priority increment (``nice(2)``, 0-19) of the process: services off
            the live path yield the CPU to those on it when one machine runs everything.
    """

    name: str
    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    ready_url: str | None = None
    restart: bool = True
    nice: int = 0


@dataclass
class _Child:
    spec: ServiceSpec
    colour: str
    process: asyncio.subprocess.Process | None = None
    restarts: int = 0
    started_at: float = 0.0
    pumps: list[asyncio.Task[None]] = field(default_factory=list)
    watcher: asyncio.Task[None] | None = None


class ServiceFailed(RuntimeError):
    """A service exited too often, or never became ready."""


class Supervisor:
    """Start, watch, restart and stop a set of services.

    Args:
        log_dir: where each service's output is also written (``<name>.log``).
        echo: called with ``(name, colour, line)`` for every output line.
        max_restarts: restarts allowed per service before :class:`ServiceFailed`.
    """

    def __init__(
        self,
        log_dir: Path,
        echo: Callable[[str, str, str], None],
        *,
        max_restarts: int = 5,
    ) -> None:
        self._log_dir = log_dir
        self._echo = echo
        self._max_restarts = max_restarts
        self._children: dict[str, _Child] = {}
        self._stopping = False
        self.failure: asyncio.Future[str] = asyncio.get_running_loop().create_future()

    @property
    def names(self) -> list[str]:
        """Names of the supervised services, in start order."""
        return list(self._children)

    def pid(self, name: str) -> int | None:
        """The current process id of ``name`` (None when not running)."""
        child = self._children[name]
        return child.process.pid if child.process and child.process.returncode is None else None

    def ready_url(self, name: str) -> str | None:
        """The readiness URL of ``name`` (None for a service without one)."""
        return self._children[name].spec.ready_url

    async def start(self, spec: ServiceSpec) -> None:
        """Start ``spec`` and keep it running."""
        colour = COLOURS[len(self._children) % len(COLOURS)]
        child = _Child(spec, colour)
        self._children[spec.name] = child
        await self._spawn(child)

    async def start_all(self, specs: Iterable[ServiceSpec], ready_timeout: float = 120.0) -> None:
        """Start every spec in order, then wait until each answers on its ready URL.

        All are started before any is waited for, so they boot in parallel; the wait
        follows start order.

        Args:
            specs: services in start order (see :func:`clarion_devstack.launch.service_specs`).
            ready_timeout: seconds each service gets to become ready, counted from
                when its wait begins.

        Raises:
            ServiceFailed: a service was not ready in time or kept exiting.
        """
        for spec in specs:
            await self.start(spec)
        for name in self.names:
            await self.wait_ready(name, timeout=ready_timeout)

    async def _spawn(self, child: _Child) -> None:
        self._log_dir.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, **child.spec.env, "PYTHONUNBUFFERED": "1"}
        child.process = await asyncio.create_subprocess_exec(
            *child.spec.argv,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
            stdin=asyncio.subprocess.DEVNULL,
            env=env,
            start_new_session=True,  # Ctrl-C reaches only us; we stop children in order
        )
        if child.spec.nice:
            # Set from here rather than in the child before exec: preexec_fn is unsafe
            # in a process with threads.
            with contextlib.suppress(OSError):
                os.setpriority(os.PRIO_PROCESS, child.process.pid, child.spec.nice)
        child.started_at = time.monotonic()
        log = (self._log_dir / f"{child.spec.name}.log").open("ab")
        child.pumps = [asyncio.create_task(self._pump(child, child.process, log))]
        child.watcher = asyncio.create_task(self._watch(child, child.process))

    async def _pump(
        self, child: _Child, process: asyncio.subprocess.Process, log: BinaryIO
    ) -> None:
        assert process.stdout is not None
        with log:
            async for raw in process.stdout:
                log.write(raw)
                log.flush()
                self._echo(child.spec.name, child.colour, raw.decode(errors="replace").rstrip())

    async def _watch(self, child: _Child, process: asyncio.subprocess.Process) -> None:
        code = await process.wait()
        if self._stopping:
            return
        self._echo(child.spec.name, child.colour, f"exited with code {code}")
        if not child.spec.restart or child.restarts >= self._max_restarts:
            if not self.failure.done():
                self.failure.set_result(f"{child.spec.name} exited with code {code}")
            return
        child.restarts += 1
        await asyncio.sleep(min(0.5 * 2**child.restarts, 10.0))
        if not self._stopping:
            self._echo(child.spec.name, child.colour, f"restarting ({child.restarts})")
            await self._spawn(child)

    async def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        """Send ``sig`` to a service (tests use SIGKILL to simulate a crash)."""
        pid = self.pid(name)
        if pid is not None:
            os.kill(pid, sig)

    async def wait_ready(self, name: str, timeout: float = 60.0) -> float:
        """Wait until ``name``'s ready URL answers 200; return the seconds it took.

        Raises:
            ServiceFailed: not ready within ``timeout`` seconds, or the process gave up.
        """
        child = self._children[name]
        url = child.spec.ready_url
        start = time.monotonic()
        if url is None:
            return 0.0
        async with httpx.AsyncClient(timeout=2.0) as http:
            while time.monotonic() - start < timeout:
                if self.failure.done():
                    raise ServiceFailed(self.failure.result())
                with contextlib.suppress(httpx.HTTPError):
                    if (await http.get(url)).status_code == 200:
                        return time.monotonic() - start
                await asyncio.sleep(0.2)
        raise ServiceFailed(f"{name} not ready at {url} after {timeout:.0f}s")

    async def stop(self, timeout: float = 15.0) -> None:
        """SIGTERM every child, wait up to ``timeout`` seconds, then SIGKILL the rest."""
        self._stopping = True
        for child in reversed(list(self._children.values())):
            if child.process and child.process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    child.process.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + timeout
        for child in self._children.values():
            if child.process is None:
                continue
            remaining = max(0.1, deadline - time.monotonic())
            try:
                await asyncio.wait_for(child.process.wait(), remaining)
            except TimeoutError:
                with contextlib.suppress(ProcessLookupError):
                    child.process.kill()
                await child.process.wait()
            for task in child.pumps:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(task, 2.0)
            if child.watcher is not None:
                child.watcher.cancel()


def python_module_argv(module: str, *args: str) -> list[str]:
    """``[sys.executable, "-m", module, *args]``: run a module with this interpreter."""
    return [sys.executable, "-m", module, *args]
