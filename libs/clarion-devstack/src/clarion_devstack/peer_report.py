"""Figures of the peer benchmark: percentiles, medians of rounds, ratios, the report table.

``services/realtime-gateway/bench/peer_bench.py`` measures Clarion's live path
(a ``clarion.notifications.v1`` record in, a WebSocket frame out) next to the servers
users would otherwise pick. This module holds its pure parts, so ``clarion bench`` can
render the table of ``docs/benchmarks.md`` from the JSON file the driver writes.

Shapes: a *round* is ``{metric: number | None}`` for one system; ``rounds`` is
``{system: [round, ...]}``; a *summary* is ``{system: {metric: median | None}}``.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Mapping, Sequence
from typing import Any

CLARION = "clarion"
NODE = "node-socketio"
PYTHON_SOCKETIO = "python-socketio"
SYSTEMS: tuple[str, ...] = (CLARION, NODE, PYTHON_SOCKETIO)
"""The systems compared, in the order rounds alternate (A B C A B C ...)."""

SYSTEM_LABELS: Mapping[str, str] = {
    CLARION: "Clarion realtime-gateway",
    NODE: "Node socket.io 4 + @socket.io/redis-adapter + kafkajs",
    PYTHON_SOCKETIO: "python-socketio 5 + aiokafka",
}

METRICS: tuple[tuple[str, str, str, bool], ...] = (
    ("frames_per_s", "frames/s at full speed", "{:,.0f}", True),
    ("server_cpu_us_per_frame", "server CPU µs per frame", "{:,.0f}", False),
    ("latency_p50_ms", "p50 ms record produced → frame at client", "{:,.1f}", False),
    ("latency_p99_ms", "p99 ms record produced → frame at client", "{:,.1f}", False),
    ("idle_kib_per_connection", "KiB per idle connection", "{:,.1f}", False),
    ("recovered_fraction", "fraction of missed frames recovered on reconnect", "{:.3f}", True),
    ("redis_cpu_us_per_frame", "Redis CPU µs per frame (shared)", "{:,.0f}", False),
    ("broker_cpu_us_per_frame", "broker CPU µs per frame (shared)", "{:,.0f}", False),
    ("client_cpu_us_per_frame", "load-client CPU µs per frame (same code)", "{:,.0f}", False),
)
"""(metric key, label, number format, higher is better) of each figure reported."""


def percentile(values: Sequence[float], q: float) -> float | None:
    """The ``q``-th percentile (0-100) of ``values`` by linear interpolation between ranks.

    The same definition as ``numpy.percentile``'s default ("linear", type 7 of Hyndman
    and Fan). ``None`` for an empty sequence.

    Raises:
        ValueError: ``q`` outside 0..100.
    """
    if not 0 <= q <= 100:
        raise ValueError(f"percentile {q} outside 0..100")
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = math.floor(rank)
    high = math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def median_of(values: Sequence[float | None]) -> float | None:
    """Median of the values that are not ``None`` (``None`` when there are none)."""
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    """``numerator / denominator``, or ``None`` when either is missing or the divisor is 0."""
    if numerator is None or denominator is None or denominator == 0:
        return None
    return numerator / denominator


def summarise(rounds: Mapping[str, Sequence[Mapping[str, Any]]]) -> dict[str, dict[str, Any]]:
    """Median of every metric over each system's rounds.

    Recovery counts (``recovery_expected``, ``recovery_recovered``, ``recovery_missed``,
    ``recovery_duplicated``, ``reconnect_retries``: handshakes refused and retried when
    the clients reconnected) and ``frames_missing`` (full-speed records whose frame never
    arrived) are summed over the rounds instead, so no loss is hidden
    by a median.
    """
    summary: dict[str, dict[str, Any]] = {}
    for system, runs in rounds.items():
        row: dict[str, Any] = {"rounds": len(runs)}
        for key, _label, _fmt, _higher in METRICS:
            row[key] = median_of([r.get(key) for r in runs])
        for key in (
            "recovery_expected",
            "recovery_recovered",
            "recovery_missed",
            "recovery_duplicated",
            "reconnect_retries",
            "frames_missing",
        ):
            row[key] = sum(int(r.get(key) or 0) for r in runs)
        summary[system] = row
    return summary


def ratios(summary: Mapping[str, Mapping[str, Any]]) -> dict[str, dict[str, float | None]]:
    """``{"clarion/<peer>": {metric: Clarion's median / the peer's}}`` for each peer."""
    mine = summary.get(CLARION, {})
    out: dict[str, dict[str, float | None]] = {}
    for peer in SYSTEMS[1:]:
        theirs = summary.get(peer)
        if theirs is None:
            continue
        out[f"{CLARION}/{peer}"] = {
            key: ratio(mine.get(key), theirs.get(key)) for key, *_ in METRICS
        }
    return out


def _cell(value: Any, fmt: str) -> str:
    return "-" if value is None else fmt.format(value)


def render_peer_section(figures: Mapping[str, Any]) -> list[str]:
    """Markdown lines of the peer comparison for ``docs/benchmarks.md``: ratios first.

    ``figures`` is the JSON the driver writes: ``summary``, ``ratios``, ``config``,
    ``duties`` and ``left_out`` (what the measurements do not include).
    """
    summary: Mapping[str, Mapping[str, Any]] = figures.get("summary") or {}
    if not summary:
        return []
    config: Mapping[str, Any] = figures.get("config") or {}
    peers = [p for p in SYSTEMS[1:] if p in summary]
    lines = [
        "## Live path next to its peers",
        "",
        "`services/realtime-gateway/bench/peer_bench.py`: a `clarion.notifications.v1` record",
        "produced to the embedded broker → consumed by one server process → a WebSocket frame",
        "at each connected client. "
        f"{config.get('users', '?'):,} users, {config.get('records', '?'):,} records at "
        f"full speed, p50/p99 at {config.get('rate', '?')} records/s, "
        f"{config.get('idle_connections', '?'):,} idle connections for memory; "
        f"medians of {config.get('rounds', '?')} alternating rounds.",
        "",
        "| figure | " + " | ".join(f"Clarion / {p}" for p in peers) + " |",
        "| --- | " + " | ".join("---" for _ in peers) + " |",
    ]
    ratio_rows: Mapping[str, Mapping[str, Any]] = figures.get("ratios") or {}
    for key, label, _fmt, higher in METRICS:
        cells = [ratio_rows.get(f"{CLARION}/{p}", {}).get(key) for p in peers]
        if all(c is None for c in cells):
            continue
        better = "higher is better" if higher else "lower is better"
        lines.append(
            f"| {label} ({better}) | " + " | ".join(_cell(c, "{:.2f}×") for c in cells) + " |"
        )
    systems = [s for s in SYSTEMS if s in summary]
    lines += [
        "",
        "| figure | " + " | ".join(SYSTEM_LABELS[s] for s in systems) + " |",
        "| --- | " + " | ".join("---" for _ in systems) + " |",
    ]
    for key, label, fmt, _higher in METRICS:
        lines.append(
            f"| {label} | " + " | ".join(_cell(summary[s].get(key), fmt) for s in systems) + " |"
        )
    lines.append(
        "| recovery: missed / recovered / duplicated / handshakes retried (sum of rounds) | "
        + " | ".join(
            f"{summary[s].get('recovery_missed', 0)} / {summary[s].get('recovery_recovered', 0)}"
            f" / {summary[s].get('recovery_duplicated', 0)}"
            f" / {summary[s].get('reconnect_retries', 0)}"
            for s in systems
        )
        + " |"
    )
    lines.append(
        "| full-speed records whose frame never arrived (sum of rounds) | "
        + " | ".join(str(summary[s].get("frames_missing", 0)) for s in systems)
        + " |"
    )
    lines.append("")
    for title, key in (("Duties of each system", "duties"), ("Left out", "left_out")):
        items = figures.get(key) or []
        if items:
            lines += [f"{title}:", ""] + [f"* {item}" for item in items] + [""]
    return lines
