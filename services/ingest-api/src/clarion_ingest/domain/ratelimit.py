"""Rate-limit arithmetic: fixed and sliding windows (counters live in Redis).

Fixed window: requests are counted per aligned window ``[k*w, (k+1)*w)``; the
request is refused when the window's count exceeds the limit, and may retry when
the window ends.

Sliding window (the "sliding window counter" approximation used by Cloudflare and
nginx-style limiters): the estimate is ``previous * (1 - elapsed / w) + current``
where ``elapsed`` is the time into the current window; it smooths the burst a
fixed window allows at window boundaries while needing only two counters.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Literal

Strategy = Literal["fixed", "sliding"]


@dataclass(frozen=True)
class RateDecision:
    """Outcome of one rate-limit check.

    Attributes:
        allowed: whether the request may proceed.
        limit: requests allowed per window.
        remaining: requests left in the window after this one (never negative).
        retry_after: whole seconds to wait before retrying (0 when allowed).
    """

    allowed: bool
    limit: int
    remaining: int
    retry_after: int


def window_index(now: float, window_seconds: int) -> int:
    """The aligned window number ``floor(now / w)`` of a UNIX time in seconds."""
    return int(now // window_seconds)


def fixed_window(count: int, limit: int, now: float, window_seconds: int) -> RateDecision:
    """Decide a fixed-window check.

    Args:
        count: requests counted in the current window, this one included.
        limit: requests allowed per window (``0`` disables the limit).
        now: current UNIX time in seconds.
        window_seconds: window length in seconds.
    """
    if limit <= 0:
        return RateDecision(True, 0, 0, 0)
    if count <= limit:
        return RateDecision(True, limit, limit - count, 0)
    window_end = (window_index(now, window_seconds) + 1) * window_seconds
    return RateDecision(False, limit, 0, max(1, math.ceil(window_end - now)))


def sliding_window(
    previous: int, current: int, limit: int, now: float, window_seconds: int
) -> RateDecision:
    """Decide a sliding-window-counter check.

    Args:
        previous: requests counted in the previous aligned window.
        current: requests counted in the current window, this one included.
        limit: requests allowed per sliding window (``0`` disables the limit).
        now: current UNIX time in seconds.
        window_seconds: window length in seconds.

    The retry delay is the time until the weighted estimate drops to the limit
    (the previous window's weight decays linearly), or the window end when the
    current window alone is over the limit.
    """
    if limit <= 0:
        return RateDecision(True, 0, 0, 0)
    start = window_index(now, window_seconds) * window_seconds
    elapsed = now - start
    weight = 1.0 - elapsed / window_seconds
    estimate = previous * weight + current
    if estimate <= limit:
        return RateDecision(True, limit, max(0, math.floor(limit - estimate)), 0)
    if current > limit or previous == 0:
        wait = window_seconds - elapsed
    else:
        # previous * (1 - t/w) + current <= limit  =>  t >= w * (1 - (limit - current)/previous)
        needed = window_seconds * (1.0 - (limit - current) / previous)
        wait = needed - elapsed
    return RateDecision(False, limit, 0, max(1, math.ceil(wait)))
