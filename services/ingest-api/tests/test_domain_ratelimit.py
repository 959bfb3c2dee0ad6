"""Fixed- and sliding-window rate-limit arithmetic."""

from __future__ import annotations

import pytest

from clarion_ingest.domain.ratelimit import fixed_window, sliding_window, window_index


def test_window_index_is_aligned() -> None:
    assert window_index(119.9, 60) == 1
    assert window_index(120.0, 60) == 2


def test_fixed_window_allows_up_to_limit() -> None:
    decision = fixed_window(count=10, limit=10, now=125.0, window_seconds=60)
    assert decision.allowed
    assert decision.remaining == 0


def test_fixed_window_refuses_over_limit_until_window_end() -> None:
    decision = fixed_window(count=11, limit=10, now=125.0, window_seconds=60)
    assert not decision.allowed
    assert decision.retry_after == 55  # window [120, 180)


def test_fixed_window_retry_after_is_at_least_one_second() -> None:
    assert fixed_window(count=2, limit=1, now=179.9, window_seconds=60).retry_after == 1


def test_zero_limit_disables_limiting() -> None:
    assert fixed_window(count=10**6, limit=0, now=0, window_seconds=60).allowed
    assert sliding_window(10**6, 10**6, 0, now=0, window_seconds=60).allowed


def test_sliding_window_weighs_previous_window() -> None:
    # 30 s into the window: previous counts half.
    allowed = sliding_window(previous=10, current=5, limit=10, now=90.0, window_seconds=60)
    assert allowed.allowed
    assert allowed.remaining == 0
    refused = sliding_window(previous=10, current=6, limit=10, now=90.0, window_seconds=60)
    assert not refused.allowed


def test_sliding_window_retry_after_is_when_estimate_drops_to_limit() -> None:
    # previous=10, current=6, limit=10: need 10*(1-t/60)+6 <= 10  =>  t >= 36; now t=30.
    decision = sliding_window(previous=10, current=6, limit=10, now=90.0, window_seconds=60)
    assert decision.retry_after == 6
    # After waiting that long (same window), the estimate is within the limit.
    later = sliding_window(previous=10, current=6, limit=10, now=96.0, window_seconds=60)
    assert later.allowed


def test_sliding_window_over_limit_in_current_window_waits_for_window_end() -> None:
    decision = sliding_window(previous=0, current=11, limit=10, now=90.0, window_seconds=60)
    assert not decision.allowed
    assert decision.retry_after == 30


@pytest.mark.parametrize("now", [60.0, 75.5, 119.99])
def test_sliding_window_never_allows_more_than_a_fixed_window_would(now: float) -> None:
    assert not sliding_window(0, 11, 10, now, 60).allowed
