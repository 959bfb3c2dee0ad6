"""Presence: newest report per instance wins; flips become per-minute deltas."""

from __future__ import annotations

from datetime import timedelta

from analytics_messages import T0, make_presence

from clarion_analytics.domain.presence import (
    OnlineTracker,
    SessionState,
    newer_state,
    user_online,
)
from clarion_analytics.domain.timebuckets import floor_minute
from clarion_contracts.v1 import PresenceStatus


def test_newer_state_ignores_stale_and_repeated_reports() -> None:
    online = make_presence("u", PresenceStatus.ONLINE, at=T0)
    state = newer_state(None, online)
    assert state == SessionState(online=True, sessions=1, updated_at=T0)
    assert newer_state(state, online) is None  # same report again
    stale = make_presence("u", PresenceStatus.OFFLINE, at=T0 - timedelta(seconds=1))
    assert newer_state(state, stale) is None
    later = make_presence("u", PresenceStatus.OFFLINE, at=T0 + timedelta(seconds=1))
    assert newer_state(state, later) == SessionState(False, 0, T0 + timedelta(seconds=1))


def test_user_is_online_while_any_instance_says_so() -> None:
    assert not user_online([])
    assert user_online([SessionState(False, 0, T0), SessionState(True, 2, T0)])
    assert not user_online([SessionState(False, 0, T0)])


def test_tracker_records_only_real_flips() -> None:
    tracker = OnlineTracker()
    tracker.flip(T0, was_online=False, is_online=True)
    tracker.flip(T0 + timedelta(seconds=10), was_online=True, is_online=True)
    tracker.flip(T0 + timedelta(seconds=20), was_online=True, is_online=False)
    tracker.flip(T0 + timedelta(minutes=3), was_online=False, is_online=True)
    m0 = tracker.minutes[floor_minute(T0)]
    assert (m0.delta, m0.went_online, m0.went_offline) == (0, 1, 1)
    assert tracker.minutes[floor_minute(T0 + timedelta(minutes=3))].delta == 1
    assert len(tracker.minutes) == 2
