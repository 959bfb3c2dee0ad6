"""What each consumed message adds to the daily counters, as pure functions.

Counters are keyed ``(day, type, channel, metric, reason)``. Funnel metrics are
attributed to the notification's *cohort*: the UTC day it was created and its
type, so "read" on Tuesday of a notification created on Monday counts for
Monday and a funnel never shows more reads than creations. Failures and inbox
actions without a notification are attributed to the day they happened.

Metrics (``channel`` is a :class:`~clarion_contracts.base.Channel` value or
:data:`ANY`):

- ``created`` (ANY): distinct notifications seen, once each, whatever version arrived first.
- ``routed`` (channel): version 1 of a notification was routed to that channel.
- ``updated`` (ANY): distinct versions > 1 (events absorbed by aggregation).
- ``delivered`` (channel): distinct notifications delivered at least once on the channel.
- ``reached`` (ANY): distinct notifications delivered on at least one channel.
- ``read`` (ANY): distinct notifications read at least once (unread then read counts once).
- ``clicked`` (channel of the first click): distinct notifications clicked.
- ``failed`` / ``bounced`` / ``retrying`` / ``deferred`` / ``skipped`` (channel, reason):
  every distinct status report with that state (held, like every fact, until the
  notification's cohort is known).
- ``inbox_<action>`` (ANY): every distinct inbox event (read, unread, deleted, all_read).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date, datetime

from clarion_analytics.domain.timebuckets import utc_day
from clarion_contracts.v1 import DeliveryState, DeliveryStatus, InboxEvent

ANY = "*"
"""Channel (or type) of a metric that is not specific to one."""
UNKNOWN_TYPE = "unknown"
"""Type of a failure whose notification analytics has not seen and whose report has no type."""

CREATED = "created"
ROUTED = "routed"
UPDATED = "updated"
DELIVERED = "delivered"
REACHED = "reached"
READ = "read"
CLICKED = "clicked"
FAILED = "failed"
BOUNCED = "bounced"
FAILURE_METRICS = (FAILED, BOUNCED)
"""States that count as delivery failures."""
STATE_METRICS = frozenset({FAILED, BOUNCED, "retrying", "deferred", "skipped"})
"""Status states counted per report (with their reason)."""
CHANNELS = ("in_app", "push", "email")


@dataclass(frozen=True, order=True)
class CounterKey:
    """One counter row: ``(day, type, channel, metric, reason)``; ``reason`` is ``""`` if none."""

    day: date
    type: str
    channel: str
    metric: str
    reason: str = ""


class CounterBatch:
    """Counter increments gathered while processing one batch, flushed in key order.

    Flushing in sorted key order makes concurrent transactions lock counter rows
    in the same order, which keeps them from deadlocking on each other.
    """

    def __init__(self) -> None:
        self._counts: Counter[CounterKey] = Counter()

    def add(self, key: CounterKey, amount: int = 1) -> None:
        """Add ``amount`` to ``key``."""
        self._counts[key] += amount

    def items(self) -> list[tuple[CounterKey, int]]:
        """Non-zero increments sorted by key."""
        return sorted((k, v) for k, v in self._counts.items() if v)

    def __len__(self) -> int:
        return sum(1 for v in self._counts.values() if v)


@dataclass(frozen=True)
class Cohort:
    """The notification a funnel metric belongs to: its type and UTC creation day."""

    type: str
    day: date

    @classmethod
    def of(cls, type_: str, created_at: datetime) -> Cohort:
        """Cohort of a notification of ``type_`` created at ``created_at``."""
        return cls(type_, utc_day(created_at))


@dataclass(frozen=True)
class PendingFlags:
    """Funnel facts recorded for a notification before its cohort was known."""

    delivered_channels: tuple[str, ...] = ()
    read: bool = False
    clicked_channel: str | None = None


def cohort_counters(cohort: Cohort, flags: PendingFlags) -> list[CounterKey]:
    """Counters owed once a cohort becomes known for facts recorded before it was."""
    keys = [CounterKey(cohort.day, cohort.type, ch, DELIVERED) for ch in flags.delivered_channels]
    if flags.delivered_channels:
        keys.append(CounterKey(cohort.day, cohort.type, ANY, REACHED))
    if flags.read:
        keys.append(CounterKey(cohort.day, cohort.type, ANY, READ))
    if flags.clicked_channel is not None:
        keys.append(CounterKey(cohort.day, cohort.type, flags.clicked_channel, CLICKED))
    return keys


def creation_counters(cohort: Cohort, channels: Iterable[str]) -> list[CounterKey]:
    """Counters of a notification seen for the first time: created (+ routed per channel)."""
    return [CounterKey(cohort.day, cohort.type, ANY, CREATED), *routing_counters(cohort, channels)]


def routing_counters(cohort: Cohort, channels: Iterable[str]) -> list[CounterKey]:
    """``routed`` per distinct channel of a notification's first version."""
    return [CounterKey(cohort.day, cohort.type, ch, ROUTED) for ch in sorted(set(channels))]


def status_state_counter(status: DeliveryStatus, cohort: Cohort | None) -> CounterKey | None:
    """The per-report counter of a failure-like status, or ``None`` for other states.

    Without a known cohort the key uses the report's own day and type (or
    :data:`UNKNOWN_TYPE`). ``reason`` defaults to the state name.
    """
    if status.status.value not in STATE_METRICS:
        return None
    if cohort is not None:
        day, type_ = cohort.day, cohort.type
    else:
        day, type_ = utc_day(status.occurred_at), status.type or UNKNOWN_TYPE
    reason = (status.reason or status.status.value)[:100]
    return CounterKey(day, type_, status.channel.value, status.status.value, reason)


def is_delivery(status: DeliveryStatus) -> bool:
    """True when the status reports a successful delivery (clicked implies delivered)."""
    return status.status in (DeliveryState.DELIVERED, DeliveryState.CLICKED)


def inbox_counter(event: InboxEvent) -> CounterKey:
    """The per-event inbox action counter, on the event's UTC day."""
    return CounterKey(utc_day(event.occurred_at), ANY, ANY, f"inbox_{event.action.value}")
