"""Funnel arithmetic: step counts to conversion rates.

The delivery funnel is created -> reached (delivered on any channel) -> read ->
clicked; each channel has its own routed -> delivered -> clicked funnel. Rates
are fractions in ``[0, 1]`` (``None`` when the denominator is zero). Counts come
from cohort-attributed counters (see :mod:`clarion_analytics.domain.counters`),
so later steps are subsets of earlier ones except for messages held back while
their notification was unknown.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from clarion_analytics.domain.counters import (
    ANY,
    CHANNELS,
    CLICKED,
    CREATED,
    DELIVERED,
    REACHED,
    READ,
    ROUTED,
)

OVERALL_STEPS: tuple[str, ...] = (CREATED, REACHED, READ, CLICKED)
"""Steps of the overall funnel, in order."""
CHANNEL_STEPS: tuple[str, ...] = (ROUTED, DELIVERED, CLICKED)
"""Steps of a channel's funnel, in order."""


def rate(part: int, whole: int) -> float | None:
    """``part / whole`` or ``None`` when ``whole`` is 0."""
    return part / whole if whole else None


@dataclass(frozen=True)
class FunnelStep:
    """One step: its count, the fraction of the previous step and of the first step."""

    name: str
    count: int
    from_previous: float | None
    from_first: float | None


def funnel(steps: Sequence[tuple[str, int]]) -> list[FunnelStep]:
    """Conversion rates of ordered ``(name, count)`` steps.

    Raises:
        ValueError: a count is negative.
    """
    out: list[FunnelStep] = []
    first = steps[0][1] if steps else 0
    previous: int | None = None
    for name, count in steps:
        if count < 0:
            raise ValueError(f"negative count for {name}")
        out.append(
            FunnelStep(
                name=name,
                count=count,
                from_previous=None if previous is None else rate(count, previous),
                from_first=rate(count, first),
            )
        )
        previous = count
    return out


def overall_funnel(totals: Mapping[tuple[str, str], int]) -> list[FunnelStep]:
    """The overall funnel from ``{(metric, channel): count}`` totals.

    ``clicked`` is summed over channels (each notification counts its first click once).
    """
    clicked = sum(totals.get((CLICKED, ch), 0) for ch in CHANNELS)
    counts = {
        CREATED: totals.get((CREATED, ANY), 0),
        REACHED: totals.get((REACHED, ANY), 0),
        READ: totals.get((READ, ANY), 0),
        CLICKED: clicked,
    }
    return funnel([(step, counts[step]) for step in OVERALL_STEPS])


def channel_funnel(totals: Mapping[tuple[str, str], int], channel: str) -> list[FunnelStep]:
    """The routed -> delivered -> clicked funnel of one channel."""
    return funnel([(step, totals.get((step, channel), 0)) for step in CHANNEL_STEPS])
