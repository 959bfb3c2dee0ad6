"""ReplayPacer: slow start and AIMD on the live path's latency and backlog, and the
send schedule."""

from __future__ import annotations

import asyncio
import contextlib
from types import SimpleNamespace

import pytest

from clarion_devstack.replay import feedback
from clarion_devstack.replay.feedback import recent_latency_ms
from clarion_devstack.replay.pacing import PaceLimits, PipelineSignal, ReplayPacer

LIMITS = PaceLimits(
    target_latency_ms=500,
    max_backlog=1000,
    initial_rate=100,
    min_rate=10,
    max_rate=1000,
    increase=2.0,
    decrease=0.5,
    step=10,
)


def test_after_the_first_overload_the_rate_grows_by_steps() -> None:
    pacer = ReplayPacer(LIMITS)
    pacer.observe(PipelineSignal(latency_ms=80))  # slow start: 200
    pacer.observe(PipelineSignal(latency_ms=900))  # 100, slow start ends
    rates = [pacer.observe(PipelineSignal(latency_ms=80)) for _ in range(3)]
    assert rates == [110, 120, 130]


def test_rate_grows_while_the_pipeline_keeps_up_up_to_the_maximum() -> None:
    pacer = ReplayPacer(LIMITS)
    rates = [pacer.observe(PipelineSignal(latency_ms=80, backlog=3)) for _ in range(5)]
    assert rates == [200, 400, 800, 1000, 1000]


@pytest.mark.parametrize(
    "signal",
    [
        PipelineSignal(latency_ms=900, backlog=0),
        PipelineSignal(latency_ms=100, backlog=5000),
        PipelineSignal(latency_ms=900),
        PipelineSignal(backlog=5000),
    ],
)
def test_either_bound_exceeded_cuts_the_rate_down_to_the_minimum(signal: PipelineSignal) -> None:
    pacer = ReplayPacer(LIMITS)
    rates = [pacer.observe(signal) for _ in range(5)]
    assert rates == [50, 25, 12.5, 10, 10]


def test_nothing_measured_keeps_the_rate() -> None:
    pacer = ReplayPacer(LIMITS)
    pacer.observe(PipelineSignal(latency_ms=10))
    assert pacer.observe(PipelineSignal()) == 200
    # One known measurement within its bound is enough to grow.
    assert pacer.observe(PipelineSignal(backlog=0)) == 400


def test_a_backlog_building_up_brings_the_rate_back_under_what_the_pipeline_sustains() -> None:
    # A pipeline delivering 300 events per step: the backlog grows by what is sent
    # above that. The rate must end up oscillating around the capacity with the
    # backlog bounded, not grow without end.
    pacer = ReplayPacer(LIMITS)
    capacity, backlog, peak = 300.0, 0.0, 0.0
    rates = []
    for _ in range(60):
        backlog = max(0.0, backlog + pacer.rate - capacity)
        peak = max(peak, backlog)
        rates.append(pacer.observe(PipelineSignal(backlog=int(backlog))))
    assert peak < 3 * LIMITS.max_backlog
    tail = rates[-20:]
    assert min(tail) < capacity < max(tail)
    assert sum(tail) / len(tail) < 2 * capacity


def test_schedule_spaces_batches_by_the_rate_without_saving_idle_time() -> None:
    pacer = ReplayPacer(LIMITS)  # 100 events/s
    assert pacer.schedule(50, now=10.0) == 0.0
    assert pacer.schedule(50, now=10.1) == pytest.approx(0.4)  # due at 10.5
    assert pacer.schedule(50, now=10.5) == pytest.approx(0.5)  # due at 11.0
    # Idle for long (a slow answer): the next batch goes now, not a burst of them.
    assert pacer.schedule(50, now=20.0) == 0.0
    assert pacer.schedule(50, now=20.0) == pytest.approx(0.5)
    pacer.observe(PipelineSignal(latency_ms=1))  # 200 events/s from the next batch on
    assert pacer.schedule(50, now=20.5) == pytest.approx(0.5)  # due at 21.0
    assert pacer.schedule(50, now=21.0) == pytest.approx(0.25)


def test_describe_shows_the_pace_and_what_was_measured() -> None:
    pacer = ReplayPacer(LIMITS)
    assert pacer.describe() == "pace 100/s"
    pacer.observe(PipelineSignal(latency_ms=120.4, backlog=234))
    assert pacer.describe() == "pace 200/s, live p50 120 ms, backlog 234"


def test_limits_are_checked() -> None:
    with pytest.raises(ValueError, match="min_rate"):
        PaceLimits(initial_rate=5, min_rate=10)
    with pytest.raises(ValueError, match="decrease"):
        PaceLimits(decrease=1.0)
    with pytest.raises(ValueError, match="step"):
        PaceLimits(step=0)


def test_recent_latency_is_the_median_of_the_new_samples() -> None:
    samples = [5000.0, 4000.0, 10.0, 30.0, 20.0]
    assert recent_latency_ms(samples, since=2) == 20.0
    assert recent_latency_ms(samples, since=5) is None


async def test_the_feed_measures_new_latencies_and_the_live_groups_lag(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    asked: list[tuple[str, tuple[str, ...]]] = []

    async def lag(bootstrap: str, prefix: str, only: tuple[str, ...]) -> dict[str, int]:
        asked.append((bootstrap, tuple(only)))
        return {"aggregator": 40, "realtime-gateway": 2}

    monkeypatch.setattr(feedback, "pipeline_lag", lag)
    observer = SimpleNamespace(latencies_ms=[9000.0])  # seen before the feed started
    observed = asyncio.Event()

    class Pacer(ReplayPacer):
        def observe(self, signal: PipelineSignal) -> float:
            observed.set()
            return super().observe(signal)

    pacer = Pacer(LIMITS)
    task = asyncio.create_task(
        feedback.feed_pacer(pacer, observer, "broker:9092", interval=0.001)  # type: ignore[arg-type]
    )
    await asyncio.sleep(0)  # the feed starts and notes what was seen before it
    observer.latencies_ms += [100.0, 300.0, 200.0]
    await asyncio.wait_for(observed.wait(), timeout=30)
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task
    assert (pacer.last.latency_ms, pacer.last.backlog) == (200.0, 42)
    assert asked[0] == ("broker:9092", ("aggregator", "realtime-gateway"))
    assert pacer.rate > LIMITS.initial_rate  # 200 ms and 42 records: within bounds
