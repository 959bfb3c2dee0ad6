"""Reports from stored rows: summary, funnel rates, failures, latency series, online users."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pytest

from clarion_analytics.domain.funnel import funnel, rate
from clarion_analytics.domain.latency import bucket_index, histogram_of, percentile
from clarion_analytics.domain.reports import (
    failures_report,
    funnel_report,
    latency_report,
    online_series,
    summary_report,
)

D1, D2 = date(2026, 11, 23), date(2026, 11, 24)


def row(day: date, type_: str, channel: str, metric: str, count: int, reason: str = "") -> dict:
    return {
        "day": day,
        "type": type_,
        "channel": channel,
        "metric": metric,
        "reason": reason,
        "count": count,
    }


ROWS = [
    row(D1, "a.x", "*", "created", 10),
    row(D1, "a.x", "in_app", "routed", 10),
    row(D1, "a.x", "push", "routed", 4),
    row(D1, "a.x", "in_app", "delivered", 9),
    row(D1, "a.x", "push", "delivered", 3),
    row(D1, "a.x", "*", "reached", 9),
    row(D1, "a.x", "*", "read", 6),
    row(D1, "a.x", "push", "clicked", 2),
    row(D1, "a.x", "in_app", "clicked", 1),
    row(D1, "a.x", "push", "failed", 1, "gone"),
    row(D2, "b.y", "*", "created", 5),
    row(D2, "b.y", "*", "updated", 7),
    row(D2, "b.y", "email", "failed", 2, "smtp_550"),
    row(D2, "b.y", "email", "bounced", 1, "mailbox_full"),
    row(D2, "*", "*", "inbox_read", 4),
    row(D2, "*", "*", "inbox_deleted", 1),
]


def test_summary_totals_days_types_and_inbox() -> None:
    report = summary_report(ROWS, [D1, D2])
    totals = report["totals"]
    assert totals["created"] == 15
    assert totals["updated"] == 7
    assert totals["reached"] == 9
    assert totals["read"] == 6
    assert totals["clicked"] == 3
    assert totals["failed"] == 4
    assert totals["delivered"] == {"in_app": 9, "push": 3, "email": 0}
    assert totals["failed_by_channel"] == {"in_app": 0, "push": 1, "email": 3}
    assert [d["created"] for d in report["days"]] == [10, 5]
    assert [t["type"] for t in report["types"]] == ["a.x", "b.y"]  # inbox rows excluded
    assert report["inbox"] == {"read": 4, "unread": 0, "deleted": 1, "all_read": 0}


def test_funnel_rates() -> None:
    report = funnel_report(ROWS)
    steps = {s["step"]: s for s in report["steps"]}
    assert steps["created"]["from_previous"] is None
    assert steps["reached"]["from_previous"] == pytest.approx(9 / 15)
    assert steps["read"]["from_previous"] == pytest.approx(6 / 9)
    assert steps["clicked"]["count"] == 3
    assert steps["clicked"]["from_first"] == pytest.approx(3 / 15)
    push = report["channels"]["push"]
    assert [(s["step"], s["count"]) for s in push] == [
        ("routed", 4),
        ("delivered", 3),
        ("clicked", 2),
    ]
    email = report["channels"]["email"]
    assert email[1]["from_previous"] is None  # 0 routed: no rate, not a division by zero


def test_funnel_math_edge_cases() -> None:
    assert rate(1, 0) is None
    assert funnel([]) == []
    with pytest.raises(ValueError, match="negative"):
        funnel([("a", 1), ("b", -1)])


def test_failures_ranked_by_count() -> None:
    report = failures_report(ROWS, [D1, D2])
    assert report["total"] == 4
    assert report["by_reason"][0] == {"reason": "smtp_550", "count": 2}
    assert {r["reason"] for r in report["by_reason"]} == {"smtp_550", "gone", "mailbox_full"}
    assert report["by_channel"][0] == {"channel": "email", "count": 3}
    assert report["days"] == [{"day": "2026-11-23", "count": 1}, {"day": "2026-11-24", "count": 3}]
    assert report["rows"][0]["status"] == "failed"


def test_latency_report_merges_steps() -> None:
    t1 = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    t2 = t1 + timedelta(minutes=5)
    first, second = [10.0, 20.0, 30.0], [200.0, 400.0]
    rows = []
    for t, values in ((t1, first), (t2, second)):
        for bucket, count in histogram_of(values).items():
            rows.append({"t": t, "stage": "s", "channel": "push", "bucket": bucket, "count": count})
    [report] = latency_report(rows)
    assert report["count"] == 5
    assert report["p50_ms"] == pytest.approx(percentile(histogram_of(first + second), 0.5))
    assert bucket_index(report["p99_ms"]) == bucket_index(400.0)
    assert [p["count"] for p in report["series"]] == [3, 2]
    assert report["series"][0]["t"] == t1.isoformat()


def test_online_series_carries_level_and_peaks() -> None:
    start = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)
    minute = timedelta(minutes=1)
    rows = [
        {"minute": start + minute, "delta": 3, "went_online": 3, "went_offline": 0},
        {"minute": start + 2 * minute, "delta": -2, "went_online": 0, "went_offline": 2},
        {"minute": start + 6 * minute, "delta": 1, "went_online": 2, "went_offline": 1},
    ]
    series = online_series(2, rows, start, start + 10 * minute, 300)
    assert [(p["online"], p["peak"]) for p in series] == [(3, 5), (4, 4)]
    assert series[0]["went_online"] == 3
    assert series[0]["went_offline"] == 2
    per_minute = online_series(2, rows, start, start + 4 * minute, 60)
    assert [p["online"] for p in per_minute] == [2, 5, 3, 3]
