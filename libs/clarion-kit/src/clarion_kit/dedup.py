"""Consumer idempotency on Redis: first-seen keys and monotonic versions.

At-least-once delivery means a consumer may see a record twice (a rebalance after
processing but before the offset commit). :class:`Deduplicator` makes handlers
idempotent::

    dedup = Deduplicator(redis, "aggregator:events", ttl_seconds=7 * 24 * 3600)
    if not await dedup.first_seen(str(event.event_id)):
        return  # already processed
    try:
        await process(event)
    except Exception:
        await dedup.forget(str(event.event_id))  # so the retry is not skipped
        raise

For upsert-by-id+version streams (notifications updated in place) use
:meth:`Deduplicator.accept_version`, which accepts a version only if it is newer.
"""

from __future__ import annotations

from typing import Any

import redis.asyncio as aioredis

# KEYS[1] key; ARGV[1] version; ARGV[2] ttl seconds. Returns 1 if accepted.
_ACCEPT_VERSION = """
local current = redis.call('GET', KEYS[1])
if current and tonumber(current) >= tonumber(ARGV[1]) then
  return 0
end
redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[2])
return 1
"""


class Deduplicator:
    """Remembers keys (and versions) in Redis for ``ttl_seconds``.

    Args:
        redis: an asyncio Redis client.
        namespace: key prefix such as ``"clarion:aggregator:events"``; keys are
            ``<namespace>:<key>`` and ``<namespace>:v:<key>`` for versions.
        ttl_seconds: how long a key is remembered (>= 1): longer than the time a
            duplicate can still arrive (topic retention or the rebalance window).

    Raises:
        ValueError: ``ttl_seconds`` < 1.
    """

    def __init__(self, redis: aioredis.Redis, namespace: str, ttl_seconds: int) -> None:
        if ttl_seconds < 1:
            raise ValueError("ttl_seconds must be >= 1")
        self.redis = redis
        self.namespace = namespace.rstrip(":")
        self.ttl_seconds = int(ttl_seconds)
        self._accept: Any = redis.register_script(_ACCEPT_VERSION)

    def _key(self, key: str) -> str:
        return f"{self.namespace}:{key}"

    def _vkey(self, key: str) -> str:
        return f"{self.namespace}:v:{key}"

    async def first_seen(self, key: str) -> bool:
        """Atomically mark ``key`` as seen (``SET NX EX``).

        Returns:
            True the first time within the TTL (process it), False for a duplicate.
        """
        return bool(await self.redis.set(self._key(key), b"1", nx=True, ex=self.ttl_seconds))

    async def seen(self, key: str) -> bool:
        """True if ``key`` was marked and has not expired or been forgotten."""
        return bool(await self.redis.exists(self._key(key)))

    async def forget(self, key: str) -> None:
        """Unmark ``key`` so a redelivery after a failed handler is processed again."""
        await self.redis.delete(self._key(key))

    async def accept_version(self, key: str, version: int) -> bool:
        """Atomically accept ``version`` of ``key`` only if it is newer than the stored one.

        A Lua script compares and sets in one step, so concurrent consumers never
        both accept the same version. The TTL is refreshed on acceptance.

        Returns:
            True if ``version`` is greater than the last accepted one (or none is
            stored); False for an equal or older version (a duplicate or stale update).
        """
        result = await self._accept(keys=[self._vkey(key)], args=[int(version), self.ttl_seconds])
        return bool(int(result))

    async def current_version(self, key: str) -> int | None:
        """The last accepted version of ``key``, or None."""
        raw = await self.redis.get(self._vkey(key))
        return None if raw is None else int(raw)

    async def forget_version(self, key: str) -> None:
        """Drop the stored version of ``key`` (the next version is then accepted)."""
        await self.redis.delete(self._vkey(key))
