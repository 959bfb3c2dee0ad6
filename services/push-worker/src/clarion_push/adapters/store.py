"""Redis state of push-worker: subscriptions, scheduled deliveries and the delivery log.

Key layout (every key starts with ``settings.redis_prefix``):

``push:sub:<subscription_id>``
    the :class:`PushSubscription` JSON, materialised from ``clarion.push-subscriptions.v1``.
``push:user:<user_id>``
    set of that user's subscription ids.
``push:schedule`` / ``push:jobs``
    sorted set of job ids scored by due Unix time / hash of job id → job JSON:
    requests deferred by ``not_before`` and retries waiting for their backoff
    (a :class:`clarion_kit.scheduling.JobSchedule`, see :func:`job_schedule`).
``push:sent:<request_id>:<subscription_id>``
    ``"inflight"`` while one worker sends (a lease), ``"sent"`` once the push
    service answered 2xx; a redelivered request skips a pair marked ``sent``.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from clarion_contracts.v1 import PushSubscription
from clarion_kit.redis import decode_text
from clarion_kit.scheduling import JobSchedule, RequestJob


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

    async def users_with_subscriptions(self, user_ids: Iterable[str]) -> set[str]:
        """The users among ``user_ids`` with at least one active subscription.

        One pipelined ``EXISTS`` per user, one round trip for the whole set: most
        recipients of push requests are online elsewhere or never subscribed, and
        telling them apart must cost next to nothing.
        """
        users = list(dict.fromkeys(user_ids))
        if not users:
            return set()
        async with self._redis.pipeline(transaction=False) as pipe:
            for user in users:
                pipe.exists(self._user_key(user))
            found = await pipe.execute()
        return {user for user, exists in zip(users, found, strict=True) if exists}

    async def for_user(self, user_id: str) -> list[PushSubscription]:
        """Every active subscription of ``user_id`` (sorted by subscription id)."""
        ids = sorted(decode_text(i) for i in await self._redis.smembers(self._user_key(user_id)))
        if not ids:
            return []
        raws = await self._redis.mget([self._sub_key(i) for i in ids])
        return [PushSubscription.model_validate_json(r) for r in raws if r is not None]


@dataclass(frozen=True)
class Job(RequestJob):
    """A scheduled unit of work: a request (no subscription yet) or one delivery retry.

    Stored as ``{"request": {...}, "subscription_id": ..., "attempt": n, "trimmed": b}``.
    """

    subscription_id: str | None
    attempt: int
    trimmed: bool = False


def job_schedule(redis: Redis, prefix: str) -> JobSchedule[Job]:
    """The schedule of push jobs: keys ``<prefix>push:schedule`` and ``<prefix>push:jobs``.

    Claiming is at-least-once: a claimed job reappears after its lease unless completed.
    """
    return JobSchedule(redis, f"{prefix}push", Job.from_json)


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
        value = decode_text(await self._redis.get(key))
        return Claim.SENT if value == "sent" else Claim.BUSY

    async def mark_sent(self, request_id: str, subscription_id: str, ttl_seconds: int) -> None:
        """Record a delivery, remembered for ``ttl_seconds``."""
        await self._redis.set(self._key(request_id, subscription_id), "sent", ex=ttl_seconds)

    async def release(self, request_id: str, subscription_id: str) -> None:
        """Drop a claim after a failed attempt so a retry can claim it again."""
        await self._redis.delete(self._key(request_id, subscription_id))

    async def is_sent(self, request_id: str, subscription_id: str) -> bool:
        """True if the pair was delivered."""
        return decode_text(await self._redis.get(self._key(request_id, subscription_id))) == "sent"
