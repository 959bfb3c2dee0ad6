"""Log-scale latency histograms: bucket layout and percentiles against exact values."""

from __future__ import annotations

import math
from fractions import Fraction

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion_analytics.domain.latency import (
    BUCKET_COUNT,
    GROWTH,
    HIGH_MS,
    LOW_MS,
    OVERFLOW,
    bucket_bounds,
    bucket_index,
    histogram_of,
    merge,
    nearest_rank,
    percentile,
    summarize,
)

QUANTILES = ("0.5", "0.9", "0.99", "0.999", "1", "0.01")

# Latencies spread over the whole range: log-uniform in [1e-3, 1e9] ms, plus exact zeros.
log_uniform = st.floats(min_value=-3.0, max_value=9.0).map(lambda e: 10.0**e)
latencies = st.one_of(log_uniform, st.just(0.0), st.floats(min_value=0.0, max_value=5_000.0))


def exact_nearest_rank(values: list[float], q: str) -> float:
    """Reference: the ceil(q*n)-th smallest value, with q as an exact fraction."""
    ordered = sorted(values)
    rank = max(1, math.ceil(Fraction(q) * len(ordered)))
    return ordered[rank - 1]


def test_bucket_bounds_tile_the_line() -> None:
    assert bucket_bounds(0) == (0.0, LOW_MS)
    assert bucket_bounds(OVERFLOW) == (HIGH_MS, math.inf)
    for index in range(1, BUCKET_COUNT + 1):
        lower, upper = bucket_bounds(index)
        assert upper / lower == pytest.approx(GROWTH)
        if index > 1:
            assert bucket_bounds(index - 1)[1] == pytest.approx(lower)
    with pytest.raises(ValueError, match="outside"):
        bucket_bounds(OVERFLOW + 1)


def test_bucket_index_edges() -> None:
    assert bucket_index(-5.0) == 0  # clock skew counts as zero latency
    assert bucket_index(0.0) == 0
    assert bucket_index(LOW_MS) == 1
    assert bucket_index(1.0) == 21  # one decade above LOW_MS, 20 buckets per decade
    assert bucket_index(HIGH_MS) == OVERFLOW
    assert bucket_index(1e12) == OVERFLOW
    with pytest.raises(ValueError, match="NaN"):
        bucket_index(math.nan)


@given(st.floats(min_value=0.0, max_value=1e10, allow_nan=False))
def test_value_lies_within_its_bucket(value: float) -> None:
    lower, upper = bucket_bounds(bucket_index(value))
    assert lower <= value < upper or (value >= lower and bucket_index(value) == BUCKET_COUNT)


@given(st.floats(min_value=0.0, max_value=1e9), st.floats(min_value=0.0, max_value=1e9))
def test_bucket_index_is_monotonic(a: float, b: float) -> None:
    if a <= b:
        assert bucket_index(a) <= bucket_index(b)


@settings(max_examples=300, deadline=None)
@given(st.lists(latencies, min_size=1, max_size=400), st.sampled_from(QUANTILES))
def test_percentile_matches_exact_nearest_rank_bucket(values: list[float], q: str) -> None:
    """The estimate lies in the exact percentile's bucket, so within one bucket's ratio."""
    exact = exact_nearest_rank(values, q)
    estimate = percentile(histogram_of(values), float(q))
    assert estimate is not None
    assert bucket_index(estimate) == bucket_index(exact)
    if LOW_MS <= exact < HIGH_MS:
        assert exact / GROWTH <= estimate <= exact * GROWTH
        assert abs(estimate - exact) / exact <= GROWTH - 1  # at most 12.2 %


@settings(max_examples=100, deadline=None)
@given(st.lists(latencies, min_size=1, max_size=200), st.lists(latencies, max_size=200))
def test_merged_histograms_equal_histogram_of_union(a: list[float], b: list[float]) -> None:
    merged = merge([histogram_of(a), histogram_of(b)])
    assert merged == histogram_of(a + b)
    for q in (0.5, 0.9, 0.99):
        assert percentile(merged, q) == percentile(histogram_of(a + b), q)


def test_percentile_of_identical_values_is_inside_their_bucket() -> None:
    hist = histogram_of([250.0] * 1000)
    lower, upper = bucket_bounds(bucket_index(250.0))
    for q in (0.5, 0.9, 0.99):
        value = percentile(hist, q)
        assert value is not None
        assert lower <= value < upper


def test_percentile_errors_and_empty() -> None:
    assert percentile({}, 0.5) is None
    assert percentile({3: 0}, 0.5) is None
    with pytest.raises(ValueError, match="quantile"):
        percentile({3: 1}, 0.0)
    with pytest.raises(ValueError, match="quantile"):
        percentile({3: 1}, 1.5)
    with pytest.raises(ValueError, match="negative"):
        percentile({3: 2, 4: -1}, 0.5)
    assert percentile({OVERFLOW: 3}, 0.99) == HIGH_MS


def test_nearest_rank() -> None:
    assert nearest_rank(10, 0.9) == 9  # 0.9 * 10 is 9.000000000000002 in binary floating point
    assert nearest_rank(10, 0.91) == 10
    assert nearest_rank(1, 0.01) == 1
    assert nearest_rank(200, 0.99) == 198
    with pytest.raises(ValueError, match="no values"):
        nearest_rank(0, 0.5)


def test_summarize_counts_and_orders_percentiles() -> None:
    values = [float(v) for v in range(1, 1001)]
    p = summarize(histogram_of(values))
    assert p.count == 1000
    assert p.p50_ms is not None
    assert p.p90_ms is not None
    assert p.p99_ms is not None
    assert p.p50_ms <= p.p90_ms <= p.p99_ms
    assert 500 / GROWTH <= p.p50_ms <= 500 * GROWTH
    assert 990 / GROWTH <= p.p99_ms <= 990 * GROWTH
