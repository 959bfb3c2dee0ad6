"""UTC days, minutes, query ranges and chart steps."""

from __future__ import annotations

from datetime import UTC, date, datetime, timedelta, timezone

import pytest

from clarion_analytics.domain.timebuckets import (
    MAX_RANGE,
    RangeError,
    TimeRange,
    choose_step,
    floor_minute,
    floor_to_step,
    utc_day,
)

NOW = datetime(2026, 11, 24, 12, 30, 45, tzinfo=UTC)


def test_utc_day_and_minute_convert_offsets() -> None:
    tokyo = datetime(2026, 11, 25, 1, 15, 30, tzinfo=timezone(timedelta(hours=9)))
    assert utc_day(tokyo) == date(2026, 11, 24)
    assert floor_minute(tokyo) == datetime(2026, 11, 24, 16, 15, tzinfo=UTC)
    assert floor_minute(datetime(2026, 1, 1, 0, 0, 59)) == datetime(2026, 1, 1, tzinfo=UTC)


def test_floor_to_step_aligns_on_epoch() -> None:
    assert floor_to_step(NOW, 300) == datetime(2026, 11, 24, 12, 30, tzinfo=UTC)
    assert floor_to_step(NOW, 3600) == datetime(2026, 11, 24, 12, 0, tzinfo=UTC)
    assert floor_to_step(NOW, 86400) == datetime(2026, 11, 24, tzinfo=UTC)
    with pytest.raises(ValueError, match="positive"):
        floor_to_step(NOW, 0)


@pytest.mark.parametrize(
    ("span", "step"),
    [
        (timedelta(minutes=30), 60),
        (timedelta(hours=2), 60),
        (timedelta(hours=3), 300),
        (timedelta(hours=24), 900),
        (timedelta(days=7), 3 * 3600),
        (timedelta(days=400), 7 * 86400),
    ],
)
def test_choose_step_keeps_about_120_points(span: timedelta, step: int) -> None:
    assert choose_step(NOW - span, NOW) == step
    assert span.total_seconds() / step <= 120 or step == 7 * 86400


def test_range_defaults_to_the_last_day() -> None:
    rng = TimeRange.resolve(None, None, now=NOW)
    assert rng == TimeRange(NOW - timedelta(hours=24), NOW)
    assert rng.days() == [date(2026, 11, 23), date(2026, 11, 24)]


def test_range_end_is_exclusive_for_days() -> None:
    midnight = datetime(2026, 11, 24, tzinfo=UTC)
    rng = TimeRange.resolve(midnight - timedelta(days=1), midnight, now=NOW)
    assert rng.days() == [date(2026, 11, 23)]


def test_bad_ranges_are_refused() -> None:
    with pytest.raises(RangeError, match="earlier"):
        TimeRange.resolve(NOW, NOW, now=NOW)
    with pytest.raises(RangeError, match="at most"):
        TimeRange.resolve(NOW - MAX_RANGE - timedelta(seconds=1), NOW, now=NOW)
    naive = TimeRange.resolve(datetime(2026, 11, 24), datetime(2026, 11, 25), now=NOW)
    assert naive.start.tzinfo == UTC


@pytest.mark.parametrize(
    ("start", "end"),
    [
        (None, datetime(1, 1, 1, tzinfo=UTC)),
        (None, datetime(9999, 12, 31, 23, 59, 59, tzinfo=timezone(timedelta(hours=-1)))),
        (datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), None),
        (None, datetime(1970, 1, 1, 12, tzinfo=UTC)),
        (datetime(9999, 12, 31, tzinfo=UTC), None),
    ],
)
def test_bounds_outside_the_supported_range_are_refused(
    start: datetime | None, end: datetime | None
) -> None:
    with pytest.raises(RangeError):
        TimeRange.resolve(start, end, now=NOW)


def test_the_latest_supported_range_can_be_bucketed() -> None:
    rng = TimeRange.resolve(None, datetime(9999, 12, 30, tzinfo=UTC), now=NOW)
    assert rng.days()[-1] == date(9999, 12, 29)
    assert floor_to_step(rng.start, choose_step(rng.start, rng.end)) <= rng.start
