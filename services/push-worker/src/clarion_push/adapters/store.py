"""Redis state of push-worker: subscriptions, scheduled deliveries and the delivery log.

Key layout (every key starts with ``settings.redis_prefix``):

``push:sub:<subscription_id>``
    the :class:`PushSubscription` JSON, materialised from ``clarion.push-subscriptions.v1``.
``push:user:<user_id>``
    set of that user's subscription ids.
``push:schedule`` / ``push:jobs``
    sorted set of job ids scored by due Unix time / hash of job id → job JSON:
    requests deferred by ``not_before`` and retries waiting for their backoff.
``push:sent:<request_id>:<subscription_id>``
    ``"inflight"`` while one worker sends (a lease), ``"sent"`` once the push
    service answered 2xx; a redelivered request skips a pair marked ``sent``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from clarion_contracts.v1 import PushSubscription


class SubscriptionStore:
    """Subscriptions per user, materialised from the compacted subscriptions topic."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _sub_key(self, subscription_id: str) -> str:
        return f"{self._prefix}push:sub:{subscription_id}"

    def _user_key(self, user_id: str) -> str:
        return f"{self._prefix}push:user:{user_id}"

    async def apply(self, subscription: PushSubscription) -> bool:
        """Upsert an active subscription or delete an inactive one (``active=False``).

        A record older (``updated_at``) than the stored one is ignored, so replaying
        the compacted topic cannot resurrect a removed subscription's older state.

        Returns:
            True if the stored state changed.
        """
        key = self._sub_key(subscription.subscription_id)
        raw = await self._redis.get(key)
        if raw is not None:
            current = PushSubscription.model_validate_json(raw)
            if current.updated_at > subscription.updated_at:
                return False
        if not subscription.active:
            return await self.remove(subscription.subscription_id)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(key, subscription.model_dump_json())
            pipe.sadd(self._user_key(subscription.user_id), subscription.subscription_id)
            if raw is not None and current.user_id != subscription.user_id:
                pipe.srem(self._user_key(current.user_id), subscription.subscription_id)
            await pipe.execute()
        return True

    async def remove(self, subscription_id: str) -> bool:
        """Delete a subscription; returns True if it existed."""
        key = self._sub_key(subscription_id)
        raw = await self._redis.get(key)
        if raw is None:
            return False
        current = PushSubscription.model_validate_json(raw)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.delete(key)
            pipe.srem(self._user_key(current.user_id), subscription_id)
            await pipe.execute()
        return True

    async def get(self, subscription_id: str) -> PushSubscription | None:
        """The stored subscription, or None."""
        raw = await self._redis.get(self._sub_key(subscription_id))
        return None if raw is None else PushSubscription.model_validate_json(raw)

    async def for_user(self, user_id: str) -> list[PushSubscription]:
        """Every active subscription of ``user_id`` (sorted by subscription id)."""
        ids = sorted(
            i.decode() if isinstance(i, bytes) else i
            for i in await self._redis.smembers(self._user_key(user_id))
        )
        if not ids:
            return []
        raws = await self._redis.mget([self._sub_key(i) for i in ids])
        return [PushSubscription.model_validate_json(r) for r in raws if r is not None]


_CLAIM_DUE = """
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', ARGV[1], 'LIMIT', 0, tonumber(ARGV[3]))
local out = {}
for _, member in ipairs(due) do
  redis.call('ZADD', KEYS[1], ARGV[2], member)
  table.insert(out, member)
  table.insert(out, redis.call('HGET', KEYS[2], member) or '')
end
return out
"""


@dataclass(frozen=True)
class Job:
    """A scheduled unit of work: a request (no subscription yet) or one delivery retry."""

    job_id: str
    request: dict[str, Any]
    subscription_id: str | None
    attempt: int
    trimmed: bool = False

    def to_json(self) -> str:
        """Serialise for the jobs hash."""
        return json.dumps(
            {
                "request": self.request,
                "subscription_id": self.subscription_id,
                "attempt": self.attempt,
                "trimmed": self.trimmed,
            }
        )

    @classmethod
    def from_json(cls, job_id: str, raw: str) -> Job:
        """Parse a job stored by :meth:`to_json`."""
        data = json.loads(raw)
        return cls(
            job_id=job_id,
            request=data["request"],
            subscription_id=data["subscription_id"],
            attempt=int(data["attempt"]),
            trimmed=bool(data.get("trimmed", False)),
        )


class Schedule:
    """Jobs due at a time: a Redis sorted set (score = due Unix time) plus a hash of jobs.

    Claiming is at-least-once: :meth:`claim_due` pushes each claimed job's score a
    lease into the future instead of removing it, so a worker that dies mid-job
    leaves it to be claimed again; :meth:`complete` removes it for good.
    """

    def __init__(self, redis: Redis, prefix: str, name: str = "push") -> None:
        self._redis = redis
        self._zset = f"{prefix}{name}:schedule"
        self._hash = f"{prefix}{name}:jobs"
        self._claim = redis.register_script(_CLAIM_DUE)

    async def add(self, job: Job, due: float) -> None:
        """Schedule ``job`` at Unix time ``due`` (replacing a job with the same id)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._hash, job.job_id, job.to_json())
            pipe.zadd(self._zset, {job.job_id: due})
            await pipe.execute()

    async def claim_due(self, now: float, lease: float, limit: int) -> list[Job]:
        """Claim up to ``limit`` jobs due at ``now``; they reappear after ``lease`` seconds."""
        flat = await self._claim(keys=[self._zset, self._hash], args=[now, now + lease, limit])
        jobs: list[Job] = []
        for i in range(0, len(flat), 2):
            job_id = _text(flat[i])
            raw = _text(flat[i + 1])
            if not raw:
                await self._redis.zrem(self._zset, job_id)
                continue
            jobs.append(Job.from_json(job_id, raw))
        return jobs

    async def complete(self, job_id: str) -> None:
        """Remove a finished job."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._zset, job_id)
            pipe.hdel(self._hash, job_id)
            await pipe.execute()

    async def pending(self) -> int:
        """Number of scheduled jobs (claimed ones included)."""
        return int(await self._redis.zcard(self._zset))


class Claim(StrEnum):
    """Result of :meth:`DeliveryLog.claim`."""

    CLAIMED = "claimed"
    SENT = "sent"
    BUSY = "busy"


class DeliveryLog:
    """Which (request, subscription) pairs were delivered: the idempotency record.

    A sender first claims the pair (``SET NX`` of ``"inflight"`` with a lease), then
    marks it ``"sent"`` after a 2xx or releases it on failure. A redelivered request
    finds ``"sent"`` and sends nothing; a concurrent one finds ``"inflight"`` and
    backs off. A worker dying between the push service's 2xx and :meth:`mark_sent`
    leaves an expiring lease, after which the pair may be sent once more: push is
    at-least-once per subscription, and the RFC 8030 Topic header makes a repeat
    replace the first copy on the device when it is still pending.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, request_id: str, subscription_id: str) -> str:
        return f"{self._prefix}push:sent:{request_id}:{subscription_id}"

    async def claim(self, request_id: str, subscription_id: str, lease_seconds: float) -> Claim:
        """Try to become the one sender of this pair."""
        key = self._key(request_id, subscription_id)
        if await self._redis.set(key, "inflight", nx=True, px=int(lease_seconds * 1000)):
            return Claim.CLAIMED
        value = _text(await self._redis.get(key))
        return Claim.SENT if value == "sent" else Claim.BUSY

    async def mark_sent(self, request_id: str, subscription_id: str, ttl_seconds: int) -> None:
        """Record a delivery, remembered for ``ttl_seconds``."""
        await self._redis.set(self._key(request_id, subscription_id), "sent", ex=ttl_seconds)

    async def release(self, request_id: str, subscription_id: str) -> None:
        """Drop a claim after a failed attempt so a retry can claim it again."""
        await self._redis.delete(self._key(request_id, subscription_id))

    async def is_sent(self, request_id: str, subscription_id: str) -> bool:
        """True if the pair was delivered."""
        return _text(await self._redis.get(self._key(request_id, subscription_id))) == "sent"


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)
