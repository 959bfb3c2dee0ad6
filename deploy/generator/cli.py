"""The generator's command line: ``generate`` writes the files, ``check`` fails when the
committed ones differ. Run as ``python deploy/generate.py {generate,check}`` (``make
deploy-gen`` runs ``generate``).
"""

from __future__ import annotations

from pathlib import Path

import typer

from generator.files import generated_files, stale_files

app = typer.Typer(
    help="Deploy files generated from the contracts registry and the services' settings.",
    no_args_is_help=True,
)

_ROOT_OPTION = typer.Option(Path("."), help="Repository root (holds k8s/ and deploy/)")


@app.command("generate")
def generate(root: Path = _ROOT_OPTION) -> None:
    """Write the topic resources, the monitoring resources and the docs env-var tables."""
    for rel, content in generated_files(root).items():
        path = root / rel
        if path.exists() and path.read_text(encoding="utf-8") == content:
            typer.echo(f"up to date {rel}")
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(content, encoding="utf-8")
        if path.suffix == ".sh":
            path.chmod(0o755)
        typer.echo(f"wrote {rel}")


@app.command("check")
def check(
    root: Path = _ROOT_OPTION,
    show_diff: bool = typer.Option(True, "--diff/--no-diff", help="Print what differs"),
) -> None:
    """Exit 1 when a committed generated file differs from what `generate` would write."""
    stale = stale_files(root)
    if not stale:
        typer.echo("deploy files are up to date")
        return
    for rel, diff in stale.items():
        typer.echo(f"out of date: {rel}", err=True)
        if show_diff:
            typer.echo(diff[:20_000], err=True)
    typer.echo("run `make deploy-gen`", err=True)
    raise typer.Exit(1)


def main() -> None:
    """Entry point of ``deploy/generate.py``."""
    app()
