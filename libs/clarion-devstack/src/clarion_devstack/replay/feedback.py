"""Feeds a :class:`~clarion_devstack.replay.pacing.ReplayPacer` from the running pipeline.

Two measurements of the live path (domain event -> aggregator -> realtime-gateway
frame), taken every ``interval`` seconds while a replay runs:

* the p50 of the accepted -> frame latencies a
  :class:`~clarion_devstack.observer.LatencyObserver` recorded since the last step;
* the consumer lag (records) of the aggregator's and the realtime-gateway's
  consumer groups (:func:`clarion_devstack.drain.pipeline_lag`).
"""

from __future__ import annotations

import asyncio
import contextlib
import statistics

from clarion_devstack.drain import pipeline_lag
from clarion_devstack.observer import LatencyObserver
from clarion_devstack.replay.pacing import PipelineSignal, ReplayPacer

LIVE_GROUPS = ("aggregator", "realtime-gateway")
"""Consumer groups (without the topic prefix) on the path from a POST to a live frame."""


def recent_latency_ms(latencies_ms: list[float], since: int) -> float | None:
    """The median of ``latencies_ms[since:]`` (ms), None if there is none."""
    recent = latencies_ms[since:]
    return statistics.median(recent) if recent else None


async def feed_pacer(
    pacer: ReplayPacer,
    observer: LatencyObserver,
    bootstrap_servers: str,
    *,
    topic_prefix: str = "",
    interval: float = 0.5,
) -> None:
    """Measure the live path and apply one control step every ``interval`` s; runs
    until cancelled. A broker that does not answer leaves the backlog unknown for
    that step (the latency alone decides)."""
    seen = len(observer.latencies_ms)
    while True:
        await asyncio.sleep(interval)
        backlog: int | None = None
        with contextlib.suppress(Exception):
            lags = await pipeline_lag(bootstrap_servers, topic_prefix, only=LIVE_GROUPS)
            backlog = sum(lags.values()) if lags else None
        latency = recent_latency_ms(observer.latencies_ms, seen)
        seen = len(observer.latencies_ms)
        pacer.observe(PipelineSignal(latency_ms=latency, backlog=backlog))
