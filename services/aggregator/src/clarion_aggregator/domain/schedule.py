"""Time in the user's timezone: quiet hours and email digest periods.

All functions take and return aware datetimes; results are in UTC. Local wall
times are resolved with :mod:`zoneinfo` (IANA tz database). Around DST changes
a local time that does not exist (spring forward) resolves to the instant the
wall clock jumps over (``fold=0``, PEP 495), and an ambiguous one (fall back)
to its first occurrence unless that is already past.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cached_property, lru_cache
from typing import Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from clarion_contracts.v1 import QuietHours

DigestSchedule = Literal["off", "hourly", "daily"]


def zone(name: str | None) -> ZoneInfo:
    """The IANA zone ``name``; ``None``, empty or unknown names give UTC."""
    if not name:
        return ZoneInfo("UTC")
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


def _parse_hhmm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def _local_instant(day: date, wall: time, tz: ZoneInfo, fold: int = 0) -> datetime:
    """The UTC instant of local wall time ``wall`` on ``day`` (PEP 495 ``fold``)."""
    return datetime.combine(day, wall, tzinfo=tz).replace(fold=fold).astimezone(UTC)


def _first_after(now: datetime, day: date, wall: time, tz: ZoneInfo) -> datetime | None:
    for fold in (0, 1):
        instant = _local_instant(day, wall, tz, fold)
        if instant > now:
            return instant
    return None


def quiet_hours_end(now: datetime, quiet: QuietHours | None, tz: ZoneInfo) -> datetime | None:
    """When the quiet period ``now`` falls in ends (UTC), or ``None`` when ``now`` is not quiet.

    Quiet hours are ``[start, end)`` in local wall time and wrap midnight when
    ``start > end`` (22:00-07:00 is quiet from 22:00 to 07:00 next morning).
    ``start == end`` means no quiet hours.

    Args:
        now: the current instant (aware).
        quiet: the user's quiet hours, or ``None``.
        tz: the user's zone.
    """
    if quiet is None or quiet.start == quiet.end:
        return None
    start, end = _parse_hhmm(quiet.start), _parse_hhmm(quiet.end)
    local = now.astimezone(tz)
    wall = local.time().replace(tzinfo=None)
    today = local.date()
    if start < end:
        if not (start <= wall < end):
            return None
        end_day = today
    elif wall >= start:
        end_day = today + timedelta(days=1)
    elif wall < end:
        end_day = today
    else:
        return None
    return _first_after(now.astimezone(UTC), end_day, end, tz)


@dataclass(frozen=True)
class DigestPeriod:
    """A digest period ``[start, end)`` in UTC; the digest is due at ``end``."""

    start: datetime
    end: datetime

    @cached_property
    def key(self) -> str:
        """Stable name of the period: its end as ``YYYYMMDDTHHMMZ``."""
        return self.end.strftime("%Y%m%dT%H%MZ")


# Pure in (instant, schedule, zone, hour), and a batch routes all its recipients at one
# instant: memoised so a batch computes each zone's period once.
@lru_cache(maxsize=1024)
def digest_period(
    now: datetime, schedule: DigestSchedule, tz: ZoneInfo, digest_hour: int = 9
) -> DigestPeriod | None:
    """The digest period an item arriving at ``now`` belongs to (``None`` when digests are off).

    ``hourly``: the local clock hour containing ``now``, due at its end.
    ``daily``: from the previous local ``digest_hour:00`` up to the next one
    (strictly after ``now``), due at the next one.

    Raises:
        ValueError: ``digest_hour`` outside 0..23.
    """
    if schedule == "off":
        return None
    now_utc = now.astimezone(UTC)
    if schedule == "hourly":
        local = now.astimezone(tz)
        start = local.replace(minute=0, second=0, microsecond=0).astimezone(UTC)
        # A 30- or 45-minute offset zone still has hour-long periods, aligned to its clock.
        return DigestPeriod(start=start, end=start + timedelta(hours=1))
    if not 0 <= digest_hour <= 23:
        raise ValueError(f"digest_hour {digest_hour} outside 0..23")
    wall = time(digest_hour)
    local_day = now.astimezone(tz).date()
    end = _first_after(now_utc, local_day, wall, tz) or _local_instant(
        local_day + timedelta(days=1), wall, tz
    )
    end_day = end.astimezone(tz).date()
    start = _local_instant(end_day - timedelta(days=1), wall, tz)
    return DigestPeriod(start=start, end=end)
