"""Peer of Clarion's realtime-gateway for ``peer_bench.py``: python-socketio + aiokafka.

Runs in its own virtual environment (``requirements.txt`` here), not Clarion's. One
process, uvloop, aiohttp as the WebSocket server:

* python-socketio over WebSocket, one room per user (every session joins it);
* ``AsyncRedisManager``: a room emit is published on Redis pub/sub and delivered by
  every instance's listener, this one included (fan-out across instances);
* aiokafka consumes ``clarion.notifications.v1`` in a consumer group (latest offset on
  first join), offsets committed after each batch was handled (at-least-once);
* JWT (HS256, Clarion's development secret) checked in the ``connect`` handler;
* per-user bounded history in Redis (``../history.lua``) so a client reconnecting with
  the last seq it saw (``auth.since``) receives what it missed.

Settings from ``PEER_*`` environment variables (set by the driver).
"""

from __future__ import annotations

import asyncio
import gc
import json
import os
import signal
import sys
from pathlib import Path

import jwt
import socketio
import uvloop
from aiohttp import web
from aiokafka import AIOKafkaConsumer
from redis.asyncio import Redis

ENV = os.environ
PREFIX = ENV["PEER_REDIS_PREFIX"]
HISTORY_SIZE = int(ENV.get("PEER_HISTORY_SIZE", "200"))
HISTORY_TTL = int(ENV.get("PEER_HISTORY_TTL", "86400"))
SECRET = ENV["PEER_JWT_SECRET"]
LUA = (Path(__file__).parent.parent / "history.lua").read_text()


def keys(user: str) -> list[str]:
    return [f"{PREFIX}{user}:meta", f"{PREFIX}{user}:hist", f"{PREFIX}{user}:dedup"]


async def main() -> None:
    manager = socketio.AsyncRedisManager(ENV["PEER_REDIS_URL"], channel=f"{PREFIX}socketio")
    sio = socketio.AsyncServer(
        async_mode="aiohttp", client_manager=manager, transports=["websocket"]
    )
    store = Redis.from_url(ENV["PEER_REDIS_URL"])
    append = store.register_script(LUA)

    @sio.event
    async def connect(sid: str, environ: dict[str, object], auth: dict[str, object]) -> None:
        try:
            claims = jwt.decode(str((auth or {}).get("token", "")), SECRET, algorithms=["HS256"])
        except jwt.PyJWTError as exc:
            raise socketio.exceptions.ConnectionRefusedError("unauthorized") from exc
        user = str(claims["sub"])
        # Join first, then replay: a live frame during the replay may arrive twice and
        # the client drops it by seq.
        await sio.enter_room(sid, user)
        since = (auth or {}).get("since")
        if since is None:
            return
        entries = await store.xrange(keys(user)[1], f"{int(str(since)) + 1}-0", "+")
        for entry_id, fields in entries:
            await sio.emit(
                "notification",
                {
                    "type": "notification.created",
                    "offset": int(entry_id.split(b"-")[0]),
                    "notification": json.loads(fields[b"v"]),
                },
                to=sid,
            )

    app = web.Application()
    sio.attach(app)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", int(ENV["PEER_PORT"]))
    await site.start()

    consumer = AIOKafkaConsumer(
        ENV["PEER_TOPIC"],
        bootstrap_servers=ENV["PEER_KAFKA"],
        group_id=ENV["PEER_GROUP"],
        enable_auto_commit=False,
        auto_offset_reset="latest",
        fetch_max_wait_ms=int(ENV.get("PEER_FETCH_MAX_WAIT_MS", "5")),
    )
    await consumer.start()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    # The driver asks for a full collection before it reads RSS, as it does for Node.
    loop.add_signal_handler(signal.SIGUSR2, gc.collect)
    print(json.dumps({"ready": True}), flush=True)
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=100, max_records=500)
            records = [r for batch in batches.values() for r in batch]
            if not records:
                continue
            parsed = [json.loads(r.value) for r in records]
            async with store.pipeline(transaction=False) as pipe:
                for r, n in zip(records, parsed, strict=True):
                    await append(
                        keys=keys(n["recipient_id"]),
                        args=[
                            n["notification_id"],
                            n["version"],
                            r.value,
                            HISTORY_SIZE,
                            HISTORY_TTL,
                        ],
                        client=pipe,
                    )
                results = await pipe.execute()
            for n, (seq, unread) in zip(parsed, results, strict=True):
                if seq == 0:
                    continue
                await sio.emit(
                    "notification",
                    {
                        "type": "notification.created"
                        if n["version"] == 1
                        else "notification.updated",
                        "offset": seq,
                        "unread_count": unread,
                        "notification": n,
                    },
                    room=n["recipient_id"],
                )
            await consumer.commit()
    finally:
        await consumer.stop()
        await runner.cleanup()


if __name__ == "__main__":
    if len(sys.argv) > 1:
        raise SystemExit("settings come from PEER_* variables")
    uvloop.run(main())
