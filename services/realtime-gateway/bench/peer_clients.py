"""Load clients of ``peer_bench.py``: many WebSocket sessions in one process, two protocols.

The same code path serves both kinds of server so the client cost is alike:

* ``clarion``: Clarion's gateway protocol (docs/gateway-protocol.md): RFC 6455
  handshake on ``/v1/ws``, one ``connect`` frame with the JWT and the last offset;
* ``socketio``: Engine.IO v4 over WebSocket (``/socket.io/?EIO=4&transport=websocket``),
  the socket.io v5 CONNECT packet ``40{"token":..., "since": seq}`` to the main
  namespace, ``notification`` events as ``42["notification", {...}]`` packets;
  Engine.IO pings (``2``) are answered with pongs (``3``).

Each session counts stream frames and tracks the last seq it received (a frame whose
seq is not above it is a duplicate and dropped), and, when asked, the time from the
notification's ``updated_at`` (set by the producer when it produced the record) to the
frame's arrival. WebSocket pings are answered (RFC 6455 §5.5.2).

Controlled by the driver over stdin/stdout, one JSON line per answer: ``stats``,
``latencies``, ``reset``, ``latency on|off``, ``disconnect``, ``reconnect``.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import random
import re
import secrets
import sys
import time
from datetime import datetime

OFFSET = re.compile(rb'"offset":"?(?:([A-Za-z0-9_-]*):)?(\d+)')
UPDATED_AT = re.compile(rb'"updated_at":"([^"]+)"')
NOTIFICATION_PREFIXES = (b'{"type":"notification.', b'42["notification"')


def masked(payload: bytes, opcode: int = 0x1) -> bytes:
    """A client→server frame (RFC 6455 §5.2: client frames are masked)."""
    mask = secrets.token_bytes(4)
    n = len(payload)
    header = bytearray([0x80 | opcode])
    if n < 126:
        header.append(0x80 | n)
    elif n < 65536:
        header.append(0x80 | 126)
        header += n.to_bytes(2, "big")
    else:
        header.append(0x80 | 127)
        header += n.to_bytes(8, "big")
    body = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    return bytes(header) + mask + body


class Stats:
    """Counters shared by every session of the process."""

    def __init__(self) -> None:
        self.frames = 0
        self.duplicates = 0
        self.gaps = 0
        self.last_frame = 0.0
        self.latency = False
        self.latencies: list[float] = []
        self.connected = 0
        self.retries = 0


class Session(asyncio.Protocol):
    """One WebSocket session of one user; reads frames, answers pings."""

    def __init__(self, client: Client, user: str) -> None:
        self.client = client
        self.user = user
        self.epoch: bytes | None = None
        self.seq: int | None = None
        self.transport: asyncio.Transport | None = None
        self.ready: asyncio.Future[None] | None = None
        self.buffer = bytearray()
        self.upgraded = False

    def start(self, ready: asyncio.Future[None]) -> None:
        self.ready = ready
        self.buffer.clear()
        self.upgraded = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]
        transport.write(  # type: ignore[attr-defined]
            self.client.upgrade_request()
        )

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        if self.ready is not None and not self.ready.done():
            self.ready.set_exception(ConnectionError(f"{self.user}: closed during handshake"))

    def _handshake_done(self) -> None:
        if self.ready is not None and not self.ready.done():
            self.ready.set_result(None)
            self.client.stats.connected += 1

    def data_received(self, data: bytes) -> None:
        self.buffer += data
        if not self.upgraded:
            end = self.buffer.find(b"\r\n\r\n")
            if end < 0:
                return
            if not self.buffer.startswith(b"HTTP/1.1 101"):
                raise_on = bytes(self.buffer[:80])
                if self.ready is not None and not self.ready.done():
                    self.ready.set_exception(ConnectionError(raise_on.decode(errors="replace")))
                return
            del self.buffer[: end + 4]
            self.upgraded = True
            if self.client.protocol == "clarion":
                since = f"{self.epoch.decode()}:{self.seq}" if self.epoch else None
                token = self.client.token(self.user)
                self._send(json.dumps({"type": "connect", "token": token, "since": since}))
        buf = self.buffer
        while len(buf) >= 2:
            opcode = buf[0] & 0x0F
            length = buf[1] & 0x7F
            pos = 2
            if length == 126:
                if len(buf) < 4:
                    return
                length = int.from_bytes(buf[2:4], "big")
                pos = 4
            elif length == 127:
                if len(buf) < 10:
                    return
                length = int.from_bytes(buf[2:10], "big")
                pos = 10
            if len(buf) < pos + length:
                return
            payload = bytes(buf[pos : pos + length])
            del buf[: pos + length]
            if opcode == 0x1:
                self._on_text(payload)
            elif opcode == 0x9 and self.transport is not None:
                self.transport.write(masked(payload, 0xA))
            elif opcode == 0x8 and self.transport is not None:
                self.transport.close()

    def _send(self, text: str) -> None:
        if self.transport is not None:
            self.transport.write(masked(text.encode()))

    def _on_text(self, payload: bytes) -> None:
        if payload.startswith(NOTIFICATION_PREFIXES):
            self._on_frame(payload)
        elif self.client.protocol == "socketio":
            if payload == b"2":
                self._send("3")
            elif payload.startswith(b"0{"):
                auth = {"token": self.client.token(self.user), "since": self.seq}
                self._send("40" + json.dumps(auth))
            elif payload.startswith(b"40"):
                self._handshake_done()
            elif payload.startswith(b"44") and self.ready is not None and not self.ready.done():
                self.ready.set_exception(ConnectionError(payload.decode(errors="replace")))
        elif payload.startswith(b'{"type":"connected"'):
            match = OFFSET.search(payload)
            if match and self.epoch is None:
                self.epoch = match.group(1)
            self._handshake_done()

    def _on_frame(self, payload: bytes) -> None:
        stats = self.client.stats
        match = OFFSET.search(payload)
        if match is None:
            return
        epoch, seq = match.group(1), int(match.group(2))
        if epoch is not None and epoch != self.epoch:
            self.epoch, self.seq = epoch, None
        if self.seq is not None and seq <= self.seq:
            stats.duplicates += 1
            return
        if self.seq is not None and seq > self.seq + 1:
            stats.gaps += 1
        self.seq = seq
        now = time.time()
        stats.frames += 1
        stats.last_frame = now
        if stats.latency:
            stamp = UPDATED_AT.search(payload)
            if stamp:
                sent = datetime.fromisoformat(stamp.group(1).decode()).timestamp()
                stats.latencies.append((now - sent) * 1000)


class Client:
    """The sessions of one process: users ``<prefix><first>`` .. ``<prefix><first+count-1>``."""

    def __init__(self, protocol: str, port: int, secret: str) -> None:
        self.protocol = protocol
        self.port = port
        self.secret = secret
        self.stats = Stats()
        self.sessions: list[Session] = []

    def token(self, user: str) -> str:
        import jwt

        now = int(time.time())
        claims = {"sub": user, "scope": "", "iat": now, "exp": now + 7200}
        return jwt.encode(claims, self.secret, algorithm="HS256")

    def upgrade_request(self) -> bytes:
        key = base64.b64encode(secrets.token_bytes(16)).decode()
        path = "/v1/ws" if self.protocol == "clarion" else "/socket.io/?EIO=4&transport=websocket"
        return (
            f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1:{self.port}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
            "Sec-WebSocket-Version: 13\r\n\r\n"
        ).encode()

    async def open(self, session: Session) -> None:
        loop = asyncio.get_running_loop()
        ready: asyncio.Future[None] = loop.create_future()
        session.start(ready)
        transport, _ = await loop.create_connection(lambda: session, "127.0.0.1", self.port)
        try:
            await asyncio.wait_for(ready, 30)
        except BaseException:
            transport.abort()
            raise

    async def connect_all(self, users: list[str], parallel: int = 50) -> None:
        self.sessions = [Session(self, u) for u in users]
        await self._open_all(parallel)

    async def _open_all(self, parallel: int) -> None:
        """Open every session; a refused handshake is retried with exponential backoff
        and full jitter, as clarion.js does, and counted in ``stats.retries``."""
        gate = asyncio.Semaphore(parallel)

        async def one(index: int) -> None:
            async with gate:
                for attempt in range(12):
                    try:
                        await self.open(self.sessions[index])
                        return
                    except (ConnectionError, OSError, TimeoutError):
                        if attempt == 11:
                            raise
                        self.stats.retries += 1
                        old = self.sessions[index]
                        fresh = Session(self, old.user)
                        fresh.epoch, fresh.seq = old.epoch, old.seq
                        self.sessions[index] = fresh
                        await asyncio.sleep(random.uniform(0, min(2.0, 0.05 * 2**attempt)))

        await asyncio.gather(*(one(i) for i in range(len(self.sessions))))

    async def disconnect(self) -> None:
        for s in self.sessions:
            if s.transport is not None:
                s.transport.abort()
        self.stats.connected = 0
        await asyncio.sleep(0)

    async def reconnect(self) -> None:
        """New sessions for the same users, resuming from the last offset each one saw."""
        fresh = []
        for old in self.sessions:
            s = Session(self, old.user)
            s.epoch, s.seq = old.epoch, old.seq
            fresh.append(s)
        self.sessions = fresh
        await self._open_all(50)


async def serve(args: argparse.Namespace) -> None:
    client = Client(args.protocol, args.port, args.secret)
    users = [f"{args.user_prefix}{i:05d}" for i in range(args.first, args.first + args.count)]
    await client.connect_all(users)
    print(json.dumps({"connected": client.stats.connected}), flush=True)
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader()
    await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    stats = client.stats
    while line := (await reader.readline()).decode().strip():
        cmd, *rest = line.split()
        answer: dict[str, object]
        if cmd == "stats":
            answer = {
                "frames": stats.frames,
                "duplicates": stats.duplicates,
                "gaps": stats.gaps,
                "last_frame": stats.last_frame,
                "connected": stats.connected,
                "retries": stats.retries,
            }
        elif cmd == "latencies":
            answer = {"latencies": [round(v, 3) for v in stats.latencies]}
        elif cmd == "reset":
            stats.frames = stats.duplicates = stats.gaps = stats.retries = 0
            stats.latencies = []
            stats.last_frame = 0.0
            answer = {"ok": True}
        elif cmd == "latency":
            stats.latency = rest == ["on"]
            answer = {"ok": True}
        elif cmd == "disconnect":
            await client.disconnect()
            answer = {"ok": True}
        elif cmd == "reconnect":
            await client.reconnect()
            answer = {"connected": stats.connected}
        else:
            answer = {"error": f"unknown command {cmd}"}
        print(json.dumps(answer), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--protocol", choices=("clarion", "socketio"), required=True)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    parser.add_argument("--user-prefix", default="bench-user-")
    parser.add_argument("--first", type=int, default=0)
    parser.add_argument("--count", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args))


if __name__ == "__main__":
    main()
