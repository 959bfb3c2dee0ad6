"""The state marker, the rebuild lock and writing rebuilt groups back to Redis.

Keys (``P`` = ``settings.redis_prefix`` + ``"agg:"``, as in :mod:`.redis_store`):

| key | type | holds |
| --- | --- | --- |
| ``P state`` | hash | ``epoch`` (random, names one generation of the state), ``built_ms`` |
| ``P state:lock`` | string | token of the instance rebuilding, with a lease (PX) |

The aggregation script refuses to run while ``P state`` is missing, so an empty
Redis (restart without persistence, FLUSHALL, failover to an empty replica) is
never aggregated on. The marker is written by :data:`FINISH_LUA` only while the
rebuilder still holds its lock: a loss during the rebuild also wipes the lock,
so the marker is not set over half-rebuilt state and the rebuild starts over.
"""

from __future__ import annotations

import secrets
from collections.abc import Iterable
from itertools import islice
from typing import TypeVar

import redis.asyncio as aioredis

from clarion_aggregator.domain.rebuild import RebuiltState

FINISH_LUA = """
-- KEYS: 1 lock, 2 marker; ARGV: 1 token, 2 epoch, 3 built ms
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'built_ms', ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""

T = TypeVar("T")

RELEASE_LUA = """
-- KEYS: 1 lock; ARGV: 1 token, 2 lease ms (0: release)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""


def _chunks(items: Iterable[T], size: int) -> Iterable[list[T]]:
    it = iter(items)
    while chunk := list(islice(it, size)):
        yield chunk


class RebuildStore:
    """Marker, lock and bulk restore of the aggregation state.

    Args:
        redis: an asyncio client (bytes replies).
        prefix: ``settings.redis_prefix`` (``"agg:"`` is appended, as in
            :class:`~clarion_aggregator.adapters.redis_store.RedisStateStore`).
    """

    def __init__(self, redis: aioredis.Redis, prefix: str) -> None:
        self.redis = redis
        self.prefix = prefix + "agg:"
        self.marker_key = self.prefix + "state"
        self.lock_key = self.prefix + "state:lock"
        self._finish = redis.register_script(FINISH_LUA)
        self._release = redis.register_script(RELEASE_LUA)

    async def marker(self) -> dict[str, str] | None:
        """The state marker (``epoch``, ``built_ms``), or ``None`` when the state is lost."""
        raw = await self.redis.hgetall(self.marker_key)
        if not raw:
            return None
        return {_s(k): _s(v) for k, v in raw.items()}

    async def acquire(self, token: str, lease_ms: int) -> bool:
        """Take the rebuild lock for ``lease_ms`` (False: another instance holds it)."""
        return bool(await self.redis.set(self.lock_key, token, nx=True, px=lease_ms))

    async def extend(self, token: str, lease_ms: int) -> bool:
        """Renew the lease; False when the lock is no longer ours (lost with Redis)."""
        return bool(await self._release(keys=[self.lock_key], args=[token, lease_ms]))

    async def release(self, token: str) -> None:
        """Give the lock up (after a failed rebuild)."""
        await self._release(keys=[self.lock_key], args=[token, 0])

    async def lock_held(self) -> bool:
        """True while some instance holds the rebuild lock."""
        return bool(await self.redis.exists(self.lock_key))

    async def finish(self, token: str, built_ms: int) -> str | None:
        """Write the marker with a new state epoch if the lock is still ours.

        Returns the epoch, or ``None`` when the lock was lost (Redis lost data during
        the rebuild: it must start over).
        """
        epoch = secrets.token_hex(8)
        done = await self._finish(
            keys=[self.lock_key, self.marker_key], args=[token, epoch, built_ms]
        )
        return epoch if done else None

    async def restore(self, state: RebuiltState, ttl_seconds: int, chunk: int = 500) -> None:
        """Write groups, open pointers and dedup keys (pipelined, ``chunk`` groups a round).

        Overwrites what it writes; call it only while the marker is missing, when no
        aggregation runs.
        """
        p = self.prefix
        for groups in _chunks(state.groups.values(), chunk):
            async with self.redis.pipeline(transaction=False) as pipe:
                for g in groups:
                    nkey = p + "n:" + g.notification_id
                    akey = p + "na:" + g.notification_id
                    pipe.delete(nkey, akey)
                    pipe.hset(nkey, mapping=g.fields)  # type: ignore[arg-type]
                    pipe.expire(nkey, ttl_seconds)
                    if g.actor_ids:
                        pipe.sadd(akey, *g.actor_ids)
                        pipe.expire(akey, ttl_seconds)
                await pipe.execute()
        for opens in _chunks(state.open_groups.items(), chunk * 4):
            async with self.redis.pipeline(transaction=False) as pipe:
                for key, nid in opens:
                    pipe.set(p + "open:" + key, nid, ex=ttl_seconds)
                await pipe.execute()
        for seen in _chunks(state.seen.items(), chunk * 4):
            async with self.redis.pipeline(transaction=False) as pipe:
                for (recipient, event_id), nid in seen:
                    pipe.set(p + "seen:" + recipient + ":" + event_id, nid, ex=ttl_seconds)
                await pipe.execute()


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
