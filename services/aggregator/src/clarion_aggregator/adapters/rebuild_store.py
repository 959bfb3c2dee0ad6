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

import orjson
import redis.asyncio as aioredis

from clarion_aggregator.domain.rebuild import RebuiltState
from clarion_kit.redis import evalsha_many

FINISH_LUA = """
-- KEYS: 1 lock, 2 marker; ARGV: 1 token, 2 epoch, 3 built ms
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[2], 'epoch', ARGV[2], 'built_ms', ARGV[3])
redis.call('DEL', KEYS[1])
return 1
"""

RESTORE_LUA = """
-- ARGV: 1 key prefix, 2 ttl seconds, 3 JSON {g: [[id, [field, value, ...], [actor ids]]],
--       o: [[recipient|type|object ref, id]], s: [[recipient, event id, id]]}
local prefix = ARGV[1]
local ttl = tonumber(ARGV[2])
local data = cjson.decode(ARGV[3])
for _, g in ipairs(data.g) do
  local nkey = prefix .. 'n:' .. g[1]
  local akey = prefix .. 'na:' .. g[1]
  redis.call('DEL', nkey, akey)
  redis.call('HSET', nkey, unpack(g[2]))
  redis.call('EXPIRE', nkey, ttl)
  local ids = g[3]
  -- SADD in slices: unpack() of thousands of placeholders would overflow Lua's stack.
  for i = 1, #ids, 500 do
    redis.call('SADD', akey, unpack(ids, i, math.min(i + 499, #ids)))
  end
  if #ids > 0 then redis.call('EXPIRE', akey, ttl) end
end
for _, o in ipairs(data.o) do
  redis.call('SET', prefix .. 'open:' .. o[1], o[2], 'EX', ttl)
end
for _, e in ipairs(data.s) do
  redis.call('SET', prefix .. 'seen:' .. e[1] .. ':' .. e[2], e[3], 'EX', ttl)
end
return 1
"""

RELEASE_LUA = """
-- KEYS: 1 lock; ARGV: 1 token, 2 lease ms (0: release)
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if tonumber(ARGV[2]) > 0 then return redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
return redis.call('DEL', KEYS[1])
"""


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
        self._restore = redis.register_script(RESTORE_LUA)

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

    async def restore(self, state: RebuiltState, ttl_seconds: int, chunk: int = 1000) -> None:
        """Write groups, open pointers and dedup keys with :data:`RESTORE_LUA`.

        ``chunk`` groups (and as many open pointers and dedup keys) per script call,
        the calls pipelined: one command per key would cost a round of redis-py
        encoding and parsing each, several times the Redis work. Overwrites what it
        writes; call it only while the marker is missing, when no aggregation runs.
        """
        groups = [
            [g.notification_id, [x for kv in g.fields.items() for x in kv], list(g.actor_ids)]
            for g in state.groups.values()
        ]
        opens = [[key, nid] for key, nid in state.open_groups.items()]
        seen = [[recipient, event_id, nid] for (recipient, event_id), nid in state.seen.items()]
        size = max(len(groups), len(opens), len(seen))
        calls = [
            (
                (),
                (
                    self.prefix,
                    ttl_seconds,
                    orjson.dumps(
                        {
                            "g": groups[start : start + chunk],
                            "o": opens[start : start + chunk],
                            "s": seen[start : start + chunk],
                        }
                    ),
                ),
            )
            for start in range(0, size, chunk)
        ]
        await evalsha_many(self.redis, self._restore, calls)


def _s(value: bytes | str) -> str:
    return value.decode() if isinstance(value, bytes) else value
