"""The ``clarion`` command: development and operations tooling for Clarion.

Each command group lives in its own module and is registered here:
``devstack`` (the embedded stack), ``contracts`` (schema snapshots, AsyncAPI),
``deploy`` (topic creation on a cluster), ``vapid`` (Web Push keys), ``dev-token`` /
``dev-api-key``,
``replay``, ``run`` and ``bench``.
"""

from __future__ import annotations

import importlib

import typer

app = typer.Typer(
    name="clarion",
    help="Clarion development and operations tooling.",
    no_args_is_help=True,
    add_completion=False,
)

#: (module, attribute, group name or None to merge its commands at the top level)
_GROUPS: tuple[tuple[str, str, str | None], ...] = (
    ("clarion_devstack.commands.devstack", "app", "devstack"),
    ("clarion_devstack.commands.contracts", "app", "contracts"),
    ("clarion_devstack.commands.deploy", "app", "deploy"),
    ("clarion_devstack.commands.dev", "app", None),
    ("clarion_devstack.commands.vapid", "app", "vapid"),
    ("clarion_devstack.commands.replay", "app", None),
    ("clarion_devstack.commands.run", "app", None),
    ("clarion_devstack.commands.bench", "app", None),
)


def _register() -> None:
    for module_name, attr, group in _GROUPS:
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as exc:
            if exc.name == module_name:
                continue  # a command group not installed in this build
            raise
        sub: typer.Typer = getattr(module, attr)
        if group is None:
            for command in sub.registered_commands:
                app.registered_commands.append(command)
        else:
            app.add_typer(sub, name=group)


_register()


def main() -> None:
    """Entry point of the ``clarion`` console script."""
    app()
