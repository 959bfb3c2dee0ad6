"""``clarion devstack``: run the embedded Kafka-protocol broker, Redis and PostgreSQL.

``up`` starts the stack in the background (or in the foreground until Ctrl-C),
``status`` checks that every server answers, ``env`` prints the connection settings
as shell ``export`` lines, ``down`` stops it. See :mod:`clarion_devstack.stack`.
"""

from __future__ import annotations

import time
from pathlib import Path

import typer
from rich.console import Console
from rich.table import Table

from clarion_devstack.background import (
    StackPaths,
    StackState,
    read_pid,
    read_state,
    serve,
    start_background,
    stop_background,
)
from clarion_devstack.stack import (
    SERVERS,
    StackConfig,
    StackError,
    StackInfo,
    default_data_dir,
    render_exports,
    run_coroutine,
)

app = typer.Typer(
    help="The embedded development stack: Kafka-protocol broker, Redis, PostgreSQL.",
    no_args_is_help=True,
)

console = Console()
err_console = Console(stderr=True)

_DATA_DIR_HELP = "Data directory (default: $CLARION_DEVSTACK_DIR or <project>/.clarion/devstack)"


def _config(data_dir: Path | None, timeout: float = 60.0) -> StackConfig:
    return StackConfig(
        data_dir=(data_dir or default_data_dir()).expanduser().resolve(),
        startup_timeout=timeout,
    )


def _addresses(info: StackInfo) -> dict[str, str]:
    return {
        "kafka": info.kafka_bootstrap_servers,
        "redis": info.redis_url,
        "postgres": info.database_url,
    }


def _settings_table(state: StackState) -> Table:
    table = Table(title="Clarion development stack", title_justify="left")
    table.add_column("server")
    table.add_column("address", overflow="fold")
    table.add_column("process", no_wrap=True)
    addresses = _addresses(state.info)
    for name in SERVERS:
        pid = state.server_pids.get(name)
        table.add_row(
            name,
            addresses[name],
            f"pid {pid}" if pid is not None else "[yellow]from environment[/]",
        )
    return table


def _print_ready(state: StackState, began: float, paths: StackPaths) -> None:
    console.print(_settings_table(state))
    total = time.monotonic() - began
    console.print(
        f"[green]ready[/] in [bold]{total:.2f} s[/] "
        f"(servers answered {state.startup_seconds:.2f} s after start); "
        f"settings in [cyan]{paths.env_file}[/]"
    )


@app.command("up")
def up(
    foreground: bool = typer.Option(
        False, "--foreground", "-f", help="Run in this terminal until Ctrl-C"
    ),
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
    timeout: float = typer.Option(60.0, help="Seconds allowed for every server to answer"),
) -> None:
    """Start the stack (detached unless --foreground) and print its connection settings."""
    began = time.monotonic()
    config = _config(data_dir, timeout)
    paths = StackPaths(config.data_dir)
    existing = read_state(paths)
    if existing is not None:
        console.print(_settings_table(existing))
        console.print(f"already running (supervisor pid {existing.pid})")
        return
    if read_pid(paths) is not None:
        err_console.print("[red]a development stack is still starting or stopping here[/]")
        raise typer.Exit(1)
    if foreground:

        def ready(state: StackState) -> None:
            _print_ready(state, began, paths)
            console.print("press Ctrl-C to stop")

        status = serve(config, on_ready=ready)
        if status != 0:
            err_console.print(f"[red]the stack failed to start[/]; logs in {config.data_dir}")
            raise typer.Exit(status)
        console.print("stopped")
        return
    try:
        with console.status("starting Kafka-protocol broker, Redis and PostgreSQL..."):
            state = start_background(config)
    except StackError as exc:
        err_console.print(f"[red]failed:[/] {exc}")
        raise typer.Exit(1) from exc
    _print_ready(state, began, paths)
    console.print('load the settings with [bold]eval "$(clarion devstack env)"[/]')


@app.command("down")
def down(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Stop the background stack."""
    paths = StackPaths(_config(data_dir).data_dir)
    began = time.monotonic()
    if stop_background(paths):
        console.print(f"stopped in {time.monotonic() - began:.2f} s")
    else:
        console.print("not running")


@app.command("status")
def status(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Check that every server of the running stack answers; exit status 1 if not."""
    state = read_state(StackPaths(_config(data_dir).data_dir))
    if state is None:
        console.print("not running")
        raise typer.Exit(1)
    results = run_coroutine(lambda: _check(state.info))
    table = Table(title=f"Clarion development stack (supervisor pid {state.pid})")
    table.add_column("server")
    table.add_column("address", overflow="fold")
    table.add_column("answers")
    addresses = _addresses(state.info)
    for name in SERVERS:
        error = results[name]
        answer = "[green]yes[/]" if error is None else f"[red]{error}[/]"
        table.add_row(name, addresses[name], answer)
    console.print(table)
    if any(error is not None for error in results.values()):
        raise typer.Exit(1)


async def _check(info: StackInfo) -> dict[str, str | None]:
    """Probe every server once; map server name to ``None`` (answers) or the error."""
    import asyncio

    from clarion_devstack.probes import probe_kafka, probe_postgres, probe_redis

    probes = {
        "kafka": probe_kafka(info.kafka_bootstrap_servers, create_topic=False, timeout=3.0),
        "redis": probe_redis(info.redis_url, timeout=3.0),
        "postgres": probe_postgres(info.database_url, timeout=3.0),
    }
    outcomes = await asyncio.gather(*probes.values(), return_exceptions=True)
    return {
        name: None if not isinstance(outcome, BaseException) else f"{outcome!r}"
        for name, outcome in zip(probes, outcomes, strict=True)
    }


@app.command("env")
def env(
    data_dir: Path | None = typer.Option(None, "--data-dir", help=_DATA_DIR_HELP),
) -> None:
    """Print the running stack's settings as shell export lines (for eval)."""
    state = read_state(StackPaths(_config(data_dir).data_dir))
    if state is None:
        err_console.print("not running; start it with `clarion devstack up`")
        raise typer.Exit(1)
    typer.echo(render_exports(state.info.env()), nl=False)
