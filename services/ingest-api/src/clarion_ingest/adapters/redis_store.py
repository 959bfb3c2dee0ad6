"""Redis state of ingest-api: the unread-counts cache and rate-limit counters.

Both are caches of a sort: losing Redis loses no data. Counts are rebuilt from
PostgreSQL on a miss; rate-limit counters restart from zero.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from clarion_ingest.domain.models import CountsOut
from clarion_ingest.domain.ratelimit import (
    RateDecision,
    Strategy,
    fixed_window,
    sliding_window,
    window_index,
)


class CountsCache:
    """A user's inbox counts (:class:`CountsOut` as JSON) under ``<prefix>ingest:counts:<user>``.

    Args:
        client: the Redis client.
        prefix: the deployment's Redis key prefix (``settings.redis_prefix``).
        ttl_seconds: expiry of a cached entry; it bounds how long a missed
            invalidation can show a wrong count.
    """

    def __init__(self, client: aioredis.Redis, prefix: str, ttl_seconds: int) -> None:
        self.client = client
        self.prefix = prefix
        self.ttl_seconds = ttl_seconds

    def key(self, user_id: str) -> str:
        """The Redis key of ``user_id``'s counts."""
        return f"{self.prefix}ingest:counts:{user_id}"

    async def get(self, user_id: str) -> CountsOut | None:
        """The cached counts, or None on a miss (or when Redis is unreachable)."""
        try:
            raw = await self.client.get(self.key(user_id))
        except RedisError:
            return None
        if raw is None:
            return None
        try:
            return CountsOut.model_validate_json(raw)
        except ValueError:
            return None

    async def set(self, user_id: str, counts: CountsOut) -> None:
        """Cache ``counts`` (best effort: a Redis failure only costs a later rebuild)."""
        try:
            await self.client.set(self.key(user_id), counts.model_dump_json(), ex=self.ttl_seconds)
        except RedisError:
            return

    async def invalidate(self, user_id: str) -> None:
        """Drop the cached counts so the next read rebuilds them from PostgreSQL."""
        try:
            await self.client.delete(self.key(user_id))
        except RedisError:
            return

    async def invalidate_many(self, user_ids: Iterable[str]) -> None:
        """Drop the cached counts of every user in ``user_ids`` with one ``DEL`` (one round trip).

        Best effort like :meth:`invalidate`: an unreachable Redis leaves entries that
        expire after ``ttl_seconds``.
        """
        keys = sorted({self.key(u) for u in user_ids})
        if not keys:
            return
        try:
            await self.client.delete(*keys)
        except RedisError:
            return


RATE_LIMIT_LUA = """
local current = redis.call('INCR', KEYS[1])
if current == 1 then redis.call('EXPIRE', KEYS[1], ARGV[1]) end
return {current, tonumber(redis.call('GET', KEYS[2]) or '0')}
"""
"""Count one request in the current window (KEYS[1], expiring after ARGV[1] seconds)
and read the previous window's count (KEYS[2]): one atomic call per request."""

PEEK_AND_COUNT_LUA = """
local peeked = redis.call('MGET', KEYS[1], KEYS[2])
local current = redis.call('INCR', KEYS[3])
if current == 1 then redis.call('EXPIRE', KEYS[3], ARGV[1]) end
return {tonumber(peeked[1] or '0'), tonumber(peeked[2] or '0'),
        current, tonumber(redis.call('GET', KEYS[4]) or '0')}
"""
"""Read one bucket's current and previous window (KEYS[1], KEYS[2]) without counting,
and count one request of another (as :data:`RATE_LIMIT_LUA` with KEYS[3], KEYS[4]):
the two checks of an authenticated producer request in one round trip."""


class RateLimiter:
    """Fixed- or sliding-window request counters per bucket (an API key or a user).

    Keys are ``<prefix>ingest:rl:<bucket>:<window number>`` and expire after two
    windows. When Redis is unreachable requests are allowed (fail open): an
    outage of the limiter must not take the API down with it.

    Args:
        client: the Redis client.
        prefix: the Redis key prefix.
        strategy: ``fixed`` or ``sliding`` (see :mod:`clarion_ingest.domain.ratelimit`).
        window_seconds: window length in seconds.
        clock: UNIX time source (seconds), replaceable in tests.
    """

    def __init__(
        self,
        client: aioredis.Redis,
        prefix: str,
        strategy: Strategy,
        window_seconds: int,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.client = client
        self.prefix = prefix
        self.strategy = strategy
        self.window_seconds = window_seconds
        self.clock = clock
        self._count = client.register_script(RATE_LIMIT_LUA)
        self._peek_and_count = client.register_script(PEEK_AND_COUNT_LUA)

    def _key(self, bucket: str, window: int) -> str:
        return f"{self.prefix}ingest:rl:{bucket}:{window}"

    async def hit(self, bucket: str, limit: int) -> RateDecision:
        """Count one request of ``bucket`` and decide it against ``limit`` per window."""
        if limit <= 0:
            return RateDecision(True, 0, 0, 0)
        now = self.clock()
        window = window_index(now, self.window_seconds)
        current_key = self._key(bucket, window)
        try:
            current, previous = await self._count(
                keys=[current_key, self._key(bucket, window - 1)], args=[self.window_seconds * 2]
            )
        except RedisError:
            return RateDecision(True, limit, limit, 0)
        if self.strategy == "fixed":
            return fixed_window(int(current), limit, now, self.window_seconds)
        return sliding_window(int(previous or 0), int(current), limit, now, self.window_seconds)

    async def peek_and_hit(
        self, peek_bucket: str, peek_limit: int, bucket: str, limit: int
    ) -> tuple[RateDecision, RateDecision]:
        """:meth:`peek` at ``peek_bucket`` and :meth:`hit` ``bucket``, in one round trip.

        The request is counted in ``bucket`` whatever the peek decides. Fails open
        like the two calls it replaces.

        Returns:
            (the peek's decision, the hit's decision).
        """
        if peek_limit <= 0 or limit <= 0:
            return await self.peek(peek_bucket, peek_limit), await self.hit(bucket, limit)
        now = self.clock()
        window = window_index(now, self.window_seconds)
        keys = [
            self._key(peek_bucket, window),
            self._key(peek_bucket, window - 1),
            self._key(bucket, window),
            self._key(bucket, window - 1),
        ]
        try:
            peek_current, peek_previous, current, previous = await self._peek_and_count(
                keys=keys, args=[self.window_seconds * 2]
            )
        except RedisError:
            return RateDecision(True, peek_limit, peek_limit, 0), RateDecision(
                True, limit, limit, 0
            )
        return (
            self._decide(int(peek_previous), int(peek_current) + 1, peek_limit, now),
            self._decide(int(previous), int(current), limit, now),
        )

    def _decide(self, previous: int, current: int, limit: int, now: float) -> RateDecision:
        if self.strategy == "fixed":
            return fixed_window(current, limit, now, self.window_seconds)
        return sliding_window(previous, current, limit, now, self.window_seconds)

    async def peek(self, bucket: str, limit: int) -> RateDecision:
        """Decide the next request of ``bucket`` against ``limit`` without counting it.

        Used where only some requests count (failed API-key attempts): a client
        over the limit is refused before its request is looked at.
        """
        if limit <= 0:
            return RateDecision(True, 0, 0, 0)
        now = self.clock()
        window = window_index(now, self.window_seconds)
        try:
            current, previous = await self.client.mget(
                self._key(bucket, window), self._key(bucket, window - 1)
            )
        except RedisError:
            return RateDecision(True, limit, limit, 0)
        upcoming = int(current or 0) + 1
        if self.strategy == "fixed":
            return fixed_window(upcoming, limit, now, self.window_seconds)
        return sliding_window(int(previous or 0), upcoming, limit, now, self.window_seconds)
