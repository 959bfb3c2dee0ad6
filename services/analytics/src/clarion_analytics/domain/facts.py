"""Per-notification funnel facts and the counters each new message adds to them.

A :class:`NotificationFacts` is the state analytics keeps per notification: its
cohort (type and creation day, once known) and the first time each funnel step
happened. The ``observe_*`` functions apply one *new* message (the caller has
already dropped redeliveries by their dedup key) and return the counters it
owes. Every step counts at most once per notification, and the result does not
depend on the order messages from different topics arrive in: a fact recorded
before the cohort is known is counted when the cohort becomes known.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime

from clarion_analytics.domain.counters import (
    ANY,
    CLICKED,
    DELIVERED,
    REACHED,
    READ,
    UPDATED,
    Cohort,
    CounterKey,
    PendingFlags,
    cohort_counters,
    creation_counters,
    is_delivery,
    routing_counters,
    status_state_counter,
)
from clarion_contracts.v1 import DeliveryState, DeliveryStatus, Notification


@dataclass
class NotificationFacts:
    """What analytics knows about one notification (one ``notification_state`` row).

    ``delivered`` maps a channel to the first delivery time on it. Timestamps are
    aware datetimes; ``created_day`` is the UTC day of ``created_at``.
    """

    notification_id: str
    type: str | None = None
    created_day: date | None = None
    created_at: datetime | None = None
    seen_at: datetime | None = None
    delivered_in_app: datetime | None = None
    delivered_push: datetime | None = None
    delivered_email: datetime | None = None
    read_at: datetime | None = None
    clicked_at: datetime | None = None
    clicked_channel: str | None = None
    pending_failures: list[list[str]] = field(default_factory=list)

    @property
    def cohort(self) -> Cohort | None:
        """The notification's cohort, or ``None`` while no message revealed it."""
        if self.type is None or self.created_day is None:
            return None
        return Cohort(self.type, self.created_day)

    def delivered_at(self, channel: str) -> datetime | None:
        """First delivery time on ``channel`` (``in_app``, ``push`` or ``email``)."""
        value: datetime | None = getattr(self, f"delivered_{channel}")
        return value

    def delivered_channels(self) -> tuple[str, ...]:
        """Channels with at least one delivery, in channel order."""
        return tuple(ch for ch in ("in_app", "push", "email") if self.delivered_at(ch))

    def _establish(self, type_: str, created_at: datetime) -> list[CounterKey]:
        """Set the cohort if unknown; return the counters of facts recorded before it."""
        if self.cohort is not None:
            return []
        cohort = Cohort.of(type_, created_at)
        self.type, self.created_day, self.created_at = cohort.type, cohort.day, created_at
        flags = PendingFlags(
            delivered_channels=self.delivered_channels(),
            read=self.read_at is not None,
            clicked_channel=self.clicked_channel,
        )
        owed = cohort_counters(cohort, flags)
        owed.extend(
            CounterKey(cohort.day, cohort.type, channel, state, reason)
            for channel, state, reason in self.pending_failures
        )
        self.pending_failures = []
        return owed


def observe_notification(
    facts: NotificationFacts, notification: Notification, now: datetime
) -> list[CounterKey]:
    """Apply a new ``(notification_id, version)``: cohort, ``created`` once, ``updated``.

    ``routed`` counts the channels of version 1 (the routing of the creation), whenever
    version 1 arrives; ``created`` counts when any version is first seen.
    """
    owed = facts._establish(notification.type, notification.created_at)
    cohort = facts.cohort
    assert cohort is not None
    if facts.seen_at is None:
        facts.seen_at = now
        owed.extend(creation_counters(cohort, ()))
    if notification.version == 1:
        owed.extend(routing_counters(cohort, (ch.value for ch in notification.channels)))
    else:
        owed.append(CounterKey(cohort.day, cohort.type, ANY, UPDATED))
    return owed


def observe_status(facts: NotificationFacts, status: DeliveryStatus) -> list[CounterKey]:
    """Apply a new delivery status report.

    A status carrying ``type`` and ``notification_created_at`` reveals the cohort.
    ``delivered``/``clicked`` set the first delivery on the channel (and ``reached``);
    ``clicked`` also sets the first click. Failure-like states count per report; while
    the cohort is unknown they are held in ``pending_failures``.
    """
    owed: list[CounterKey] = []
    if status.type is not None and status.notification_created_at is not None:
        owed.extend(facts._establish(status.type, status.notification_created_at))
    cohort = facts.cohort
    channel = status.channel.value
    if is_delivery(status) and facts.delivered_at(channel) is None:
        first_anywhere = not facts.delivered_channels()
        setattr(facts, f"delivered_{channel}", status.occurred_at)
        if cohort is not None:
            owed.append(CounterKey(cohort.day, cohort.type, channel, DELIVERED))
            if first_anywhere:
                owed.append(CounterKey(cohort.day, cohort.type, ANY, REACHED))
    if status.status is DeliveryState.CLICKED and facts.clicked_at is None:
        facts.clicked_at, facts.clicked_channel = status.occurred_at, channel
        if cohort is not None:
            owed.append(CounterKey(cohort.day, cohort.type, channel, CLICKED))
    state_key = status_state_counter(status, cohort)
    if state_key is not None:
        if cohort is None:
            # Held until the notification (its type and day) is known, like the funnel facts.
            facts.pending_failures.append([state_key.channel, state_key.metric, state_key.reason])
        else:
            owed.append(state_key)
    return owed


def observe_read(facts: NotificationFacts, read_at: datetime) -> list[CounterKey]:
    """Apply a read of the notification: ``read`` counts the first read only."""
    if facts.read_at is not None:
        return []
    facts.read_at = read_at
    cohort = facts.cohort
    if cohort is None:
        return []
    return [CounterKey(cohort.day, cohort.type, ANY, READ)]
