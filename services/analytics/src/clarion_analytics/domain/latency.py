"""Latency distributions as fixed log-scale histograms, and percentiles read from them.

Why histograms and not raw samples: analytics keeps one row per
(minute, stage, channel, type, bucket) that is non-empty, so storage grows with
the number of distinct latencies *buckets* (at most :data:`BUCKET_COUNT`), not
with traffic, and two histograms merge by adding counts: a day is the sum of its
minutes, a range the sum of its days, and a redelivered batch can never be
"averaged in" twice because the rows are only incremented once per message
(idempotency is enforced before the increment). A capped sample would bias the
tail (p99) exactly when traffic is highest.

Layout (milliseconds): bucket 0 is ``[0, LOW_MS)``; buckets ``1..BUCKET_COUNT``
split ``[LOW_MS, HIGH_MS)`` into :data:`BUCKETS_PER_DECADE` geometric buckets per
decade, each ``GROWTH`` (≈1.122) times wider than the previous one; the last
bucket ``BUCKET_COUNT + 1`` is ``[HIGH_MS, inf)``. A percentile estimated from the
histogram therefore lies in the same bucket as the exact nearest-rank percentile,
i.e. within a factor ``GROWTH`` of it (≤12.2 % relative error) for latencies
between 0.1 ms and about 27.8 hours. This is the scheme of HdrHistogram /
Prometheus native histograms (exponential buckets), simplified to a fixed base.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

LOW_MS = 0.1
"""Lower bound of the first regular bucket (100 µs); smaller values share bucket 0."""
DECADES = 9
"""Decades covered by regular buckets: ``LOW_MS`` .. ``LOW_MS * 10**DECADES`` (≈27.8 h)."""
BUCKETS_PER_DECADE = 20
"""Regular buckets per power of ten."""
BUCKET_COUNT = DECADES * BUCKETS_PER_DECADE
"""Number of regular buckets (180); indices run 0 .. ``BUCKET_COUNT + 1``."""
HIGH_MS: float = LOW_MS * 10.0**DECADES
"""Start of the overflow bucket (1e8 ms)."""
GROWTH: float = 10 ** (1 / BUCKETS_PER_DECADE)
"""Ratio of a regular bucket's upper to lower bound."""
OVERFLOW = BUCKET_COUNT + 1
"""Index of the overflow bucket ``[HIGH_MS, inf)``."""


def bucket_bounds(index: int) -> tuple[float, float]:
    """``(lower, upper)`` bounds in ms of bucket ``index`` (lower inclusive, upper exclusive).

    Raises:
        ValueError: ``index`` is outside ``0 .. OVERFLOW``.
    """
    if index == 0:
        return 0.0, LOW_MS
    if index == OVERFLOW:
        return HIGH_MS, math.inf
    if not 0 < index < OVERFLOW:
        raise ValueError(f"bucket index {index} outside 0..{OVERFLOW}")
    lower = LOW_MS * 10 ** ((index - 1) / BUCKETS_PER_DECADE)
    upper = LOW_MS * 10 ** (index / BUCKETS_PER_DECADE)
    return lower, upper


def bucket_index(latency_ms: float) -> int:
    """The bucket holding ``latency_ms`` (negative values, from clock skew, count as 0).

    Raises:
        ValueError: ``latency_ms`` is NaN.
    """
    if math.isnan(latency_ms):
        raise ValueError("latency is NaN")
    if latency_ms < LOW_MS:
        return 0
    if latency_ms >= HIGH_MS:
        return OVERFLOW
    index = math.floor(BUCKETS_PER_DECADE * math.log10(latency_ms / LOW_MS)) + 1
    index = min(max(index, 1), BUCKET_COUNT)
    # log10 rounding can land one bucket off right at a boundary; the bounds decide.
    while index > 1 and latency_ms < bucket_bounds(index)[0]:
        index -= 1
    while index < BUCKET_COUNT and latency_ms >= bucket_bounds(index)[1]:
        index += 1
    return index


def nearest_rank(count: int, quantile: float) -> int:
    """The 1-based nearest rank of ``quantile`` among ``count`` sorted values: ``ceil(q·n)``.

    Raises:
        ValueError: ``quantile`` not in ``(0, 1]`` or ``count < 1``.
    """
    if not 0.0 < quantile <= 1.0:
        raise ValueError(f"quantile {quantile} not in (0, 1]")
    if count < 1:
        raise ValueError("no values")
    return max(1, math.ceil(quantile * count - 1e-9))


def percentile(histogram: Mapping[int, int], quantile: float) -> float | None:
    """Estimate the ``quantile`` (0 < q <= 1) of the values counted in ``histogram``, in ms.

    ``histogram`` maps bucket index to count (absent or zero buckets are empty).
    The estimate follows the nearest-rank definition: it finds the bucket holding
    the ``ceil(q·n)``-th smallest value and interpolates geometrically inside it
    (linearly in bucket 0); in the overflow bucket it answers ``HIGH_MS``. Returns
    ``None`` for an empty histogram.

    Raises:
        ValueError: ``quantile`` outside ``(0, 1]``, a negative count or a bad index.
    """
    items = sorted((i, c) for i, c in histogram.items() if c)
    if any(c < 0 for _, c in items):
        raise ValueError("negative bucket count")
    total = sum(c for _, c in items)
    if total == 0:
        return None
    rank = nearest_rank(total, quantile)
    seen = 0
    for index, count in items:
        if seen + count >= rank:
            lower, upper = bucket_bounds(index)
            position = (rank - seen - 0.5) / count  # in (0, 1): centre of the value's slot
            if index == OVERFLOW:
                return HIGH_MS
            if index == 0:
                return float(lower + (upper - lower) * position)
            return float(lower * (upper / lower) ** position)
        seen += count
    raise AssertionError("rank beyond total")  # pragma: no cover - total >= rank by construction


def histogram_of(latencies_ms: Iterable[float]) -> dict[int, int]:
    """Count ``latencies_ms`` into buckets: ``{bucket index: count}``."""
    out: dict[int, int] = {}
    for value in latencies_ms:
        index = bucket_index(value)
        out[index] = out.get(index, 0) + 1
    return out


def merge(histograms: Iterable[Mapping[int, int]]) -> dict[int, int]:
    """Sum histograms bucket by bucket."""
    out: dict[int, int] = {}
    for histogram in histograms:
        for index, count in histogram.items():
            out[index] = out.get(index, 0) + count
    return out


@dataclass(frozen=True)
class Percentiles:
    """p50/p90/p99 in milliseconds (``None`` when there were no samples) and the sample count."""

    count: int
    p50_ms: float | None
    p90_ms: float | None
    p99_ms: float | None


def summarize(histogram: Mapping[int, int]) -> Percentiles:
    """p50, p90 and p99 of ``histogram`` (see :func:`percentile`)."""
    return Percentiles(
        count=sum(histogram.values()),
        p50_ms=percentile(histogram, 0.50),
        p90_ms=percentile(histogram, 0.90),
        p99_ms=percentile(histogram, 0.99),
    )
