"""Deferred work on Redis: jobs due at a time, claimed with a lease, and the loop running them.

A worker that must not wait on its Kafka partition (a request with ``not_before``
in the future, a retry after a backoff, a send held back by a rate limit) writes a
job into a :class:`JobSchedule` and returns; a :class:`SchedulePoller` claims the
jobs that are due and runs them.

Key layout under a namespace ``<ns>`` (e.g. ``clarion:email``):

``<ns>:schedule``
    sorted set of job ids scored by the Unix time (seconds) the job is due.
``<ns>:jobs``
    hash of job id → the job's JSON (whatever the service's job type writes).

Claiming is at-least-once: :meth:`JobSchedule.claim_due` moves each claimed job's
score a lease into the future instead of removing it, so a worker that dies
mid-job leaves the job to be claimed again when the lease ends, and
:meth:`JobSchedule.complete` removes it for good. A job id is unique within the
schedule: adding a job with an id already scheduled replaces it.

Usage (``Job`` a :class:`RequestJob` dataclass)::

    schedule = JobSchedule(redis, settings.redis_key("email"), Job.from_json)
    await schedule.add(job, due=not_before.timestamp())
    poller = SchedulePoller(run_due, interval=0.5, name="email-schedule-poller",
                            log=log, failure_event="email.poll_failed")
    poller.start()
    ...
    poller.request_stop()
    await poller.join(timeout=30.0)
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, fields
from typing import Any, Generic, Protocol, Self, TypeVar

import redis.asyncio as aioredis
import structlog

from clarion_kit.logging import get_logger
from clarion_kit.redis import decode_text

# KEYS[1] schedule zset, KEYS[2] jobs hash; ARGV[1] now, ARGV[2] lease end, ARGV[3] limit.
# Returns [job_id, job_json, ...]; job_json is '' when the hash lost the job.
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


class ScheduledJob(Protocol):
    """What :class:`JobSchedule` needs of a job: its id and its JSON form."""

    @property
    def job_id(self) -> str:
        """Unique within the schedule; adding a job with a scheduled id replaces that job."""

    def to_json(self) -> str:
        """The job as the JSON text stored in the jobs hash."""


JobT = TypeVar("JobT", bound=ScheduledJob)


@dataclass(frozen=True)
class RequestJob:
    """A scheduled job carrying one request: the base of a service's job dataclass.

    Subclasses are frozen dataclasses adding their own fields (``attempt``...). The
    JSON form holds every field but ``job_id`` (the job's key in the schedule), in
    field order: ``{"request": {...}, <the subclass's fields>}``.

    Attributes:
        job_id: unique within the schedule.
        request: the request as its contract's JSON object.
    """

    job_id: str
    request: dict[str, Any]

    def to_json(self) -> str:
        """The JSON text stored in the jobs hash."""
        return json.dumps(
            {f.name: getattr(self, f.name) for f in fields(self) if f.name != "job_id"}
        )

    @classmethod
    def from_json(cls, job_id: str, raw: str) -> Self:
        """Parse a job stored by :meth:`to_json` (members that are no field are ignored).

        Raises:
            json.JSONDecodeError: ``raw`` is not JSON.
            TypeError: a field without a default is missing.
        """
        data = json.loads(raw)
        names = {f.name for f in fields(cls)} - {"job_id"}
        return cls(job_id=job_id, **{k: v for k, v in data.items() if k in names})


class JobSchedule(Generic[JobT]):
    """Jobs due at a time: a Redis sorted set (score = due Unix time) plus a hash of jobs.

    Args:
        redis: an asyncio Redis client (``bytes`` or ``str`` replies).
        namespace: key prefix, e.g. ``"clarion:push"``; the keys are
            ``<namespace>:schedule`` and ``<namespace>:jobs`` (module docstring).
        decode: ``(job_id, job_json) -> job``, the inverse of the job's ``to_json``.
    """

    def __init__(
        self,
        redis: aioredis.Redis,
        namespace: str,
        decode: Callable[[str, str], JobT],
    ) -> None:
        self._redis = redis
        self._zset = f"{namespace}:schedule"
        self._hash = f"{namespace}:jobs"
        self._decode = decode
        self._claim: Any = redis.register_script(_CLAIM_DUE)

    async def add(self, job: JobT, due: float) -> None:
        """Schedule ``job`` at Unix time ``due`` (seconds), replacing a job with the same id."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.hset(self._hash, job.job_id, job.to_json())
            pipe.zadd(self._zset, {job.job_id: due})
            await pipe.execute()

    async def claim_due(self, now: float, lease: float, limit: int) -> list[JobT]:
        """Claim up to ``limit`` jobs due at Unix time ``now``, earliest first.

        Each claimed job is rescheduled at ``now + lease`` (seconds) in the same
        atomic step, so it reappears unless :meth:`complete` removes it first. A
        scheduled id whose job JSON is missing is dropped from the schedule.

        Raises:
            redis.exceptions.RedisError: the claim failed (no job was claimed).
            Exception: whatever ``decode`` raises for a malformed job.
        """
        flat = await self._claim(keys=[self._zset, self._hash], args=[now, now + lease, limit])
        jobs: list[JobT] = []
        for i in range(0, len(flat), 2):
            job_id, raw = decode_text(flat[i]), decode_text(flat[i + 1])
            if not raw:
                await self._redis.zrem(self._zset, job_id)
                continue
            jobs.append(self._decode(job_id, raw))
        return jobs

    async def complete(self, job_id: str) -> None:
        """Remove a finished job (nothing happens if it is not scheduled)."""
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.zrem(self._zset, job_id)
            pipe.hdel(self._hash, job_id)
            await pipe.execute()

    async def due_time(self, job_id: str) -> float | None:
        """When ``job_id`` is due (Unix time, seconds), or None if it is not scheduled."""
        score = await self._redis.zscore(self._zset, job_id)
        return None if score is None else float(score)

    async def pending(self) -> int:
        """Number of scheduled jobs, claimed ones included."""
        return int(await self._redis.zcard(self._zset))


class SchedulePoller:
    """Runs ``run_due`` in a background task until asked to stop.

    After a round that claimed fewer than ``busy_at`` jobs the loop waits
    ``interval`` seconds (or until :meth:`request_stop`); after a fuller round it
    goes on at once, since more jobs are probably due. A round that raises is
    logged as ``failure_event`` and counts as an empty one: the jobs stay
    scheduled and are claimed again when their lease ends.

    Args:
        run_due: claims and runs the due jobs once; returns how many it claimed.
        interval: seconds to wait after a round below ``busy_at`` (> 0).
        name: name of the asyncio task.
        log: the logger of failed rounds (the service's, so lines keep its name).
        failure_event: the event of that log line, e.g. ``"push.poll_failed"``.
        busy_at: claimed jobs (>= 1) at which the next round starts without waiting.
    """

    def __init__(
        self,
        run_due: Callable[[], Awaitable[int]],
        *,
        interval: float,
        name: str,
        log: structlog.stdlib.BoundLogger | None = None,
        failure_event: str = "schedule.poll_failed",
        busy_at: int = 1,
    ) -> None:
        self._run_due = run_due
        self._interval = interval
        self._name = name
        self._log = log or get_logger(__name__)
        self._failure_event = failure_event
        self._busy_at = busy_at
        self._stopping = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop as a task of the running event loop."""
        self._task = asyncio.create_task(self.run(), name=self._name)

    def request_stop(self) -> None:
        """Make the loop end once its current round is done (and not wait any more)."""
        self._stopping.set()

    async def join(self, timeout: float) -> bool:
        """Wait up to ``timeout`` seconds for the loop to end; cancel it after that.

        Returns:
            False when the loop was still running at ``timeout`` (it was cancelled,
            and a job it had claimed is claimed again after its lease), else True.
        """
        if self._task is None:
            return True
        with contextlib.suppress(asyncio.CancelledError):
            try:
                await asyncio.wait_for(self._task, timeout=timeout)
            except TimeoutError:
                return False
        return True

    async def run(self) -> None:
        """The loop itself, until :meth:`request_stop` (what :meth:`start` runs)."""
        while not self._stopping.is_set():
            try:
                claimed = await self._run_due()
            except Exception as exc:  # a Redis hiccup: the jobs stay scheduled
                self._log.error(self._failure_event, error=repr(exc))
                claimed = 0
            if claimed < self._busy_at:
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(self._stopping.wait(), timeout=self._interval)
