"""``clarion contracts``: JSON Schema snapshots and the AsyncAPI document."""

from __future__ import annotations

import json
from pathlib import Path

import typer

from clarion_contracts.asyncapi import build_asyncapi
from clarion_contracts.compat import IncompatibleSchemaError
from clarion_contracts.snapshots import write_snapshots

app = typer.Typer(help="Contract snapshots and the AsyncAPI document.", no_args_is_help=True)


@app.command("snapshot")
def snapshot() -> None:
    """Refresh the committed JSON Schema snapshots; refuse a backward-incompatible change."""
    try:
        changed = write_snapshots()
    except IncompatibleSchemaError as exc:
        typer.echo(f"refused: {exc}\nA breaking change needs a new v2 model and topic.", err=True)
        raise typer.Exit(1) from exc
    for path in changed:
        typer.echo(f"updated {path}")
    if not changed:
        typer.echo("snapshots are up to date")


@app.command("asyncapi")
def asyncapi(
    output: Path = typer.Option(Path("docs/asyncapi.json"), help="Where to write the document"),
) -> None:
    """Write the AsyncAPI 3.0 document of every topic, generated from the registry."""
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(build_asyncapi(), indent=2) + "\n", encoding="utf-8")
    typer.echo(f"wrote {output}")
