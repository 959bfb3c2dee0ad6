"""Users online over time, from presence events.

A user is online while at least one gateway instance last reported them
``online``. Each instance's report replaces its previous one only when it is
newer (``occurred_at``), so a redelivered or late old report cannot flip a user
back. Users online are stored as per-UTC-minute deltas (+1 when a user comes
online, -1 when they go offline); the level at a minute is the running sum.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime

from clarion_analytics.domain.timebuckets import floor_minute
from clarion_contracts.v1 import PresenceEvent, PresenceStatus


@dataclass(frozen=True)
class SessionState:
    """An instance's latest report about one user."""

    online: bool
    sessions: int
    updated_at: datetime


def newer_state(current: SessionState | None, event: PresenceEvent) -> SessionState | None:
    """The state after ``event``, or ``None`` when the event is not newer than ``current``."""
    if current is not None and event.occurred_at <= current.updated_at:
        return None
    return SessionState(
        online=event.status is PresenceStatus.ONLINE,
        sessions=event.sessions,
        updated_at=event.occurred_at,
    )


def user_online(states: Iterable[SessionState]) -> bool:
    """True when any instance reports the user online."""
    return any(s.online for s in states)


@dataclass
class MinuteDelta:
    """Net change of users online in one minute, and how many came online / went offline."""

    delta: int = 0
    went_online: int = 0
    went_offline: int = 0


@dataclass
class OnlineTracker:
    """Collects user-level online/offline flips into per-minute deltas.

    Deltas add up commutatively, so batches of different users may be applied in any
    order (different partitions, several analytics instances) and the level at any
    minute — the sum of all deltas up to it — is still exact. One user's events share
    a partition (key ``user_id``) and so arrive in order.
    """

    minutes: dict[datetime, MinuteDelta] = field(default_factory=dict)

    def flip(self, at: datetime, *, was_online: bool, is_online: bool) -> None:
        """Record the user's state change at ``at`` (no-op when it did not change)."""
        if was_online == is_online:
            return
        stats = self.minutes.setdefault(floor_minute(at), MinuteDelta())
        if is_online:
            stats.delta += 1
            stats.went_online += 1
        else:
            stats.delta -= 1
            stats.went_offline += 1
