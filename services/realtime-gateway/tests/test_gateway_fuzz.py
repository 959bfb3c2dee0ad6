"""Fuzzing the real gateway's WebSocket endpoint on the embedded stack.

Hypothesis generates client frames, valid-looking and malformed (broken JSON, deep
nesting, huge strings, wrong types, unicode digits in offsets, binary frames), sent
before or after a valid ``connect``. Every connection must either end with a close
code docs/gateway-protocol.md documents for a bad frame (never 1011) or stay
healthy (answer a ``ping`` after the frame), while a bystander session keeps being
served; at the end the gateway holds no connection at all.
"""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clarion_gateway.protocol import CloseCode

pytestmark = pytest.mark.integration

DOCUMENTED = {CloseCode.PROTOCOL_ERROR, CloseCode.BAD_TOKEN, CloseCode.MESSAGE_TOO_BIG}
"""What a bad frame may end a connection with (a valid one leaves it open)."""

UNICODE_DIGITS = "²³¹٣۴߅०১੧૨୩௪౫೬൭෮๗໘༩၀႑១᠒᧑᪁᭒᮳᱀꘠꣐꤀꧐꩐꯰０𐒠𝟎🯱"

scalars = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**70), max_value=2**70)
    | st.floats(allow_nan=True)
    | st.text(max_size=30)
)
json_values = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=4) | st.dictionaries(st.text(max_size=8), inner, max_size=4)
    ),
    max_leaves=12,
)
epochs = st.from_regex(r"[A-Za-z0-9_-]{1,32}", fullmatch=True) | st.text(max_size=40)
seqs = (
    st.integers(min_value=-5, max_value=2**66).map(str)
    | st.text(alphabet=UNICODE_DIGITS + "0123456789", min_size=1, max_size=25)
    | st.text(max_size=10)
)
offsets = (
    st.none()
    | st.builds(lambda e, s: f"{e}:{s}", epochs, seqs)
    | st.fixed_dictionaries({"epoch": epochs | json_values, "seq": json_values | st.integers()})
    | json_values
)
tokens = (
    st.just("VALID")
    | st.text(max_size=60)
    | json_values
    | st.integers(15_000, 30_000).map("a".__mul__)
)
frame_types = st.sampled_from(["connect", "ping", "get_unread_count", "subscribe", "", "PING"])
objects = st.fixed_dictionaries(
    {"type": frame_types | json_values},
    optional={"token": tokens, "since": offsets, "extra": json_values},
)


def _nest(depth: int, opener: str) -> str:
    if opener == "[":
        return "[" * depth + "]" * depth
    return '{"a":' * depth + "1" + "}" * depth


frames = st.one_of(
    objects.map(json.dumps),
    objects.map(lambda o: json.dumps(o, ensure_ascii=False)),
    json_values.map(json.dumps),
    st.text(max_size=200),
    st.binary(max_size=64),
    st.builds(_nest, st.integers(1, 8000), st.sampled_from("[{")),
    st.integers(1, 6000).map(lambda n: '{"type":"ping","x":' + "[" * n),
    st.integers(10_000, 40_000).map(lambda n: '{"type":"ping","pad":"' + "é" * n + '"}'),
    st.builds(
        lambda e, d: json.dumps({"type": "connect", "token": "VALID", "since": f"{e}:{d}"}),
        epochs,
        st.text(alphabet=UNICODE_DIGITS, min_size=1, max_size=4),
    ),
)


async def _outcome(ws: Any) -> int | None:
    """Send a ping; None when it is answered, else the close code the server sent."""
    try:
        await ws.send('{"type":"ping"}')
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 20))
            if frame["type"] == "pong":
                return None
    except ConnectionClosed:
        return ws.close_code


@settings(
    max_examples=120,
    deadline=None,
    suppress_health_check=[
        HealthCheck.function_scoped_fixture,
        HealthCheck.too_slow,
        HealthCheck.data_too_large,
    ],
)
@given(connect_first=st.booleans(), sent=st.lists(frames, min_size=1, max_size=3))
async def test_fuzzed_frames_end_with_documented_codes(
    fuzz_gateway: tuple[Any, Any, Any], connect_first: bool, sent: list[str | bytes]
) -> None:
    harness, gw, bystander = fuzz_gateway
    async with connect(f"ws://127.0.0.1:{gw.ws_port}/v1/ws", max_size=None) as ws:
        if connect_first:
            await ws.send(json.dumps({"type": "connect", "token": harness.token("fuzz")}))
            assert json.loads(await asyncio.wait_for(ws.recv(), 20))["type"] == "connected"
        code = None
        for raw in sent:
            if isinstance(raw, str) and "VALID" in raw:
                raw = raw.replace('"VALID"', json.dumps(harness.token("fuzz")))
            try:
                await ws.send(raw)
            except ConnectionClosed:
                break
            code = await _outcome(ws)
            if code is not None:
                break
        if code is None and ws.close_code is not None:
            code = ws.close_code
        assert code is None or code in DOCUMENTED, (code, ws.close_reason, sent)
    await bystander.ws.send('{"type":"ping"}')
    assert (await bystander.recv())["type"] == "pong"


@pytest.fixture
async def fuzz_gateway(harness: Any) -> Any:
    """One gateway for every example, a bystander session; afterwards nothing is left open."""
    gw = await harness.gateway(
        kafka=False, frame_rate=10_000, frame_burst=10_000, max_sessions_per_user=10_000
    )
    bystander = await harness.client(gw, "bystander")
    yield harness, gw, bystander
    await bystander.close()
    await harness.wait_for(lambda: harness.released(gw), what="every fuzzed connection released")
