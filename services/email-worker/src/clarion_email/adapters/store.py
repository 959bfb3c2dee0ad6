"""Redis state of email-worker: profiles, preferences, the send log and the schedule.

Key layout (every key starts with ``settings.redis_prefix``):

``email:profile:<user_id>`` / ``email:prefs:<user_id>``
    :class:`UserProfile` / :class:`Preferences` JSON, materialised from the
    compacted ``clarion.user-profiles.v1`` and ``clarion.preferences.v1``.
``email:sent:<request_id>``
    the send log (see :class:`SendLog`).
``email:schedule`` / ``email:jobs``
    requests deferred by ``not_before``, waiting for a retry or for a domain's
    rate limit: sorted set of job ids by due Unix time, hash of job JSON.

Why Redis for the send log rather than PostgreSQL: the log is a short-lived
idempotency record read and written once per email with an atomic ``SET NX``
claim and a TTL, which Redis gives directly; email-worker needs Redis anyway
for the schedule; and PostgreSQL would not close the one window that matters
(a crash between the SMTP server's acceptance and the log write exists with
any store, since no SMTP server takes part in our transaction). Production
Redis should persist (AOF ``everysec``); losing it forgets the log and can let
a redelivered request be sent again.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from redis.asyncio import Redis

from clarion_contracts.v1 import Preferences, UserProfile


def _text(value: Any) -> str:
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


class ProfileStore:
    """Profiles and preferences per user, last ``updated_at`` wins."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    async def _apply(self, key: str, value: UserProfile | Preferences) -> bool:
        raw = await self._redis.get(key)
        if raw is not None:
            current = type(value).model_validate_json(raw)
            if current.updated_at > value.updated_at:
                return False
        await self._redis.set(key, value.model_dump_json())
        return True

    async def apply_profile(self, profile: UserProfile) -> bool:
        """Store ``profile`` unless a newer one is stored; True if stored."""
        return await self._apply(f"{self._prefix}email:profile:{profile.user_id}", profile)

    async def apply_preferences(self, preferences: Preferences) -> bool:
        """Store ``preferences`` unless newer ones are stored; True if stored."""
        return await self._apply(f"{self._prefix}email:prefs:{preferences.user_id}", preferences)

    async def delete(self, kind: str, user_id: str) -> None:
        """Forget a user's ``profile`` or ``prefs`` (a null record on the compacted topic)."""
        await self._redis.delete(f"{self._prefix}email:{kind}:{user_id}")

    async def profile(self, user_id: str) -> UserProfile | None:
        """The stored profile, or None."""
        raw = await self._redis.get(f"{self._prefix}email:profile:{user_id}")
        return None if raw is None else UserProfile.model_validate_json(raw)

    async def preferences(self, user_id: str) -> Preferences | None:
        """The stored preferences, or None (category defaults apply)."""
        raw = await self._redis.get(f"{self._prefix}email:prefs:{user_id}")
        return None if raw is None else Preferences.model_validate_json(raw)


class SendState(StrEnum):
    """What the send log says about a request id."""

    CLAIMED = "claimed"
    """This worker now owns the request and may send it."""
    SENT = "sent"
    """The SMTP server accepted it before: send nothing."""
    FAILED = "failed"
    """It failed permanently before: send nothing."""
    BUSY = "busy"
    """Another worker (or one that died) holds the claim until its lease ends."""


class SendLog:
    """The send log: one Redis key per email request id.

    Protocol for one request: :meth:`claim` (``SET NX`` of ``sending`` with a
    lease longer than one SMTP transaction) → SMTP → :meth:`mark_sent` (or
    :meth:`mark_failed` for a permanent failure, or :meth:`release` before a
    retry). The exact guarantee is in ``docs/email.md``: at most one accepted
    SMTP transaction per request id, except when the worker dies (or Redis
    loses the write) between the server's ``250`` to ``DATA`` and
    :meth:`mark_sent`; the claim then expires and a redelivery sends the email
    once more, with the same ``Message-ID``.
    """

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._prefix = prefix

    def _key(self, request_id: str) -> str:
        return f"{self._prefix}email:sent:{request_id}"

    async def claim(self, request_id: str, lease_seconds: float) -> SendState:
        """Try to become the one sender of ``request_id`` for ``lease_seconds``."""
        key = self._key(request_id)
        if await self._redis.set(key, "sending", nx=True, px=int(lease_seconds * 1000)):
            return SendState.CLAIMED
        value = _text(await self._redis.get(key))
        if value == "sent":
            return SendState.SENT
        if value == "failed":
            return SendState.FAILED
        # An empty value: the lease expired between SET NX and GET, so try once more.
        if not value and await self._redis.set(
            key, "sending", nx=True, px=int(lease_seconds * 1000)
        ):
            return SendState.CLAIMED
        return SendState.BUSY

    async def lease_left(self, request_id: str) -> float:
        """Seconds until a held claim expires (0 when none)."""
        ms = await self._redis.pttl(self._key(request_id))
        return max(0.0, ms / 1000) if ms and ms > 0 else 0.0

    async def mark_sent(self, request_id: str, ttl_seconds: int) -> None:
        """Record that the SMTP server accepted the email."""
        await self._redis.set(self._key(request_id), "sent", ex=ttl_seconds)

    async def mark_failed(self, request_id: str, ttl_seconds: int) -> None:
        """Record a permanent failure, so a redelivery does not try again."""
        await self._redis.set(self._key(request_id), "failed", ex=ttl_seconds)

    async def release(self, request_id: str) -> None:
        """Drop the claim (before a scheduled retry)."""
        await self._redis.delete(self._key(request_id))

    async def state(self, request_id: str) -> str:
        """The raw log value (``""``, ``"sending"``, ``"sent"``, ``"failed"``)."""
        return _text(await self._redis.get(self._key(request_id)))


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
    """A scheduled email request: ``attempt`` is the SMTP attempt it will make (1-based).

    ``profile_misses`` counts how often the recipient's profile was not found yet.
    """

    job_id: str
    request: dict[str, Any]
    attempt: int = 1
    profile_misses: int = 0

    def to_json(self) -> str:
        """Serialise for the jobs hash."""
        return json.dumps(
            {
                "request": self.request,
                "attempt": self.attempt,
                "profile_misses": self.profile_misses,
            }
        )

    @classmethod
    def from_json(cls, job_id: str, raw: str) -> Job:
        """Parse a job stored by :meth:`to_json`."""
        data = json.loads(raw)
        return cls(
            job_id=job_id,
            request=data["request"],
            attempt=int(data.get("attempt", 1)),
            profile_misses=int(data.get("profile_misses", 0)),
        )


class Schedule:
    """Jobs due at a time (Redis sorted set + hash), claimed with a lease (at-least-once)."""

    def __init__(self, redis: Redis, prefix: str) -> None:
        self._redis = redis
        self._zset = f"{prefix}email:schedule"
        self._hash = f"{prefix}email:jobs"
        self._claim = redis.register_script(_CLAIM_DUE)

    async def add(self, job: Job, due: float) -> None:
        """Schedule ``job`` at Unix time ``due``, replacing a job with the same id."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._hash, job.job_id, job.to_json())
            pipe.zadd(self._zset, {job.job_id: due})
            await pipe.execute()

    async def claim_due(self, now: float, lease: float, limit: int) -> list[Job]:
        """Claim up to ``limit`` due jobs; unfinished ones reappear after ``lease`` seconds."""
        flat = await self._claim(keys=[self._zset, self._hash], args=[now, now + lease, limit])
        jobs: list[Job] = []
        for i in range(0, len(flat), 2):
            job_id, raw = _text(flat[i]), _text(flat[i + 1])
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

    async def due_time(self, job_id: str) -> float | None:
        """When ``job_id`` is due (Unix time), or None if not scheduled."""
        score = await self._redis.zscore(self._zset, job_id)
        return None if score is None else float(score)
