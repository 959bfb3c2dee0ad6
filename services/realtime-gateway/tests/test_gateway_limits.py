"""The gateway against hostile clients on the embedded stack: malformed frames, caps, rates.

Every bad frame must end its connection with the close code docs/gateway-protocol.md
documents, and every ended connection must leave nothing behind on the server:
no socket, session, channel subscription, presence count or task.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from websockets.asyncio.client import ClientConnection, connect
from websockets.exceptions import ConnectionClosed

from clarion_gateway.protocol import CloseCode

pytestmark = pytest.mark.integration

NESTED = "[" * 8000 + "]" * 8000
"""A 16,000-byte frame nested 8,000 deep: enough to exhaust the JSON decoder's recursion."""


def url(gw: Any) -> str:
    return f"ws://127.0.0.1:{gw.ws_port}/v1/ws"


def connect_frame(harness: Any, user: str, since: Any = None) -> str:
    return json.dumps({"type": "connect", "token": harness.token(user), "since": since})


async def close_code(ws: ClientConnection, timeout: float = 10.0) -> int | None:
    """Read until the server closes the connection; its close code (TimeoutError if it does not)."""
    try:
        while True:
            await asyncio.wait_for(ws.recv(), timeout)
    except ConnectionClosed:
        return ws.close_code


async def assert_released(harness: Any, gw: Any, baseline_tasks: int | None = None) -> None:
    """Eventually nothing is held: :func:`released`, channel subscriptions, extra tasks."""
    await harness.wait_for(lambda: harness.released(gw), what="connections released")
    # Channels are unsubscribed a few seconds after their last session (reload grace).
    await harness.wait_for(lambda: gw.channels.subscribed_users == 0, what="channels released")
    if baseline_tasks is not None:
        await harness.wait_for(
            lambda: len(asyncio.all_tasks()) <= baseline_tasks, what="no leftover tasks"
        )


async def test_nested_json_as_first_frame_closes_4003(harness: Any) -> None:
    gw = await harness.gateway(kafka=False)
    async with connect(url(gw)) as ws:
        await ws.send(NESTED)
        assert await close_code(ws) == CloseCode.PROTOCOL_ERROR
    await assert_released(harness, gw)


async def test_nested_json_after_connect_closes_the_socket_and_releases_all(harness: Any) -> None:
    gw = await harness.gateway(kafka=False)
    client = await harness.client(gw, "mal")
    assert gw.connection_count == 1
    await client.ws.send(NESTED)
    assert await close_code(client.ws) == CloseCode.PROTOCOL_ERROR
    await assert_released(harness, gw)


async def test_unicode_digit_in_since_closes_4003(harness: Any) -> None:
    gw = await harness.gateway(kafka=False)
    async with connect(url(gw)) as ws:
        await ws.send(connect_frame(harness, "eve", since="abcd1234:²"))
        assert await close_code(ws) == CloseCode.PROTOCOL_ERROR
    assert ws.close_reason == "offset has an invalid seq"


async def test_exception_in_the_handler_closes_1011_and_releases_all(harness: Any) -> None:
    gw = await harness.gateway(kafka=False)
    client = await harness.client(gw, "zed")

    async def broken_state(user_id: str) -> Any:
        raise RuntimeError("bug")

    gw.history.state = broken_state
    await client.ws.send(json.dumps({"type": "get_unread_count"}))
    assert await close_code(client.ws) == CloseCode.INTERNAL_ERROR
    await assert_released(harness, gw)


BAD_AFTER_CONNECT = [
    NESTED,
    '{"type":"ping","x":' + "{" * 5000,
    '{"type":"connect","token":"t"}',
    '{"type":"subscribe"}',
    "not json",
    '{"type":"ping","pad":"' + "x" * 17000 + '"}',
]
BAD_FIRST = [
    *BAD_AFTER_CONNECT,
    '{"type":"connect","token":"t","since":"abcd1234:²"}',
    '{"type":"connect","token":"t","since":{"epoch":"ab","seq":' + "9" * 40 + "}}",
    '{"type":"connect","token":"\\ud800"}',
    '{"type":"connect","token":5}',
]
DOCUMENTED = {CloseCode.PROTOCOL_ERROR, CloseCode.BAD_TOKEN, CloseCode.MESSAGE_TOO_BIG}


async def test_many_bad_connections_leave_nothing_behind(harness: Any) -> None:
    gw = await harness.gateway(kafka=False, max_connections_per_ip=1000, max_sessions_per_user=100)
    baseline = len(asyncio.all_tasks())

    async def bad_first(frame: str) -> int | None:
        async with connect(url(gw)) as ws:
            await ws.send(frame)
            return await close_code(ws, 30)

    async def bad_after_connect(user: str, frame: str) -> int | None:
        async with connect(url(gw)) as ws:
            await ws.send(connect_frame(harness, user))
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connected"
            await ws.send(frame)
            return await close_code(ws, 30)

    async def vanish(user: str | None) -> None:
        """Drop the TCP connection without a closing handshake (a killed client)."""
        ws = await connect(url(gw))
        if user is not None:
            await ws.send(connect_frame(harness, user))
            assert json.loads(await asyncio.wait_for(ws.recv(), 30))["type"] == "connected"
        ws.transport.abort()

    jobs = [bad_first(f) for _ in range(5) for f in BAD_FIRST]
    jobs += [
        bad_after_connect(u, f) for u in ("mal", "eve") for _ in range(5) for f in BAD_AFTER_CONNECT
    ]
    codes = await asyncio.gather(*jobs, *(vanish(u) for u in ("mal", None) for _ in range(10)))
    assert set(codes) <= {*DOCUMENTED, None}, codes
    assert len([c for c in codes if c is not None]) == 5 * len(BAD_FIRST) + 10 * len(
        BAD_AFTER_CONNECT
    )
    await assert_released(harness, gw, baseline)
    # And it still serves.
    client = await harness.client(gw, "zed")
    await client.ws.send(json.dumps({"type": "ping"}))
    assert (await client.recv())["type"] == "pong"


async def test_shutdown_closes_connections_with_and_without_a_session(harness: Any) -> None:
    gw = await harness.gateway(kafka=False, connect_timeout=60)
    client = await harness.client(gw, "mal")
    silent = await connect(url(gw))  # has not sent `connect`
    await harness.wait_for(lambda: len(gw._server.connections) == 2, what="both accepted")
    await gw.stop()
    assert await close_code(client.ws) == CloseCode.GOING_AWAY
    assert await close_code(silent) == CloseCode.GOING_AWAY
    assert harness.released(gw)


async def test_sessions_per_user_are_capped(harness: Any) -> None:
    gw = await harness.gateway(kafka=False, max_sessions_per_user=2)
    first = await harness.client(gw, "mal")
    await harness.client(gw, "mal")
    other_user = await harness.client(gw, "eve")  # the cap is per user
    async with connect(url(gw)) as ws:
        await ws.send(connect_frame(harness, "mal"))
        assert await close_code(ws) == CloseCode.POLICY_VIOLATION
    assert ws.close_reason == "too many sessions for user"
    await first.close()
    await harness.wait_for(lambda: len(gw.sessions.get("mal", ())) == 1, what="first released")
    again = await harness.client(gw, "mal")
    await again.ws.send(json.dumps({"type": "ping"}))
    assert (await again.recv())["type"] == "pong"
    assert other_user.ws.close_code is None


async def test_connections_per_address_are_capped(harness: Any) -> None:
    gw = await harness.gateway(kafka=False, max_connections_per_ip=2, connect_timeout=60)
    # X-Forwarded-For from an untrusted peer is the client's own claim: ignored.
    held = [
        await connect(url(gw), additional_headers={"X-Forwarded-For": f"198.51.100.{i}"})
        for i in range(2)
    ]
    async with connect(url(gw), additional_headers={"X-Forwarded-For": "198.51.100.9"}) as ws:
        assert await close_code(ws) == CloseCode.POLICY_VIOLATION
    assert ws.close_reason == "too many connections from address"
    assert gw.connections_per_address == {"127.0.0.1": 2}
    await held[0].close()
    await harness.wait_for(lambda: gw.connections_per_address == {"127.0.0.1": 1}, what="freed")
    client = await harness.client(gw, "mal")
    assert client.connected["type"] == "connected"
    await held[1].close()


async def test_forwarded_for_counts_clients_behind_a_trusted_proxy(harness: Any) -> None:
    gw = await harness.gateway(
        kafka=False, max_connections_per_ip=1, connect_timeout=60, trusted_proxies=["127.0.0.0/8"]
    )
    a = await connect(url(gw), additional_headers={"X-Forwarded-For": "198.51.100.1"})
    b = await connect(url(gw), additional_headers={"X-Forwarded-For": "6.6.6.6, 198.51.100.2"})
    await harness.wait_for(lambda: len(gw.connections_per_address) == 2, what="both counted")
    assert set(gw.connections_per_address) == {"198.51.100.1", "198.51.100.2"}
    async with connect(url(gw), additional_headers={"X-Forwarded-For": "198.51.100.1"}) as ws:
        assert await close_code(ws) == CloseCode.POLICY_VIOLATION
    for ws in (a, b):
        await ws.close()


async def test_client_frame_rate_is_limited(harness: Any) -> None:
    # A bucket of 3 that refills once in 100 s: the 4th frame is over the rate.
    gw = await harness.gateway(kafka=False, frame_rate=0.01, frame_burst=3)
    client = await harness.client(gw, "mal")
    for _ in range(3):
        await client.ws.send(json.dumps({"type": "ping"}))
        assert (await client.recv())["type"] == "pong"
    await client.ws.send(json.dumps({"type": "ping"}))
    assert await close_code(client.ws) == CloseCode.POLICY_VIOLATION
    assert client.ws.close_reason == "frame rate exceeded"
    await assert_released(harness, gw)


def padded_ping(size: int) -> str:
    frame = '{"type":"ping","pad":""}'
    return frame[:-2] + "x" * (size - len(frame)) + '"}'


async def test_frame_size_limit_closes_1009(harness: Any) -> None:
    gw = await harness.gateway(kafka=False)
    limit = gw.settings.max_message_bytes
    assert limit == 16 * 1024  # the documented default
    client = await harness.client(gw, "mal")
    await client.ws.send(padded_ping(limit))
    assert (await client.recv())["type"] == "pong"
    await client.ws.send(padded_ping(limit + 1))
    assert await close_code(client.ws) == CloseCode.MESSAGE_TOO_BIG
    async with connect(url(gw)) as ws:  # before `connect` too, and far over the limit
        await ws.send("x" * (1024 * 1024))
        assert await close_code(ws) == CloseCode.MESSAGE_TOO_BIG
    await assert_released(harness, gw)
