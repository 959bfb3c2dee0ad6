"""Deduplicator against a real Redis server (the devstack's)."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from clarion_kit.dedup import Deduplicator

pytestmark = pytest.mark.integration


async def test_first_seen_and_forget(redis: Any, redis_prefix: str) -> None:
    dedup = Deduplicator(redis, redis_prefix + "events", ttl_seconds=60)
    assert await dedup.first_seen("e1")
    assert not await dedup.first_seen("e1")
    assert await dedup.seen("e1")
    assert await dedup.first_seen("e2")
    ttl = await redis.ttl(redis_prefix + "events:e1")
    assert 0 < ttl <= 60
    await dedup.forget("e1")
    assert not await dedup.seen("e1")
    assert await dedup.first_seen("e1")


async def test_first_seen_is_atomic_under_concurrency(redis: Any, redis_prefix: str) -> None:
    dedup = Deduplicator(redis, redis_prefix + "race", ttl_seconds=60)
    results = await asyncio.gather(*(dedup.first_seen("same") for _ in range(20)))
    assert results.count(True) == 1


async def test_accept_version_only_newer(redis: Any, redis_prefix: str) -> None:
    dedup = Deduplicator(redis, redis_prefix + "notif", ttl_seconds=60)
    assert await dedup.current_version("n1") is None
    assert await dedup.accept_version("n1", 1)
    assert not await dedup.accept_version("n1", 1)
    assert await dedup.accept_version("n1", 3)
    assert not await dedup.accept_version("n1", 2)
    assert await dedup.current_version("n1") == 3
    assert await dedup.accept_version("n2", 2)
    assert 0 < await redis.ttl(redis_prefix + "notif:v:n1") <= 60
    await dedup.forget_version("n1")
    assert await dedup.accept_version("n1", 1)


async def test_accept_version_concurrent_same_version(redis: Any, redis_prefix: str) -> None:
    dedup = Deduplicator(redis, redis_prefix + "vrace", ttl_seconds=60)
    results = await asyncio.gather(*(dedup.accept_version("n", 5) for _ in range(20)))
    assert results.count(True) == 1


def test_ttl_must_be_positive() -> None:
    with pytest.raises(ValueError, match="ttl_seconds"):
        Deduplicator(object(), "x", ttl_seconds=0)  # type: ignore[arg-type]
