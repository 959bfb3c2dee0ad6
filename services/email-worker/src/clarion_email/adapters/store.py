"""Redis state of email-worker: profiles, preferences, the send log and the schedule.

Key layout (every key starts with ``settings.redis_prefix``):

``email:profile:<user_id>`` / ``email:prefs:<user_id>``
    :class:`UserProfile` / :class:`Preferences` JSON, materialised from the
    compacted ``clarion.user-profiles.v1`` and ``clarion.preferences.v1``.
``email:sent:<request_id>``
    the send log (see :class:`SendLog`).
``email:schedule`` / ``email:jobs``
    requests deferred by ``not_before``, waiting for a retry or for a domain's
    rate limit: sorted set of job ids by due Unix time, hash of :class:`Job` JSON
    (a :class:`clarion_kit.scheduling.JobSchedule`, see :func:`job_schedule`).

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

from dataclasses import dataclass
from enum import StrEnum

from redis.asyncio import Redis

from clarion_contracts.v1 import Preferences, UserProfile
from clarion_kit.redis import decode_text
from clarion_kit.scheduling import JobSchedule, RequestJob


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
        value = decode_text(await self._redis.get(key))
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
        return decode_text(await self._redis.get(self._key(request_id)))


@dataclass(frozen=True)
class Job(RequestJob):
    """A scheduled email request: ``attempt`` is the SMTP attempt it will make (1-based).

    ``profile_misses`` counts how often the recipient's profile was not found yet.
    Stored as ``{"request": {...}, "attempt": n, "profile_misses": n}``.
    """

    attempt: int = 1
    profile_misses: int = 0


def job_schedule(redis: Redis, prefix: str) -> JobSchedule[Job]:
    """The schedule of email jobs: keys ``<prefix>email:schedule`` and ``<prefix>email:jobs``."""
    return JobSchedule(redis, f"{prefix}email", Job.from_json)
