"""The gateway when Redis loses its data: killed (-9) and restarted empty on the same port.

The gateway runs on a Redis server of its own (the ``redis-server`` of the embedded
stack, no persistence), so the test can kill it without touching the shared one.
Connected sessions must be told to refetch (close 4009), whether or not a frame
arrives for their user after the loss; a reconnect with the old offset gets
``recovered: false``; frames consumed during and after the outage are in the
user's new stream. When Redis kept its data, frames published while the pub/sub
connection was down reach the sessions once it is back.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import socket
from collections.abc import AsyncIterator
from typing import Any

import pytest
import redis.asyncio as aioredis
from websockets.exceptions import ConnectionClosed

from clarion_devstack.stack import redis_server_bin
from clarion_gateway.domain.entries import entry_from_notification
from clarion_gateway.protocol import CloseCode

pytestmark = pytest.mark.integration


class RedisServer:
    """A throw-away, non-persistent redis-server on a fixed loopback port."""

    def __init__(self) -> None:
        with socket.socket() as sock:
            sock.bind(("127.0.0.1", 0))
            self.port = sock.getsockname()[1]
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.process: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        """Start it empty and wait until it answers PING."""
        self.process = await asyncio.create_subprocess_exec(
            str(redis_server_bin()),
            "--port",
            str(self.port),
            "--bind",
            "127.0.0.1",
            "--save",
            "",
            "--appendonly",
            "no",
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.DEVNULL,
        )
        client = aioredis.Redis.from_url(self.url)
        try:
            for _ in range(200):
                with contextlib.suppress(OSError, aioredis.ConnectionError):
                    if await client.ping():
                        return
                await asyncio.sleep(0.05)
            raise AssertionError("redis-server did not start")
        finally:
            await client.aclose()

    async def kill(self) -> None:
        """kill -9: every key is gone, connections drop."""
        if self.process is not None:
            self.process.send_signal(signal.SIGKILL)
            await self.process.wait()
            self.process = None


@pytest.fixture
async def own_redis() -> AsyncIterator[RedisServer]:
    server = RedisServer()
    await server.start()
    try:
        yield server
    finally:
        await server.kill()


async def _read_forever(ws: Any) -> None:
    while True:
        await ws.recv()


async def closed_with(ws: Any, timeout: float = 30.0) -> int | None:
    """Read and discard frames until the server closes; the close code."""
    with pytest.raises(ConnectionClosed):
        await asyncio.wait_for(_read_forever(ws), timeout)
    return ws.close_code  # type: ignore[no-any-return]


async def test_redis_restarted_empty_makes_every_session_refetch(
    harness: Any, own_redis: RedisServer
) -> None:
    gw = await harness.gateway(redis_url=own_redis.url)
    active = await harness.client(gw, "alma")
    # A user with no frame after the loss: only the gateway itself can tell them.
    quiet = await harness.client(gw, "quinn")
    await harness.notify(harness.notification("alma", "a1"))
    await harness.notify(harness.notification("quinn", "q1"))
    await active.recv_until(1)
    await quiet.recv_until(1)
    old_active, old_quiet = active.offset, quiet.offset

    await own_redis.kill()
    # Consumed while Redis is down: the batch is retried until Redis is back.
    await harness.notify(harness.notification("alma", "a2"))
    await own_redis.start()
    await harness.notify(harness.notification("alma", "a3"))

    assert await closed_with(active.ws) == CloseCode.RESYNC
    assert await closed_with(quiet.ws) == CloseCode.RESYNC

    for user, old in (("alma", old_active), ("quinn", old_quiet)):
        again = await harness.client(gw, user, since=old)
        assert again.connected["recovered"] is False
        assert again.connected["offset"].split(":")[0] != old.split(":")[0]

    # Nothing consumed during or after the outage is missing from the new stream.
    async def both_appended() -> bool:
        state = await gw.history.state("alma")
        frames = await gw.history.read("alma", 1)
        ids = {f.notification_id for f in frames}
        return state.top_seq >= 2 and {"a2", "a3"} <= ids

    await harness.wait_for(both_appended, timeout=30, what="a2 and a3 in the new epoch")


async def test_flushed_script_cache_is_reloaded_and_each_entry_appended_once(
    harness: Any, own_redis: RedisServer
) -> None:
    gw = await harness.gateway(kafka=False, redis_url=own_redis.url)
    history = gw.history

    def entries(*nids: str) -> list[Any]:
        return [entry_from_notification(harness.notification("sam", n)) for n in nids]

    first = await history.append_many(entries("s1", "s2"))
    admin = aioredis.Redis.from_url(own_redis.url)
    try:
        await admin.script_flush()
    finally:
        await admin.aclose()
    # s2 again is a Kafka redelivery: a no-op even though its batch met NOSCRIPT.
    again = await history.append_many(entries("s2", "s3", "s4"))
    assert [r.seq for r in first] == [1, 2]
    assert [r.seq for r in again] == [0, 3, 4]
    assert {r.epoch for r in first + again} == {first[0].epoch}
    stored = await history.read("sam", 1)
    assert [(m.seq, m.notification_id) for m in stored] == [
        (1, "s1"),
        (2, "s2"),
        (3, "s3"),
        (4, "s4"),
    ]


async def test_frames_published_while_pubsub_was_down_are_filled_on_reconnect(
    harness: Any, own_redis: RedisServer
) -> None:
    gw = await harness.gateway(kafka=False, redis_url=own_redis.url)
    client = await harness.client(gw, "pia")
    history = gw.history
    await history.append(entry_from_notification(harness.notification("pia", "p1")))
    await client.recv_until(1)
    # The last frame before a quiet period is published while this instance's
    # pub/sub connection is down: no later frame reveals the hole.
    dropped = lose_next_pubsub_message(gw)
    await history.append(entry_from_notification(harness.notification("pia", "p2")))
    await harness.wait_for(lambda: bool(dropped), what="p2 lost on pub/sub")
    admin = aioredis.Redis.from_url(own_redis.url)
    try:
        await admin.execute_command("CLIENT", "KILL", "TYPE", "pubsub")
    finally:
        await admin.aclose()
    frames = await client.recv_until(2)
    assert [f["notification"]["notification_id"] for f in frames] == ["p1", "p2"]
    assert frames[1]["offset"].split(":")[0] == frames[0]["offset"].split(":")[0]


def lose_next_pubsub_message(gw: Any) -> list[Any]:
    """Make the instance's pub/sub reader drop the next message it reads (an at-most-once
    loss); returns the list that receives the dropped message."""
    channels = gw.channels
    real = channels._deliver
    lost: list[Any] = []

    def deliver(user_id: str, msg: Any) -> None:
        if lost:
            real(user_id, msg)
        else:
            lost.append(msg)

    channels._deliver = deliver
    return lost
