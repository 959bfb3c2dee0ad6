"""Time bucketing: UTC days, minutes, query ranges and chart steps.

Every stored aggregate is keyed by a UTC calendar day (counters) or a UTC minute
(latency histograms, online users). Queries take a half-open range
``[from, to)`` and, for series, a step chosen so a chart gets at most about
``max_points`` points.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

NICE_STEPS_SECONDS: tuple[int, ...] = (
    60,
    300,
    900,
    1800,
    3600,
    3 * 3600,
    6 * 3600,
    12 * 3600,
    86400,
    7 * 86400,
)
"""Steps a series may use: 1, 5, 15, 30 minutes, 1, 3, 6, 12 hours, 1 day, 1 week."""

DEFAULT_RANGE = timedelta(hours=24)
"""Range of a query that gives neither ``from`` nor ``to``."""
MAX_RANGE = timedelta(days=400)
"""Longest range a query may ask for."""
EARLIEST = datetime(1970, 1, 1, tzinfo=UTC)
"""Earliest instant a query range may start at (nothing is recorded before the epoch)."""
LATEST = datetime(9999, 12, 30, tzinfo=UTC)
"""Latest instant a query range may end at: a day inside :class:`datetime`'s range, so
offsets, day and step arithmetic on any accepted bound cannot overflow."""


def as_utc(moment: datetime) -> datetime:
    """``moment`` in UTC; a naive datetime is taken to be UTC already."""
    if moment.tzinfo is None:
        return moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC)


def utc_day(moment: datetime) -> date:
    """The UTC calendar day of ``moment``."""
    return as_utc(moment).date()


def floor_minute(moment: datetime) -> datetime:
    """``moment`` in UTC truncated to the start of its minute."""
    return as_utc(moment).replace(second=0, microsecond=0)


def floor_to_step(moment: datetime, step_seconds: int) -> datetime:
    """Start of the ``step_seconds``-wide bucket (aligned on the Unix epoch) holding ``moment``.

    Raises:
        ValueError: ``step_seconds`` is not positive.
    """
    if step_seconds <= 0:
        raise ValueError("step must be positive")
    epoch = int(as_utc(moment).timestamp())
    return datetime.fromtimestamp(epoch - epoch % step_seconds, UTC)


def choose_step(start: datetime, end: datetime, max_points: int = 120) -> int:
    """The smallest step in :data:`NICE_STEPS_SECONDS` giving at most ``max_points`` buckets.

    Ranges too long for even a weekly step get the weekly step.
    """
    span = max((as_utc(end) - as_utc(start)).total_seconds(), 1.0)
    for step in NICE_STEPS_SECONDS:
        if span / step <= max_points:
            return step
    return NICE_STEPS_SECONDS[-1]


class RangeError(ValueError):
    """A query range that cannot be answered (reversed, empty or too long)."""


def _bounded(moment: datetime, name: str) -> datetime:
    """``moment`` in UTC if within ``[EARLIEST, LATEST]``, else :class:`RangeError`."""
    try:
        in_utc = as_utc(moment)
    except OverflowError as exc:  # e.g. 9999-12-31T23:59:59-01:00
        raise RangeError(f"'{name}' is outside the supported range") from exc
    if not EARLIEST <= in_utc <= LATEST:
        raise RangeError(
            f"'{name}' must be between {EARLIEST.isoformat()} and {LATEST.isoformat()}"
        )
    return in_utc


@dataclass(frozen=True)
class TimeRange:
    """A half-open UTC range ``[start, end)``."""

    start: datetime
    end: datetime

    @classmethod
    def resolve(cls, start: datetime | None, end: datetime | None, *, now: datetime) -> TimeRange:
        """Fill defaults (``end`` = ``now``, ``start`` = ``end - 24 h``) and validate.

        Raises:
            RangeError: a bound outside ``[EARLIEST, LATEST]``, ``start >= end`` or
                the range is longer than :data:`MAX_RANGE`.
        """
        stop = _bounded(end if end is not None else now, "to")
        if start is not None:
            begin = _bounded(start, "from")
        elif stop - EARLIEST < DEFAULT_RANGE:
            raise RangeError(f"'to' must be at least {DEFAULT_RANGE} after {EARLIEST.isoformat()}")
        else:
            begin = stop - DEFAULT_RANGE
        if begin >= stop:
            raise RangeError("'from' must be earlier than 'to'")
        if stop - begin > MAX_RANGE:
            raise RangeError(f"the range may span at most {MAX_RANGE.days} days")
        return cls(begin, stop)

    @property
    def first_day(self) -> date:
        """UTC day of ``start``."""
        return utc_day(self.start)

    @property
    def last_day(self) -> date:
        """UTC day of the last instant in the range (``end`` is exclusive)."""
        return utc_day(self.end - timedelta(microseconds=1))

    def days(self) -> list[date]:
        """Every UTC day the range touches, in order."""
        out: list[date] = []
        day = self.first_day
        while day <= self.last_day:
            out.append(day)
            day += timedelta(days=1)
        return out
