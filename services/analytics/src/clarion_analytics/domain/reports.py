"""Reports built from stored aggregate rows: summary, funnel, latency, failures, online users.

Pure functions over row dicts as the repository returns them, so the arithmetic
is tested without a database. Counter rows: ``day, type, channel, metric,
reason, count``. Latency rows: ``t, stage, channel, bucket, count``. Presence
rows: ``minute, online, peak, went_online, went_offline``.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from datetime import date, datetime, timedelta
from typing import Any

from clarion_analytics.domain.counters import (
    ANY,
    CHANNELS,
    CLICKED,
    CREATED,
    DELIVERED,
    FAILURE_METRICS,
    REACHED,
    READ,
    ROUTED,
    UPDATED,
)
from clarion_analytics.domain.funnel import FunnelStep, channel_funnel, overall_funnel
from clarion_analytics.domain.latency import merge, summarize
from clarion_analytics.domain.timebuckets import as_utc, floor_to_step

Row = Mapping[str, Any]


def _totals(rows: Iterable[Row]) -> dict[tuple[str, str], int]:
    out: dict[tuple[str, str], int] = defaultdict(int)
    for r in rows:
        out[(r["metric"], r["channel"])] += int(r["count"])
    return out


def _metric_block(totals: Mapping[tuple[str, str], int]) -> dict[str, Any]:
    """Headline numbers of one set of counters."""
    failed = sum(totals.get((m, ch), 0) for m in FAILURE_METRICS for ch in CHANNELS)
    return {
        "created": totals.get((CREATED, ANY), 0),
        "updated": totals.get((UPDATED, ANY), 0),
        "reached": totals.get((REACHED, ANY), 0),
        "read": totals.get((READ, ANY), 0),
        "clicked": sum(totals.get((CLICKED, ch), 0) for ch in CHANNELS),
        "failed": failed,
        "routed": {ch: totals.get((ROUTED, ch), 0) for ch in CHANNELS},
        "delivered": {ch: totals.get((DELIVERED, ch), 0) for ch in CHANNELS},
        "clicked_by_channel": {ch: totals.get((CLICKED, ch), 0) for ch in CHANNELS},
        "failed_by_channel": {
            ch: sum(totals.get((m, ch), 0) for m in FAILURE_METRICS) for ch in CHANNELS
        },
    }


def summary_report(rows: Sequence[Row], days: list[date]) -> dict[str, Any]:
    """Totals, one block per day of ``days`` (zeros included) and one per type.

    Inbox action counters (type ``*``) are reported under ``inbox``.
    """
    funnel_rows = [r for r in rows if not str(r["metric"]).startswith("inbox_")]
    inbox_rows = [r for r in rows if str(r["metric"]).startswith("inbox_")]
    by_day: dict[date, list[Row]] = defaultdict(list)
    by_type: dict[str, list[Row]] = defaultdict(list)
    for r in funnel_rows:
        by_day[r["day"]].append(r)
        by_type[r["type"]].append(r)
    inbox: dict[str, int] = {"read": 0, "unread": 0, "deleted": 0, "all_read": 0}
    for r in inbox_rows:
        action = str(r["metric"]).removeprefix("inbox_")
        inbox[action] = inbox.get(action, 0) + int(r["count"])
    return {
        "totals": _metric_block(_totals(funnel_rows)),
        "days": [{"day": d.isoformat(), **_metric_block(_totals(by_day.get(d, [])))} for d in days],
        "types": [{"type": t, **_metric_block(_totals(by_type[t]))} for t in sorted(by_type)],
        "inbox": inbox,
    }


def _step_dict(step: FunnelStep) -> dict[str, Any]:
    return {
        "step": step.name,
        "count": step.count,
        "from_previous": step.from_previous,
        "from_first": step.from_first,
    }


def funnel_report(rows: Sequence[Row], channels: Iterable[str] = CHANNELS) -> dict[str, Any]:
    """Overall and per-channel funnels of counter rows."""
    totals = _totals(r for r in rows if not str(r["metric"]).startswith("inbox_"))
    return {
        "steps": [_step_dict(s) for s in overall_funnel(totals)],
        "channels": {ch: [_step_dict(s) for s in channel_funnel(totals, ch)] for ch in channels},
    }


def failures_report(rows: Sequence[Row], days: list[date]) -> dict[str, Any]:
    """Failure counts by reason, channel, type, day and their combinations (largest first)."""
    failures = [r for r in rows if r["metric"] in FAILURE_METRICS]
    combos: dict[tuple[str, str, str, str], int] = defaultdict(int)
    reasons: dict[str, int] = defaultdict(int)
    channels: dict[str, int] = {ch: 0 for ch in CHANNELS}
    types: dict[str, int] = defaultdict(int)
    per_day: dict[date, int] = defaultdict(int)
    for r in failures:
        n = int(r["count"])
        combos[(r["reason"], r["channel"], r["type"], r["metric"])] += n
        reasons[r["reason"]] += n
        channels[r["channel"]] = channels.get(r["channel"], 0) + n
        types[r["type"]] += n
        per_day[r["day"]] += n

    def ranked(counts: Mapping[str, int], label: str) -> list[dict[str, Any]]:
        return [
            {label: k, "count": v}
            for k, v in sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
        ]

    return {
        "total": sum(reasons.values()),
        "by_reason": ranked(reasons, "reason"),
        "by_channel": ranked(channels, "channel"),
        "by_type": ranked(types, "type"),
        "days": [{"day": d.isoformat(), "count": per_day.get(d, 0)} for d in days],
        "rows": [
            {"reason": k[0], "channel": k[1], "type": k[2], "status": k[3], "count": v}
            for k, v in sorted(combos.items(), key=lambda kv: (-kv[1], kv[0]))
        ],
    }


def _pct(hist: Mapping[int, int]) -> dict[str, Any]:
    p = summarize(hist)
    return {"count": p.count, "p50_ms": p.p50_ms, "p90_ms": p.p90_ms, "p99_ms": p.p99_ms}


def latency_report(rows: Sequence[Row]) -> list[dict[str, Any]]:
    """Percentiles per (stage, channel) over the whole range and per time step.

    Rows are histogram buckets summed per step; ``t`` is the step's start.
    """
    series: dict[tuple[str, str], dict[datetime, dict[int, int]]] = defaultdict(
        lambda: defaultdict(dict)
    )
    for r in rows:
        hist = series[(r["stage"], r["channel"])][as_utc(r["t"])]
        hist[int(r["bucket"])] = hist.get(int(r["bucket"]), 0) + int(r["count"])
    out: list[dict[str, Any]] = []
    for (stage, channel), steps in sorted(series.items()):
        overall = merge(steps.values())
        out.append(
            {
                "stage": stage,
                "channel": channel,
                **_pct(overall),
                "series": [{"t": t.isoformat(), **_pct(hist)} for t, hist in sorted(steps.items())],
            }
        )
    return out


def online_series(
    level_before: int, rows: Sequence[Row], start: datetime, end: datetime, step_seconds: int
) -> list[dict[str, Any]]:
    """Users online per step over ``[start, end)``.

    ``level_before`` is the number online just before ``start``; ``rows`` are presence
    minutes (``minute, delta, went_online, went_offline``) inside the range. Per step:
    ``online`` is the level at the step's end, ``peak`` the highest per-minute level in
    it (including the level it started with), plus arrivals and departures.
    """
    start, end = as_utc(start), as_utc(end)
    ordered = sorted(rows, key=lambda r: as_utc(r["minute"]))
    level = max(level_before, 0)
    index = 0
    out: list[dict[str, Any]] = []
    t = floor_to_step(start, step_seconds)
    while t < end:
        next_t = t + timedelta(seconds=step_seconds)
        peak = level
        went_on = went_off = 0
        while index < len(ordered) and as_utc(ordered[index]["minute"]) < next_t:
            r = ordered[index]
            level = max(level + int(r["delta"]), 0)
            peak = max(peak, level)
            went_on += int(r["went_online"])
            went_off += int(r["went_offline"])
            index += 1
        out.append(
            {
                "t": t.isoformat(),
                "online": level,
                "peak": peak,
                "went_online": went_on,
                "went_offline": went_off,
            }
        )
        t = next_t
    return out
