"""The analytics HTTP API (admin JWT with the ``admin`` scope).

Every endpoint takes a half-open UTC range ``from`` / ``to`` (RFC 3339; naive
times are UTC; default: the last 24 hours) and optional ``type`` / ``channel``
filters. Counters (summary, funnel, failures) have day resolution: the range
selects every UTC day it touches. Latency and online users have minute
resolution and come as series with a step chosen for about 120 points
(or ``step`` seconds, at least 60). Errors are RFC 9457 problem+json.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any

from fastapi import APIRouter, Query

from clarion_analytics.deps import AdminDep, RepoDep
from clarion_analytics.domain.counters import CHANNELS
from clarion_analytics.domain.reports import (
    failures_report,
    funnel_report,
    latency_report,
    online_series,
    summary_report,
)
from clarion_analytics.domain.samples import STAGES
from clarion_analytics.domain.timebuckets import RangeError, TimeRange, choose_step
from clarion_contracts.base import Channel
from clarion_contracts.v1 import utc_now
from clarion_kit.problems import ProblemError, problem_responses

router = APIRouter(prefix="/v1/analytics", tags=["analytics"])

From = Annotated[
    datetime | None,
    Query(alias="from", description="Start of the range (inclusive), RFC 3339; default to-24h"),
]
To = Annotated[
    datetime | None, Query(description="End of the range (exclusive), RFC 3339; default now")
]
TypeFilter = Annotated[
    str | None,
    Query(
        max_length=100,
        pattern=r"^[a-z][a-z0-9_-]*(\.[a-z][a-z0-9_-]*)+$",
        description="Only this notification type, e.g. repo.starred",
    ),
]
ChannelFilter = Annotated[Channel | None, Query(description="Only this delivery channel")]
Step = Annotated[
    int | None, Query(ge=60, le=7 * 86400, description="Series step in seconds (default: auto)")
]

ERRORS = problem_responses(401, 403, 422)


def _range(start: datetime | None, end: datetime | None) -> TimeRange:
    try:
        return TimeRange.resolve(start, end, now=utc_now())
    except RangeError as exc:
        raise ProblemError(
            422, "Unprocessable Content", str(exc), type_="/problems/invalid-range"
        ) from exc


def _envelope(rng: TimeRange, type_: str | None, channel: Channel | None) -> dict[str, Any]:
    return {
        "from": rng.start.isoformat(),
        "to": rng.end.isoformat(),
        "filters": {"type": type_, "channel": channel.value if channel else None},
    }


@router.get("/summary", responses=ERRORS)
async def summary(
    _: AdminDep,
    repo: RepoDep,
    start: From = None,
    to: To = None,
    type: TypeFilter = None,
    channel: ChannelFilter = None,
) -> dict[str, Any]:
    """Created, updated, delivered per channel, read, clicked and failed: totals, per day
    and per type. With ``channel``, channel-less metrics (created, read...) stay unfiltered."""
    rng = _range(start, to)
    rows = await repo.counters(
        rng.first_day, rng.last_day, type_=type, channel=channel.value if channel else None
    )
    return {**_envelope(rng, type, channel), **summary_report(rows, rng.days())}


@router.get("/funnel", responses=ERRORS)
async def funnel(
    _: AdminDep,
    repo: RepoDep,
    start: From = None,
    to: To = None,
    type: TypeFilter = None,
    channel: ChannelFilter = None,
) -> dict[str, Any]:
    """created -> reached -> read -> clicked, and routed -> delivered -> clicked per channel,
    with conversion rates (fractions of the previous and of the first step)."""
    rng = _range(start, to)
    rows = await repo.counters(rng.first_day, rng.last_day, type_=type)
    channels = [channel.value] if channel else list(CHANNELS)
    return {**_envelope(rng, type, channel), **funnel_report(rows, channels)}


@router.get("/latency", responses=ERRORS)
async def latency(
    _: AdminDep,
    repo: RepoDep,
    start: From = None,
    to: To = None,
    type: TypeFilter = None,
    channel: ChannelFilter = None,
    step: Step = None,
) -> dict[str, Any]:
    """p50 / p90 / p99 (ms) per stage and channel over the range and per time step.

    Stages: ``event_to_notification``, ``ingest_to_notification`` (channel ``*``) and
    ``notification_to_delivery`` (per channel). Percentiles come from log-scale
    histograms and are within 12.2 % of the exact nearest-rank value.
    """
    rng = _range(start, to)
    step_seconds = step or choose_step(rng.start, rng.end)
    rows = await repo.latency_histograms(
        rng.start,
        rng.end,
        step_seconds,
        type_=type,
        channel=channel.value if channel else None,
    )
    return {
        **_envelope(rng, type, channel),
        "step_seconds": step_seconds,
        "stages_available": list(STAGES),
        "stages": latency_report(rows),
    }


@router.get("/failures", responses=ERRORS)
async def failures(
    _: AdminDep,
    repo: RepoDep,
    start: From = None,
    to: To = None,
    type: TypeFilter = None,
    channel: ChannelFilter = None,
) -> dict[str, Any]:
    """Failed and bounced deliveries by reason, channel, type, day and combination."""
    rng = _range(start, to)
    rows = await repo.counters(
        rng.first_day,
        rng.last_day,
        type_=type,
        channel=channel.value if channel else None,
        metrics=("failed", "bounced"),
    )
    return {**_envelope(rng, type, channel), **failures_report(rows, rng.days())}


@router.get("/online", responses=ERRORS)
async def online(
    _: AdminDep,
    repo: RepoDep,
    start: From = None,
    to: To = None,
    step: Step = None,
) -> dict[str, Any]:
    """Users online over time (from presence events) and the number online now."""
    rng = _range(start, to)
    step_seconds = step or choose_step(rng.start, rng.end)
    level, rows = await repo.online_minutes(rng.start, rng.end)
    return {
        "from": rng.start.isoformat(),
        "to": rng.end.isoformat(),
        "step_seconds": step_seconds,
        "current": await repo.online_now(),
        "series": online_series(level, rows, rng.start, rng.end, step_seconds),
    }
