"""Unit tests of quiet hours and digest periods in the user's timezone."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion_aggregator.domain.schedule import digest_period, quiet_hours_end, zone
from clarion_contracts.v1 import QuietHours

PARIS = ZoneInfo("Europe/Paris")
NY = ZoneInfo("America/New_York")
UTC_ZONE = ZoneInfo("UTC")


def local(tz: ZoneInfo, *args: int, fold: int = 0) -> datetime:
    return datetime(*args, tzinfo=tz, fold=fold)  # type: ignore[misc]


def q(start: str, end: str) -> QuietHours:
    return QuietHours(start=start, end=end)


def test_no_quiet_hours() -> None:
    assert quiet_hours_end(datetime(2026, 1, 1, 3, tzinfo=UTC), None, UTC_ZONE) is None
    assert (
        quiet_hours_end(datetime(2026, 1, 1, 3, tzinfo=UTC), q("08:00", "08:00"), UTC_ZONE) is None
    )


def test_same_day_period() -> None:
    quiet = q("12:00", "14:00")
    assert quiet_hours_end(local(PARIS, 2026, 1, 5, 11, 59), quiet, PARIS) is None
    end = quiet_hours_end(local(PARIS, 2026, 1, 5, 12, 0), quiet, PARIS)
    assert end == local(PARIS, 2026, 1, 5, 14, 0)
    assert quiet_hours_end(local(PARIS, 2026, 1, 5, 14, 0), quiet, PARIS) is None


@pytest.mark.parametrize(
    ("now", "expected"),
    [
        ((2026, 1, 5, 21, 59), None),
        ((2026, 1, 5, 22, 0), (2026, 1, 6, 7, 0)),
        ((2026, 1, 5, 23, 30), (2026, 1, 6, 7, 0)),
        ((2026, 1, 6, 0, 0), (2026, 1, 6, 7, 0)),
        ((2026, 1, 6, 6, 59), (2026, 1, 6, 7, 0)),
        ((2026, 1, 6, 7, 0), None),
        ((2026, 1, 6, 12, 0), None),
    ],
)
def test_period_across_midnight(now: tuple[int, ...], expected: tuple[int, ...] | None) -> None:
    end = quiet_hours_end(local(PARIS, *now), q("22:00", "07:00"), PARIS)
    assert end == (local(PARIS, *expected) if expected else None)
    if end is not None:
        assert end.tzinfo is UTC


def test_quiet_hours_use_the_users_zone() -> None:
    # 03:00 UTC is 22:00 in New York (EST): quiet there, not in Paris (04:00 -> quiet too)
    now = datetime(2026, 1, 6, 3, 0, tzinfo=UTC)
    assert quiet_hours_end(now, q("22:00", "23:00"), NY) == datetime(2026, 1, 6, 4, 0, tzinfo=UTC)
    assert quiet_hours_end(now, q("22:00", "23:00"), PARIS) is None


def test_spring_forward_end_in_the_gap() -> None:
    # Paris 2026-03-29: 02:00 -> 03:00. Quiet 22:00-02:30 ends when the clock jumps.
    end = quiet_hours_end(local(PARIS, 2026, 3, 29, 1, 0), q("22:00", "02:30"), PARIS)
    assert end is not None
    assert end == datetime(2026, 3, 29, 1, 0, tzinfo=UTC) + timedelta(minutes=30)
    assert end.astimezone(PARIS).hour == 3


def test_spring_forward_night_is_an_hour_shorter() -> None:
    start = local(PARIS, 2026, 3, 28, 22, 0)
    end = quiet_hours_end(start, q("22:00", "07:00"), PARIS)
    assert end is not None
    assert end - start == timedelta(hours=8)


def test_fall_back_night_is_an_hour_longer() -> None:
    start = local(PARIS, 2026, 10, 24, 22, 0)
    end = quiet_hours_end(start, q("22:00", "07:00"), PARIS)
    assert end is not None
    assert end - start == timedelta(hours=10)


def test_fall_back_ambiguous_end_during_second_pass() -> None:
    # Paris 2026-10-25: 03:00 -> 02:00. Quiet 01:00-02:30; at 02:15 (second pass) the
    # first 02:30 is already past, so the period ends at the second 02:30.
    now = local(PARIS, 2026, 10, 25, 2, 15, fold=1)
    end = quiet_hours_end(now, q("01:00", "02:30"), PARIS)
    assert end == local(PARIS, 2026, 10, 25, 2, 30, fold=1).astimezone(UTC)
    assert end is not None
    assert end - now.astimezone(UTC) == timedelta(minutes=15)


@given(
    st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kolkata", "Australia/Lord_Howe"]),
    st.integers(0, 23),
    st.sampled_from([0, 30]),
    st.integers(0, 23),
    st.sampled_from([0, 30]),
)
def test_quiet_end_is_in_the_future_and_not_quiet(
    now: datetime, tz_name: str, sh: int, sm: int, eh: int, em: int
) -> None:
    tz = ZoneInfo(tz_name)
    quiet = q(f"{sh:02d}:{sm:02d}", f"{eh:02d}:{em:02d}")
    end = quiet_hours_end(now, quiet, tz)
    if end is None:
        return
    assert now < end <= now + timedelta(hours=25)
    # one minute after the end it is not quiet any more, unless a new period starts there
    if quiet.start != quiet.end and (sh, sm) != (eh, em):
        after = quiet_hours_end(end, quiet, tz)
        assert after is None or after > end + timedelta(hours=1)


def test_zone_falls_back_to_utc() -> None:
    assert zone(None) == ZoneInfo("UTC")
    assert zone("Not/AZone") == ZoneInfo("UTC")
    assert zone("Europe/Paris") == PARIS


def test_digest_off() -> None:
    assert digest_period(datetime(2026, 1, 1, tzinfo=UTC), "off", PARIS) is None


def test_hourly_digest_period() -> None:
    p = digest_period(local(PARIS, 2026, 1, 5, 10, 42), "hourly", PARIS)
    assert p is not None
    assert (p.start, p.end) == (local(PARIS, 2026, 1, 5, 10, 0), local(PARIS, 2026, 1, 5, 11, 0))
    assert p.key == "20260105T1000Z"


def test_hourly_digest_in_half_hour_zone() -> None:
    kolkata = ZoneInfo("Asia/Kolkata")
    p = digest_period(local(kolkata, 2026, 1, 5, 10, 42), "hourly", kolkata)
    assert p is not None
    assert p.end == local(kolkata, 2026, 1, 5, 11, 0)


def test_daily_digest_due_at_the_local_hour() -> None:
    before = digest_period(local(NY, 2026, 1, 5, 8, 59), "daily", NY, 9)
    assert before is not None
    assert before.end == local(NY, 2026, 1, 5, 9, 0)
    assert before.start == local(NY, 2026, 1, 4, 9, 0)
    at = digest_period(local(NY, 2026, 1, 5, 9, 0), "daily", NY, 9)
    assert at is not None
    assert at.end == local(NY, 2026, 1, 6, 9, 0)


def test_daily_digest_across_dst() -> None:
    # New York 2026-03-08 springs forward: that day's period is 23 hours long
    p = digest_period(local(NY, 2026, 3, 7, 12, 0), "daily", NY, 9)
    assert p is not None
    assert p.end == local(NY, 2026, 3, 8, 9, 0)
    assert p.end - p.start == timedelta(hours=23)
    p2 = digest_period(local(NY, 2026, 3, 8, 12, 0), "daily", NY, 9)
    assert p2 is not None
    assert p2.start == p.end
    assert p2.end.astimezone(NY).hour == 9


def test_daily_digest_hour_in_the_dst_gap() -> None:
    p = digest_period(local(PARIS, 2026, 3, 28, 12, 0), "daily", PARIS, 2)
    assert p is not None
    assert p.end > local(PARIS, 2026, 3, 28, 12, 0)
    assert p.end.astimezone(PARIS).date().isoformat() == "2026-03-29"


def test_daily_digest_rejects_bad_hour() -> None:
    with pytest.raises(ValueError, match="digest_hour"):
        digest_period(datetime(2026, 1, 1, tzinfo=UTC), "daily", PARIS, 24)


@given(
    st.datetimes(
        min_value=datetime(2025, 1, 1), max_value=datetime(2028, 1, 1), timezones=st.just(UTC)
    ),
    st.sampled_from(["Europe/Paris", "America/New_York", "Asia/Kolkata", "UTC"]),
    st.sampled_from(["hourly", "daily"]),
    st.integers(0, 23),
)
def test_digest_period_contains_now(now: datetime, tz_name: str, schedule: str, hour: int) -> None:
    p = digest_period(now, schedule, ZoneInfo(tz_name), hour)  # type: ignore[arg-type]
    assert p is not None
    assert p.start <= now < p.end
    assert p.end - p.start <= timedelta(hours=25)
