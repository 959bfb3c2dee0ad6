"""``clarion run``: the embedded stack, all six services, and a replay of real events."""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import time
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from clarion_contracts.v1 import DomainEvent
from clarion_devstack.drain import wait_drained
from clarion_devstack.launch import LaunchConfig, Ports, service_specs, urls
from clarion_devstack.observer import LatencyObserver
from clarion_devstack.replay.client import ReplayClient
from clarion_devstack.replay.feedback import feed_pacer
from clarion_devstack.replay.pacing import ReplayPacer
from clarion_devstack.replay.sources import SourceStats, read_events, resolve_source
from clarion_devstack.stack import Stack, StackConfig, StackInfo, find_project_root
from clarion_devstack.supervisor import Supervisor

app = typer.Typer()


QUIET_LEVELS = frozenset({"debug", "info"})


def _echo(console: Console, verbose: bool) -> Callable[[str, str, str], None]:
    """Print a service's output line with its prefix.

    JSON log lines below WARNING stay in the service's log file unless ``verbose``,
    so the replay's progress stays readable.
    """

    def echo(name: str, colour: str, line: str) -> None:
        if not verbose and line.startswith("{"):
            try:
                level = str(json.loads(line).get("level", "")).lower()
            except ValueError:
                level = ""
            if level in QUIET_LEVELS:
                return
        console.print(f"[{colour}]{name:>16} |[/] {escape(line)}", soft_wrap=True, highlight=False)

    return echo


async def _replay(
    console: Console,
    source: Path,
    ports: Ports,
    info: StackInfo,
    speed: float,
) -> None:
    from clarion_devstack.commands.replay import default_api_key, replay_with_progress

    stats = SourceStats()
    events: list[DomainEvent] = list(read_events(source, stats))
    per_user: Counter[str] = Counter(r for e in events for r in (e.recipients or []))
    console.print(
        f"replaying [bold]{source.name}[/]: {stats.mapped} domain events "
        f"({stats.lines} GitHub events, {stats.skipped} notify nobody)"
    )
    api = f"http://127.0.0.1:{ports.ingest}"
    watched = [user for user, _ in per_user.most_common(20)]
    observer = LatencyObserver(f"ws://127.0.0.1:{ports.gateway}/v1/ws", watched)
    await observer.start()

    # --speed 0 paces itself to what the live path sustains instead of building a
    # backlog that every frame would wait behind; --speed N keeps the recorded pace.
    pacer = ReplayPacer() if speed <= 0 else None
    feeder = (
        asyncio.create_task(feed_pacer(pacer, observer, info.kafka_bootstrap_servers))
        if pacer is not None
        else None
    )

    def delivery() -> str:
        p50, p99 = observer.percentiles_ms()
        shown = [f"{p:.0f} ms" if p is not None else "-" for p in (p50, p99)]
        text = f"delivery p50 {shown[0]} p99 {shown[1]}"
        return f"{pacer.describe()}; {text}" if pacer is not None else text

    try:
        async with ReplayClient(api, default_api_key()) as client:
            await replay_with_progress(
                events, client, console, speed=speed, status=delivery, pacer=pacer
            )
    finally:
        if feeder is not None:
            feeder.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await feeder
    # The client's clock restarted once the profiles existed: the replay alone.
    elapsed = time.monotonic() - client.stats.started
    console.print(
        f"accepted {client.stats.accepted} events in {elapsed:.1f}s "
        f"({client.stats.accepted / max(elapsed, 1e-9):.0f} events/s); waiting for delivery ..."
    )
    await wait_drained(info.kafka_bootstrap_servers, timeout=600)
    await asyncio.sleep(0.5)
    await observer.stop()
    p50, p99 = observer.percentiles_ms()
    console.print(
        f"delivered: {observer.frames} live frames to the {len(watched)} busiest users; "
        f"POST accepted -> frame p50 {p50 or 0:.1f} ms, p99 {p99 or 0:.1f} ms"
    )
    if per_user:
        user, count = per_user.most_common(1)[0]
        console.print(
            f"\n[bold green]Try the demo inbox as {user}[/] ({count} events for them): "
            f"http://127.0.0.1:{ports.ingest}/?user={user}"
        )


def _report_failure(
    console: Console,
    supervisor: Supervisor,
    server_died: asyncio.Task[str],
    done: set[asyncio.Future[Any]],
) -> int:
    """Print why the run must stop (a service gave up, a stack server died); 1 if so."""
    code = 0
    if supervisor.failure.done():
        console.print(f"[red]{supervisor.failure.result()}[/]")
        code = 1
    if server_died in done:
        console.print(
            f"[bold red]{server_died.result()}[/]\n[red]the embedded stack is not "
            "restarted: whatever it held is gone. Stopping.[/]"
        )
        code = 1
    return code


async def _main(
    console: Console,
    replay_spec: str,
    speed: float,
    exit_after_replay: bool,
    data_dir: Path,
    verbose: bool,
) -> int:
    stack = Stack(StackConfig.default())
    console.print("starting the embedded stack (Kafka protocol, Redis, PostgreSQL) ...")
    info = await asyncio.to_thread(stack.start)
    console.print(f"stack ready in {stack.startup_seconds or 0:.1f}s: {info.to_dict()}")
    ports = Ports()
    config = LaunchConfig(info=info, ports=ports, state_dir=data_dir)
    supervisor = Supervisor(data_dir / "logs", _echo(console, verbose))
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    code = 0
    try:
        await supervisor.start_all(service_specs(config), ready_timeout=120)
        table = Table(title="Clarion is up", show_header=False)
        for label, url in urls(ports).items():
            table.add_row(label, url)
        console.print(table)
        # A stack server that dies is never restarted behind the services' backs: the
        # memory-only broker would come back empty and the run would go on as if
        # nothing was lost. The run stops and says which server died.
        server_died = asyncio.create_task(stack.watch())
        failed = asyncio.ensure_future(supervisor.failure)
        if replay_spec != "none":
            source = resolve_source(replay_spec)
            work = asyncio.create_task(_replay(console, source, ports, info, speed))
            waiter = asyncio.create_task(stop.wait())
            pending: set[asyncio.Future[Any]] = {work, waiter, failed, server_died}
            done, _ = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            code = _report_failure(console, supervisor, server_died, done)
            if work in done:
                work.result()
            else:
                work.cancel()
            waiter.cancel()
            if exit_after_replay or code:
                server_died.cancel()
                return code
        console.print("press Ctrl-C to stop")
        idle: set[asyncio.Future[Any]] = {asyncio.create_task(stop.wait()), failed, server_died}
        done, _ = await asyncio.wait(idle, return_when=asyncio.FIRST_COMPLETED)
        for task in idle - {failed}:
            task.cancel()
        return _report_failure(console, supervisor, server_died, done)
    finally:
        console.print("stopping services ...")
        await supervisor.stop()
        await asyncio.to_thread(stack.stop)
        console.print(f"stopped; logs kept in {data_dir / 'logs'}")


@app.command("run")
def run_command(
    replay_spec: str = typer.Option("default", "--replay", help="default, none, or a file"),
    speed: float = typer.Option(
        0.0, help="N x real time; 0 paces itself to what the pipeline delivers"
    ),
    exit_after_replay: bool = typer.Option(False, help="Stop once the replay is delivered"),
    verbose: bool = typer.Option(False, help="Echo every service log line, not only warnings"),
) -> None:
    """Start the embedded stack and all six services, then replay real GitHub events."""
    console = Console()
    data_dir = find_project_root() / ".clarion" / "run"
    code = 1
    with contextlib.suppress(KeyboardInterrupt):
        code = asyncio.run(_main(console, replay_spec, speed, exit_after_replay, data_dir, verbose))
    raise typer.Exit(code)
