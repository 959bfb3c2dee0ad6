"""``clarion bench``: the whole of Clarion under load, on the embedded stack.

Measures, with ``runs`` repetitions and medians: the time from ``POST /v1/events``
accepted to the frame at a connected WebSocket client at 100 and 1,000 events/s;
the highest rate sustained with p99 under 1 s and nothing lost; notifications/s
through fan-out to many recipients; notifications lost or duplicated; and peak
RSS per service. Writes ``docs/benchmarks.json`` and the table in
``docs/benchmarks.md``. Each fixed-rate run, the ramp and the fan-out run on freshly
started services and topics of their own (see :func:`_phase`).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import statistics
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console

from clarion_devstack.drain import wait_drained
from clarion_devstack.launch import LaunchConfig, Ports, service_specs
from clarion_devstack.loadgen import RateResult, run_at_rate, shaped_events
from clarion_devstack.observer import LatencyObserver
from clarion_devstack.peer_report import render_peer_section
from clarion_devstack.replay.client import ReplayClient
from clarion_devstack.replay.sources import read_events, resolve_source
from clarion_devstack.stack import Stack, StackConfig, StackInfo, find_project_root
from clarion_devstack.supervisor import Supervisor

app = typer.Typer()


def peak_rss_mib(pid: int) -> float | None:
    """Peak resident set size (``VmHWM``) of a process in MiB, from /proc."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:
        return None
    return None


def machine() -> dict[str, Any]:
    """What the benchmark ran on."""
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "system": f"{platform.system()} {platform.release()}",
    }


def _median(values: list[float | None]) -> float | None:
    real = [v for v in values if v is not None]
    return statistics.median(real) if real else None


@dataclass
class _Phase:
    """The services of one benchmark phase, on topics of their own, and their clients."""

    config: LaunchConfig
    client: ReplayClient
    observer: LatencyObserver
    users: list[str]
    """The connected users, who have profiles."""


@contextlib.asynccontextmanager
async def _phase(
    info: StackInfo, data_dir: Path, users: int, peak_rss: dict[str, float]
) -> AsyncIterator[_Phase]:
    """Start the six services on a new topic and key prefix, connect ``users`` clients.

    Every phase begins with empty topics: Tansu's memory engine lists every batch
    stored in a partition on each fetch, so its cost grows with all that was produced
    before (Apache Kafka's does not), and one phase's load would slow the next.
    ``peak_rss`` keeps each service's highest peak RSS (MiB) over the phases.
    """
    from clarion_devstack.commands.replay import default_api_key

    suffix = uuid.uuid4().hex[:6]
    config = LaunchConfig(
        info=info,
        ports=Ports.free(),
        state_dir=data_dir,
        environment="development",
        topic_prefix=f"bench{suffix}.",
        redis_prefix=f"bench{suffix}:",
        extra_env={"CLARION_LOG_LEVEL": "WARNING"},
    )
    supervisor = Supervisor(data_dir / "logs", lambda *_: None)
    try:
        await supervisor.start_all(service_specs(config), ready_timeout=120)
        watched = [f"bench-user-{n:05d}" for n in range(users)]
        observer = LatencyObserver(f"ws://127.0.0.1:{config.ports.gateway}/v1/ws", watched)
        await observer.start(timeout=60)
        try:
            async with ReplayClient(
                f"http://127.0.0.1:{config.ports.ingest}", default_api_key()
            ) as client:
                await client.ensure_profiles(watched)
                yield _Phase(config, client, observer, watched)
        finally:
            await observer.stop()
        for name in supervisor.names:
            pid = supervisor.pid(name)
            rss = peak_rss_mib(pid) if pid is not None else None
            if rss is not None:
                peak_rss[name] = max(rss, peak_rss.get(name, 0.0))
    finally:
        await supervisor.stop()


async def _bench(console: Console, runs: int, users: int, duration: float) -> dict[str, Any]:
    data_dir = find_project_root() / ".clarion" / "bench"
    stack = Stack(StackConfig(data_dir=data_dir / "stack"))
    info = await asyncio.to_thread(stack.start)
    result: dict[str, Any] = {"machine": machine(), "started": datetime.now(UTC).isoformat()}
    peak_rss: dict[str, float] = {}
    templates = list(read_events(resolve_source("default")))
    try:
        fixed: dict[str, Any] = {}
        for rate in (100, 1000):
            samples: list[RateResult] = []
            for run in range(runs):
                # Each run on fresh services and topics, so the runs are alike (see _phase).
                async with _phase(info, data_dir, users, peak_rss) as ph:
                    warm = shaped_events(templates, ph.users, 500, seed=1)
                    await run_at_rate(ph.client, ph.observer, warm, 250)
                    events = shaped_events(templates, ph.users, int(rate * duration), seed=run + 2)
                    samples.append(await run_at_rate(ph.client, ph.observer, events, rate))
                    console.print(f"{rate}/s run {run + 1}: {samples[-1]}")
            fixed[str(rate)] = {
                "p50_ms": _median([s.p50_ms for s in samples]),
                "p95_ms": _median([s.p95_ms for s in samples]),
                "p99_ms": _median([s.p99_ms for s in samples]),
                "achieved_rate": _median([s.achieved_rate for s in samples]),
                "lost": sum(s.lost for s in samples),
                "duplicated": sum(s.duplicated for s in samples),
                "runs": [asdict(s) for s in samples],
            }
        result["fixed_rates"] = fixed
        sustained = 0.0
        ramp: list[dict[str, Any]] = []
        async with _phase(info, data_dir, users, peak_rss) as ph:
            for rate in (250, 500, 750, 1000, 1500, 2000, 3000, 4000, 6000, 8000):
                events = shaped_events(templates, ph.users, int(rate * 5), seed=rate)
                sample = await run_at_rate(ph.client, ph.observer, events, rate)
                ramp.append(asdict(sample))
                console.print(f"ramp {rate}/s: {sample}")
                ok = (
                    sample.p99_ms is not None
                    and sample.p99_ms < 1000
                    and sample.lost == 0
                    and sample.achieved_rate >= 0.9 * rate
                )
                if not ok:
                    break
                sustained = sample.achieved_rate
        result["ramp"] = ramp
        result["highest_sustained_rate"] = sustained
        async with _phase(info, data_dir, users, peak_rss) as ph:
            result["fanout"] = await _fanout(
                ph.client, templates, info.kafka_bootstrap_servers, ph.config
            )
        console.print(f"fan-out: {result['fanout']}")
        result["peak_rss_mib"] = peak_rss
    finally:
        await asyncio.to_thread(stack.stop)
    return result


async def _fanout(
    client: ReplayClient, templates: list[Any], bootstrap: str, config: LaunchConfig
) -> dict[str, float]:
    """Notifications/s: events with 20 recipients each, until the inbox has them all."""
    recipients = [f"fan-user-{n:05d}" for n in range(2000)]
    await client.ensure_profiles(recipients)
    events = []
    for n, event in enumerate(shaped_events(templates, recipients, 1500, seed=99)):
        group = [recipients[(n * 20 + k) % len(recipients)] for k in range(20)]
        events.append(event.model_copy(update={"recipients": group}))
    start = time.monotonic()
    for offset in range(0, len(events), 100):
        await client.send_batch(events[offset : offset + 100])
    await wait_drained(
        bootstrap,
        topic_prefix=config.topic_prefix,
        timeout=600,
        settle=0.5,
        only=("aggregator", "ingest-api", "realtime-gateway"),
    )
    elapsed = time.monotonic() - start - 0.5
    notifications = len(events) * 20
    return {
        "events": len(events),
        "notifications": notifications,
        "seconds": round(elapsed, 2),
        "notifications_per_s": round(notifications / elapsed, 1),
    }


def render_markdown(result: dict[str, Any]) -> str:
    """The docs/benchmarks.md text for one result."""

    def ms(value: float | None) -> str:
        return f"{value:.1f}" if value is not None else "-"

    m = result["machine"]
    lines = [
        "# Benchmarks",
        "",
        "`make bench` runs the embedded stack and all six services on one machine, connects",
        "WebSocket clients and drives `POST /v1/events:batch` with events shaped like the real",
        "GH Archive hour. Latency: from ingest-api accepting an event to its frame at the client.",
        "Medians of several runs; nothing here is asserted by tests. Each fixed-rate run, the",
        "ramp and the fan-out start the services afresh on empty topics: the embedded broker",
        "(Tansu, memory engine) lists every batch stored in a partition on each fetch, so its",
        "cost grows with everything produced before, which Apache Kafka's does not.",
        "",
        f"Machine: {m['cpu']} ({m['cores']} cores), Python {m['python']}, {m['system']}.",
        f"Run: {result['started']}.",
        "",
        "| offered rate | achieved | p50 ms | p95 ms | p99 ms | lost | duplicated |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for rate, row in result.get("fixed_rates", {}).items():
        lines.append(
            f"| {rate}/s | {row['achieved_rate']:.0f}/s | {ms(row['p50_ms'])} | "
            f"{ms(row['p95_ms'])} | {ms(row['p99_ms'])} | {row['lost']} | {row['duplicated']} |"
        )
    lines += [
        "",
        f"Highest rate sustained with p99 under 1 s and nothing lost: "
        f"**{result.get('highest_sustained_rate', 0):.0f} events/s**.",
        "",
    ]
    fan = result.get("fanout")
    if fan:
        lines.append(
            f"Fan-out: {fan['events']} events x 20 recipients = {fan['notifications']} "
            f"notifications in {fan['seconds']} s: **{fan['notifications_per_s']:.0f} "
            "notifications/s** into the inbox and the gateway history."
        )
        lines.append("")
    lines += ["| service | peak RSS (MiB) |", "| --- | --- |"]
    for name, rss in result.get("peak_rss_mib", {}).items():
        lines.append(f"| {name} | {rss:.0f} |" if rss is not None else f"| {name} | - |")
    lines.append("")
    lines += render_services(result.get("services", {}))
    lines += render_peer_section(result.get("peers") or {})
    return "\n".join(lines)


SERVICE_FIGURES: tuple[tuple[str, str, str, str], ...] = (
    (
        "aggregator",
        "aggregator_events_per_second_median",
        "events/s, one instance, aggregation on (target ≥ 5,000)",
        "{:,.0f}",
    ),
    ("aggregator", "aggregator_cpu_us_per_event_median", "µs CPU per event", "{:,.0f}"),
    (
        "aggregator",
        "fanout_seconds_median",
        "s to fan one announcement out to {fanout_recipients:,} users",
        "{:.1f}",
    ),
    (
        "ingest-api",
        "post_to_inbox_p50_ms_median",
        "ms POST /v1/events -> inbox row, p50 at {post_to_inbox_rate:g} events/s",
        "{:.1f}",
    ),
    (
        "ingest-api",
        "post_to_inbox_p99_ms_median",
        "ms POST /v1/events -> inbox row, p99 at {post_to_inbox_rate:g} events/s (target < 100)",
        "{:.1f}",
    ),
    (
        "ingest-api",
        "inbox_notifications_per_second_median",
        "notifications/s into the inbox (consumer alone)",
        "{:,.0f}",
    ),
    ("ingest-api", "put_users_per_second_median", "PUT /v1/users/{{id}} per s", "{:,.0f}"),
    (
        "ingest-api",
        "put_users_batch_profiles_per_second_median",
        "profiles/s through PUT /v1/users:batch (target ≥ 2,000)",
        "{:,.0f}",
    ),
    (
        "push-worker",
        "skipped_requests_per_second_median",
        "push requests/s settled for users without a subscription (target ≥ 20,000)",
        "{:,.0f}",
    ),
    (
        "push-worker",
        "cpu_us_per_skipped_request_median",
        "µs push-worker CPU per such request",
        "{:.1f}",
    ),
    (
        "realtime-gateway",
        "frames_per_second_median",
        "frames/s one process writes to distinct users (target ≥ 40,000)",
        "{:,.0f}",
    ),
    (
        "realtime-gateway",
        "rss_per_connection_kib",
        "KiB per idle authenticated connection at {connections:,} (target ≤ 16)",
        "{:.1f}",
    ),
)
"""(service, JSON key, label, number format) of each per-service figure shown."""


def render_services(services: dict[str, dict[str, Any]]) -> list[str]:
    """The per-service table: figures of each service's own benchmark (medians)."""
    rows = []
    for service, key, label, fmt in SERVICE_FIGURES:
        figures = services.get(service) or {}
        value = figures.get(key)
        if value is None:
            continue
        try:
            text = label.format(**figures)
        except (KeyError, ValueError):
            text = label
        rows.append(f"| {service} | {fmt.format(value)} | {text} |")
    if not rows:
        return []
    return [
        "## Per-service benchmarks",
        "",
        "Each service on its own against the embedded stack (medians of rounds):",
        "`services/aggregator/bench/aggregator_bench.py`, `services/ingest-api/bench/"
        "inbox_bench.py`, `services/push-worker/bench/push_bench.py`, "
        "`services/realtime-gateway/bench/gateway_bench.py`.",
        "",
        "| service | figure | what |",
        "| --- | --- | --- |",
        *rows,
        "",
    ]


def read_peer_figures(directory: Path | None) -> dict[str, Any]:
    """The peer benchmark's figures from ``<directory>/peers.json`` (missing: empty)."""
    if directory is None or not (directory / "peers.json").is_file():
        return {}
    figures: dict[str, Any] = json.loads((directory / "peers.json").read_text())
    return figures


def read_service_figures(directory: Path | None) -> dict[str, dict[str, Any]]:
    """``{service: figures}`` from ``<directory>/<service>.json`` files (missing: skipped)."""
    out: dict[str, dict[str, Any]] = {}
    if directory is None:
        return out
    for service in ("aggregator", "ingest-api", "push-worker", "realtime-gateway"):
        path = directory / f"{service}.json"
        if path.is_file():
            out[service] = json.loads(path.read_text())
    return out


@app.command("bench")
def bench_command(
    output: Path = typer.Option(Path("docs/benchmarks.md"), help="Markdown report"),
    runs: int = typer.Option(3, min=1, help="Repetitions of each fixed-rate run"),
    users: int = typer.Option(200, min=1, help="Connected WebSocket users"),
    duration: float = typer.Option(10.0, min=1.0, help="Seconds per fixed-rate run"),
    services: Path | None = typer.Option(
        None, help="Directory of per-service (and peers.json) benchmark JSON files to include"
    ),
) -> None:
    """Benchmark the full stack and write docs/benchmarks.md and docs/benchmarks.json."""
    console = Console()
    result = asyncio.run(_bench(console, runs, users, duration))
    result["services"] = read_service_figures(services)
    result["peers"] = read_peer_figures(services)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.with_suffix(".json").write_text(json.dumps(result, indent=2) + "\n")
    output.write_text(render_markdown(result))
    console.print(render_markdown(result))
