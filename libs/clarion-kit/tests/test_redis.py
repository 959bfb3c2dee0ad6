"""The Redis client factory, reply decoding, and pipelined Lua calls (on the devstack)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from redis import exceptions as redis_errors

from clarion_kit.redis import create_redis, decode_text, evalsha_many
from clarion_kit.settings import ServiceSettings

# Adds ARGV[1] to KEYS[1]; a negative amount fails the call (after nothing was written).
_ADD = """
if tonumber(ARGV[1]) < 0 then return redis.error_reply('negative amount') end
return redis.call('INCRBY', KEYS[1], ARGV[1])
"""


@pytest.mark.parametrize(
    ("reply", "text"),
    [(None, ""), (b"sent", "sent"), ("sent", "sent"), (b"", ""), ("ünï".encode(), "ünï"), (3, "3")],
)
def test_decode_text_reads_bytes_and_str_replies_alike(reply: object, text: str) -> None:
    assert decode_text(reply) == text


def test_decode_text_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_text(b"\xff")


async def test_create_redis_names_the_client_and_connects_lazily(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = ServiceSettings(service_name="kit-redis", redis_url="redis://127.0.0.1:1/3")
    client = create_redis(settings, socket_timeout=1.5)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["client_name"] == "kit-redis"
        assert kwargs["db"] == 3
        assert kwargs["socket_timeout"] == 1.5
    finally:
        await client.aclose()


@pytest.mark.integration
async def test_a_burst_wider_than_the_pool_waits_for_connections_instead_of_failing(
    devstack: Any, clean_env: pytest.MonkeyPatch
) -> None:
    settings = ServiceSettings(redis_url=devstack.redis_url, redis_max_connections=4)
    client = create_redis(settings)
    try:
        # 50 concurrent blocking commands on a pool of 4: each holds its connection for
        # 20 ms, so most callers find the pool exhausted and must queue for a connection.
        results = await asyncio.gather(
            *(client.blpop([f"kit-burst-{n}"], timeout=0.02) for n in range(50))
        )
        assert results == [None] * 50
        assert len(client.connection_pool._in_use_connections) == 0
        assert client.connection_pool.max_connections == 4
    finally:
        await client.aclose()


async def _script_commands(client: Any) -> int:
    stats = await client.info("commandstats")
    return int(stats.get("cmdstat_script", {}).get("calls", 0))


@pytest.fixture
async def adder(redis: Any, redis_prefix: str) -> tuple[Any, str]:
    """The ``_ADD`` script, loaded by a first call as a service's first call does, and its key."""
    script = redis.register_script(_ADD)
    key = f"{redis_prefix}sum"
    await script(keys=[key], args=[0])
    return script, key


@pytest.mark.integration
async def test_evalsha_many_answers_in_order_in_one_round_trip(
    redis: Any, adder: tuple[Any, str]
) -> None:
    script, key = adder
    before = await _script_commands(redis)
    replies = await evalsha_many(redis, script, [([key], [n]) for n in (1, 2, 3, 4)])
    assert replies == [1, 3, 6, 10]
    assert await _script_commands(redis) == before  # no SCRIPT EXISTS per batch
    assert await evalsha_many(redis, script, []) == []


@pytest.mark.integration
async def test_evalsha_many_reloads_a_flushed_script_and_runs_each_call_once(
    redis: Any, adder: tuple[Any, str]
) -> None:
    script, key = adder
    await redis.script_flush()
    replies = await evalsha_many(redis, script, [([key], [5]), ([key], [7])])
    assert replies == [5, 12]
    assert int(await redis.get(key)) == 12


@pytest.mark.integration
async def test_evalsha_many_raises_the_failed_call_after_running_the_others(
    redis: Any, redis_prefix: str
) -> None:
    script = redis.register_script(_ADD)
    key = f"{redis_prefix}partial"
    with pytest.raises(redis_errors.ResponseError, match="negative amount"):
        await evalsha_many(redis, script, [([key], [2]), ([key], [-1]), ([key], [3])])
    assert int(await redis.get(key)) == 5
