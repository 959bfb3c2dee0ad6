"""Global presence in Redis: which instances hold sessions of a user, and instance liveness.

Keys (``P`` = ``<redis_prefix>gw:``)::

    P{user}:pres        hash  instance id -> 1 while that instance has the user online
    Pinst:<id>:users    set   users the instance registered
    Pinst:<id>:alive    string, expires heartbeat_ttl seconds after the last heartbeat
    Pinstances          set   instance ids that registered users

A user is online while its ``pres`` hash is not empty. When an instance dies its
heartbeat key expires; a live instance's sweeper then removes the dead instance
from every user it had registered and reports the users left with no instance,
so they go offline. The scripts touch keys derived inside Lua, which is fine on
a single Redis node (the gateway's documented deployment) but not on Redis Cluster.
"""

from __future__ import annotations

from redis.asyncio import Redis

_REGISTER = """
redis.call('HSET', KEYS[1], ARGV[1], 1)
redis.call('SADD', KEYS[2], ARGV[2])
redis.call('SADD', KEYS[3], ARGV[1])
return redis.call('HLEN', KEYS[1])
"""

_UNREGISTER = """
redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('SREM', KEYS[2], ARGV[2])
return redis.call('HLEN', KEYS[1])
"""

_REAP = """
-- KEYS: 1 dead instance's users, 2 instances set, 3 dead instance's alive key
-- ARGV: 1 dead instance id, 2 presence key prefix, 3 presence key suffix
if redis.call('EXISTS', KEYS[3]) == 1 then return {} end
local offline = {}
for _, user in ipairs(redis.call('SMEMBERS', KEYS[1])) do
  local key = ARGV[2] .. user .. ARGV[3]
  redis.call('HDEL', key, ARGV[1])
  if redis.call('HLEN', key) == 0 then table.insert(offline, user) end
end
redis.call('DEL', KEYS[1])
redis.call('SREM', KEYS[2], ARGV[1])
return offline
"""


class PresenceStore:
    """Registers users online per instance, heartbeats, and reaps dead instances.

    Args:
        redis: Redis client.
        prefix: key prefix (``<redis_prefix>gw:``).
        instance_id: this instance's id.
        heartbeat_ttl: seconds after which a silent instance counts as dead.
    """

    def __init__(self, redis: Redis, prefix: str, instance_id: str, heartbeat_ttl: int) -> None:
        self.redis = redis
        self.prefix = prefix
        self.instance_id = instance_id
        self.heartbeat_ttl = heartbeat_ttl
        self._register = redis.register_script(_REGISTER)
        self._unregister = redis.register_script(_UNREGISTER)
        self._reap = redis.register_script(_REAP)

    def _pres(self, user_id: str) -> str:
        return f"{self.prefix}{{{user_id}}}:pres"

    def _users(self, instance_id: str) -> str:
        return f"{self.prefix}inst:{instance_id}:users"

    def _alive(self, instance_id: str) -> str:
        return f"{self.prefix}inst:{instance_id}:alive"

    @property
    def _instances(self) -> str:
        return f"{self.prefix}instances"

    async def register(self, user_id: str) -> bool:
        """Mark ``user_id`` online on this instance; true if no other instance had it online."""
        keys = [self._pres(user_id), self._users(self.instance_id), self._instances]
        count = await self._register(keys=keys, args=[self.instance_id, user_id])
        return int(count) == 1

    async def unregister(self, user_id: str) -> bool:
        """Remove this instance's mark; true if the user is now online nowhere."""
        keys = [self._pres(user_id), self._users(self.instance_id)]
        count = await self._unregister(keys=keys, args=[self.instance_id, user_id])
        return int(count) == 0

    async def heartbeat(self) -> None:
        """Refresh this instance's liveness key (expires after ``heartbeat_ttl``)."""
        await self.redis.set(self._alive(self.instance_id), b"1", ex=self.heartbeat_ttl)

    async def stop_heartbeat(self) -> None:
        """Delete the liveness key (graceful shutdown, after unregistering users)."""
        await self.redis.delete(self._alive(self.instance_id))

    async def sweep(self) -> list[str]:
        """Reap every instance whose heartbeat expired; return users now offline everywhere."""
        offline: list[str] = []
        members = await self.redis.smembers(self._instances)
        for raw in members:
            inst = raw.decode() if isinstance(raw, bytes) else str(raw)
            if inst == self.instance_id:
                continue
            keys = [self._users(inst), self._instances, self._alive(inst)]
            users = await self._reap(keys=keys, args=[inst, f"{self.prefix}{{", "}:pres"])
            offline.extend(u.decode() if isinstance(u, bytes) else str(u) for u in users)
        return offline

    async def is_online(self, user_id: str) -> bool:
        """True while any live instance has ``user_id`` registered."""
        return bool(await self.redis.hlen(self._pres(user_id)))
