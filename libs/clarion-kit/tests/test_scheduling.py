"""The Redis job schedule (against the devstack's Redis) and the schedule poller."""

from __future__ import annotations

import asyncio
import json
from dataclasses import dataclass
from typing import Any

import pytest

from clarion_kit.scheduling import JobSchedule, RequestJob, SchedulePoller


@dataclass(frozen=True)
class Job(RequestJob):
    subscription_id: str | None
    attempt: int = 1
    trimmed: bool = False


# --- RequestJob -----------------------------------------------------------------------


def test_job_json_holds_every_field_but_the_id_in_field_order() -> None:
    job = Job("j1", {"request_id": "r1"}, "s1", 2)
    assert job.to_json() == (
        '{"request": {"request_id": "r1"}, "subscription_id": "s1", "attempt": 2, "trimmed": false}'
    )
    assert Job.from_json("j1", job.to_json()) == job


def test_job_from_json_takes_defaults_and_ignores_unknown_members() -> None:
    raw = json.dumps({"request": {}, "subscription_id": None, "added_later": 1})
    assert Job.from_json("j2", raw) == Job("j2", {}, None, attempt=1, trimmed=False)


def test_job_from_json_without_a_required_field_fails() -> None:
    with pytest.raises(TypeError):
        Job.from_json("j3", json.dumps({"request": {}}))


# --- JobSchedule (integration) --------------------------------------------------------


@pytest.fixture
def schedule(redis: Any, redis_prefix: str) -> JobSchedule[Job]:
    return JobSchedule(redis, f"{redis_prefix}svc", Job.from_json)


def job(job_id: str, attempt: int = 1) -> Job:
    return Job(job_id, {"request_id": job_id}, None, attempt)


@pytest.mark.integration
async def test_keys_and_formats(schedule: JobSchedule[Job], redis: Any, redis_prefix: str) -> None:
    await schedule.add(job("a"), due=100.5)
    assert await redis.zrange(f"{redis_prefix}svc:schedule", 0, -1, withscores=True) == [
        (b"a", 100.5)
    ]
    assert await redis.hget(f"{redis_prefix}svc:jobs", "a") == job("a").to_json().encode()
    assert await schedule.due_time("a") == 100.5
    assert await schedule.due_time("missing") is None


@pytest.mark.integration
async def test_claim_due_takes_due_jobs_earliest_first_up_to_the_limit(
    schedule: JobSchedule[Job],
) -> None:
    await schedule.add(job("late"), due=30)
    await schedule.add(job("first"), due=10)
    await schedule.add(job("second"), due=20)
    await schedule.add(job("future"), due=1000)
    claimed = await schedule.claim_due(now=50, lease=60, limit=2)
    assert [j.job_id for j in claimed] == ["first", "second"]
    assert [j.job_id for j in await schedule.claim_due(now=50, lease=60, limit=10)] == ["late"]
    assert await schedule.pending() == 4


@pytest.mark.integration
async def test_a_claimed_job_reappears_after_its_lease_until_completed(
    schedule: JobSchedule[Job],
) -> None:
    await schedule.add(job("a", attempt=3), due=10)
    (claimed,) = await schedule.claim_due(now=10, lease=60, limit=10)
    assert claimed == job("a", attempt=3)
    assert await schedule.due_time("a") == 70
    assert await schedule.claim_due(now=69, lease=60, limit=10) == []
    assert [j.job_id for j in await schedule.claim_due(now=70, lease=60, limit=10)] == ["a"]
    await schedule.complete("a")
    assert await schedule.claim_due(now=1000, lease=60, limit=10) == []
    assert await schedule.pending() == 0
    await schedule.complete("a")  # nothing left to remove: no error


@pytest.mark.integration
async def test_adding_a_scheduled_id_replaces_the_job(schedule: JobSchedule[Job]) -> None:
    await schedule.add(job("a", attempt=1), due=10)
    await schedule.add(job("a", attempt=2), due=5)
    assert await schedule.pending() == 1
    assert await schedule.claim_due(now=5, lease=1, limit=10) == [job("a", attempt=2)]


@pytest.mark.integration
async def test_a_scheduled_id_without_its_job_is_dropped(
    schedule: JobSchedule[Job], redis: Any, redis_prefix: str
) -> None:
    await schedule.add(job("lost"), due=1)
    await schedule.add(job("kept"), due=2)
    await redis.hdel(f"{redis_prefix}svc:jobs", "lost")
    assert [j.job_id for j in await schedule.claim_due(now=5, lease=60, limit=10)] == ["kept"]
    assert await schedule.due_time("lost") is None


# --- SchedulePoller -------------------------------------------------------------------


class FakeLog:
    def __init__(self) -> None:
        self.errors: list[tuple[str, dict[str, Any]]] = []

    def error(self, event: str, **fields: Any) -> None:
        self.errors.append((event, fields))


class Rounds:
    """A ``run_due`` answering the given claim counts (an exception is raised), then 0."""

    def __init__(self, *answers: int | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    async def __call__(self) -> int:
        self.calls += 1
        if not self.answers:
            return 0
        answer = self.answers.pop(0)
        if isinstance(answer, Exception):
            raise answer
        return answer


async def test_poller_goes_on_at_once_while_rounds_are_full_then_waits(wait_until: Any) -> None:
    rounds = Rounds(10, 10, 3)
    poller = SchedulePoller(rounds, interval=30.0, name="t-poller", busy_at=10)
    poller.start()
    await wait_until(lambda: rounds.calls >= 3, timeout=5.0, interval=0.005)
    await asyncio.sleep(0.05)
    # Two full rounds, then a light one after which it waits the (long) interval.
    assert rounds.calls == 3
    poller.request_stop()
    assert await poller.join(timeout=1.0)


async def test_poller_polls_every_interval_when_nothing_is_due() -> None:
    rounds = Rounds()
    poller = SchedulePoller(rounds, interval=0.02, name="t-poller")
    poller.start()
    await asyncio.sleep(0.2)
    poller.request_stop()
    assert await poller.join(timeout=1.0)
    # One round per interval: about ten, never more than eleven.
    assert 2 <= rounds.calls <= 11


async def test_a_failed_round_is_logged_and_polling_goes_on(wait_until: Any) -> None:
    log = FakeLog()
    rounds = Rounds(ConnectionError("redis down"), 1)
    poller = SchedulePoller(
        rounds, interval=0.01, name="t-poller", log=log, failure_event="svc.poll_failed"
    )
    poller.start()
    await wait_until(lambda: rounds.calls >= 3, timeout=5.0, interval=0.005)
    poller.request_stop()
    assert await poller.join(timeout=1.0)
    assert log.errors == [("svc.poll_failed", {"error": "ConnectionError('redis down')"})]


async def test_join_cancels_a_round_that_outlives_the_timeout() -> None:
    started = asyncio.Event()
    cancelled = asyncio.Event()

    async def stuck() -> int:
        started.set()
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            cancelled.set()
            raise
        return 0

    poller = SchedulePoller(stuck, interval=0.01, name="t-poller")
    poller.start()
    await started.wait()
    poller.request_stop()
    assert not await poller.join(timeout=0.05)
    assert cancelled.is_set()


async def test_join_before_start_returns_at_once() -> None:
    assert await SchedulePoller(Rounds(), interval=1.0, name="t-poller").join(timeout=0.01)


async def test_run_ends_after_the_current_round_once_stop_is_requested() -> None:
    poller: SchedulePoller

    async def once() -> int:
        poller.request_stop()
        return 100

    poller = SchedulePoller(once, interval=30.0, name="t-poller", busy_at=1)
    await asyncio.wait_for(poller.run(), timeout=1.0)
