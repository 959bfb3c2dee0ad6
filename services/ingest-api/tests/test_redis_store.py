"""RateLimiter on the embedded Redis: one atomic count per request, windows, expiry."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
import redis.asyncio as aioredis

from clarion_ingest.adapters.redis_store import RateLimiter

pytestmark = pytest.mark.integration

WINDOW = 60


class Clock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


@pytest.fixture
async def client(devstack: Any) -> Any:
    redis = aioredis.from_url(devstack.redis_url)
    yield redis
    await redis.aclose()


async def test_fixed_window_counts_and_expires(client: Any) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    clock = Clock(1_000_040.0)  # 20 s into window 16667 of 60 s
    limiter = RateLimiter(client, prefix, "fixed", WINDOW, clock=clock)
    decisions = [await limiter.hit("key:a", 2) for _ in range(3)]
    assert [d.allowed for d in decisions] == [True, True, False]
    assert decisions[-1].retry_after == 40
    key = f"{prefix}ingest:rl:key:a:{int(clock.now // WINDOW)}"
    assert int(await client.get(key)) == 3
    assert 0 < await client.ttl(key) <= 2 * WINDOW
    # Another bucket has its own count.
    assert (await limiter.hit("key:b", 2)).allowed


async def test_sliding_window_weighs_the_previous_window(client: Any) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    clock = Clock(1_000_040.0)
    limiter = RateLimiter(client, prefix, "sliding", WINDOW, clock=clock)
    for _ in range(4):
        assert (await limiter.hit("user:u", 4)).allowed
    # 15 s into the next window, 3/4 of the previous window still counts: 3 + 1 <= 4.
    clock.now = (int(clock.now // WINDOW) + 1) * WINDOW + 15
    assert (await limiter.hit("user:u", 4)).allowed
    refused = await limiter.hit("user:u", 4)
    assert not refused.allowed
    assert refused.retry_after > 0


async def test_limit_zero_never_touches_redis(client: Any) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    limiter = RateLimiter(client, prefix, "fixed", WINDOW, clock=Clock(1_000_020.0))
    assert (await limiter.hit("key:z", 0)).allowed
    assert await client.keys(f"{prefix}*") == []


@pytest.mark.parametrize("strategy", ["fixed", "sliding"])
async def test_peek_decides_the_next_request_without_counting_it(
    client: Any, strategy: str
) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    clock = Clock(1_000_040.0)
    limiter = RateLimiter(client, prefix, strategy, WINDOW, clock=clock)  # type: ignore[arg-type]
    for _ in range(5):
        assert (await limiter.peek("authfail:ip", 2)).allowed
    assert await client.keys(f"{prefix}*") == []
    await limiter.hit("authfail:ip", 2)
    assert (await limiter.peek("authfail:ip", 2)).allowed
    await limiter.hit("authfail:ip", 2)
    refused = await limiter.peek("authfail:ip", 2)
    assert not refused.allowed
    assert refused.retry_after > 0
    assert int(await client.get(f"{prefix}ingest:rl:authfail:ip:{int(clock.now // WINDOW)}")) == 2


@pytest.mark.parametrize("strategy", ["fixed", "sliding"])
async def test_peek_and_hit_decides_like_the_two_calls_in_one(client: Any, strategy: str) -> None:
    prefix = f"t{uuid.uuid4().hex[:8]}:"
    clock = Clock(1_000_040.0)
    limiter = RateLimiter(client, prefix, strategy, WINDOW, clock=clock)  # type: ignore[arg-type]
    twin = RateLimiter(client, f"{prefix}twin:", strategy, WINDOW, clock=clock)  # type: ignore[arg-type]
    await limiter.hit("authfail:ip", 3)
    await twin.hit("authfail:ip", 3)
    combined = [await limiter.peek_and_hit("authfail:ip", 3, "key:k", 2) for _ in range(3)]
    separate = [(await twin.peek("authfail:ip", 3), await twin.hit("key:k", 2)) for _ in range(3)]
    assert combined == separate
    assert [key.allowed for _, key in combined] == [True, True, False]
    assert all(peeked.allowed for peeked, _ in combined)  # peeking counts nothing
    window = int(clock.now // WINDOW)
    assert int(await client.get(f"{prefix}ingest:rl:authfail:ip:{window}")) == 1
    assert int(await client.get(f"{prefix}ingest:rl:key:k:{window}")) == 3
    await limiter.hit("authfail:ip", 3)
    await limiter.hit("authfail:ip", 3)
    throttled, _ = await limiter.peek_and_hit("authfail:ip", 3, "key:k", 2)
    assert not throttled.allowed
