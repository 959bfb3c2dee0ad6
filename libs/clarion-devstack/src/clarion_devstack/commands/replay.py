"""``clarion replay``: drive Clarion with real events through ingest-api."""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from collections.abc import Callable, Sequence
from pathlib import Path

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from clarion_contracts.v1 import DomainEvent
from clarion_devstack.replay.client import ReplayClient, ReplayStats, replay
from clarion_devstack.replay.pacing import ReplayPacer
from clarion_devstack.replay.sources import SourceStats, read_events, resolve_source

app = typer.Typer()


def default_api_key() -> str:
    """``$CLARION_API_KEY``, else the development producer key of the kit."""
    key = os.environ.get("CLARION_API_KEY")
    if key:
        return key
    from clarion_kit.auth import dev_api_key
    from clarion_kit.settings import ServiceSettings

    return dev_api_key(ServiceSettings())


async def run_replay(
    source: Path,
    api_url: str,
    api_key: str,
    *,
    speed: float,
    batch_size: int,
    console: Console,
) -> tuple[int, Counter[str]]:
    """Replay ``source`` into ingest-api with a progress bar.

    Returns:
        (events accepted, notifications expected per recipient as a Counter of
        mapped events, used to suggest a user to look at).
    """
    stats = SourceStats()
    events = list(read_events(source, stats))
    per_recipient: Counter[str] = Counter(r for e in events for r in (e.recipients or []))
    console.print(
        f"[bold]{source.name}[/]: {stats.lines} lines, {stats.mapped} domain events, "
        f"{stats.skipped} notify nobody"
    )
    async with ReplayClient(api_url, api_key) as client:
        result = await replay_with_progress(
            events, client, console, speed=speed, batch_size=batch_size
        )
    return result.accepted, per_recipient


async def replay_with_progress(
    events: Sequence[DomainEvent],
    client: ReplayClient,
    console: Console,
    *,
    speed: float,
    batch_size: int = 200,
    status: Callable[[], str] | None = None,
    pacer: ReplayPacer | None = None,
) -> ReplayStats:
    """Create the profile of every user ``events`` involve, then replay them with a progress bar.

    Profiles go first (recipients and actors), so the aggregator resolves every
    recipient; the client's rate clock restarts after them, so the events/s shown
    and returned cover the replay alone.

    Args:
        events: domain events in replay order.
        client: an open client of ingest-api.
        console: where the progress bar is drawn.
        speed: N x real time; 0 sends as fast as ingest-api accepts.
        batch_size: events per ``POST /v1/events/batch``.
        status: called at every progress update; its text is shown after the rate
            (``clarion run`` shows delivery latencies there).
        pacer: with ``speed == 0``, paces the batches to the rate the pipeline
            sustains (fed by the caller); None sends as fast as accepted.

    Returns:
        The replay's counters (see :func:`clarion_devstack.replay.client.replay`).

    Raises:
        httpx.HTTPError: ingest-api refused or is unreachable.
    """
    users = {r for e in events for r in (e.recipients or [])} | {e.actor.id for e in events}
    console.print(f"creating {len(users)} user profiles ...")
    await client.ensure_profiles(users)
    client.stats.restart_clock()
    columns = [
        TextColumn("[bold blue]replay"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>8.0f} events/s"),
    ]
    if status is not None:
        columns.append(TextColumn("{task.fields[status]}"))
    with Progress(*columns, TimeElapsedColumn(), console=console) as progress:
        task = progress.add_task("replay", total=len(events), rate=0.0, status="")

        def tick(accepted: int) -> None:
            text = status() if status is not None else ""
            progress.update(task, completed=accepted, rate=client.stats.rate, status=text)

        if status is not None:
            progress.update(task, status=status())
        return await replay(
            events, client, batch_size=batch_size, speed=speed, on_progress=tick, pacer=pacer
        )


@app.command("replay")
def replay_command(
    source: str = typer.Argument("default", help="GH Archive .json.gz or NDJSON domain events"),
    api_url: str = typer.Option("http://127.0.0.1:8000", envvar="CLARION_API_URL"),
    api_key: str = typer.Option("", envvar="CLARION_API_KEY", help="Producer API key"),
    speed: float = typer.Option(0.0, help="N x real time; 0 sends as fast as accepted"),
    batch_size: int = typer.Option(200, min=1, max=500),
) -> None:
    """Replay real events (default: the GH Archive hour 2015-01-01 15:00) through ingest-api."""
    console = Console()
    path = resolve_source(source)
    accepted, per_recipient = asyncio.run(
        run_replay(
            path,
            api_url,
            api_key or default_api_key(),
            speed=speed,
            batch_size=batch_size,
            console=console,
        )
    )
    console.print(f"accepted {accepted} events")
    if per_recipient:
        user, count = per_recipient.most_common(1)[0]
        console.print(f"busiest recipient: [bold]{user}[/] ({count} events)")
