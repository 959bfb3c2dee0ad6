"""JSON Schema snapshots of every topic's contract, committed under ``schemas/``.

:func:`write_snapshots` refuses to overwrite a snapshot with an incompatible
schema, so a breaking change cannot be recorded as v1: it needs a v2 model and
topic (see :mod:`clarion_contracts.compat`).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clarion_contracts.compat import check_compatible, load_schema
from clarion_contracts.registry import TOPICS, TopicSpec

SCHEMA_DIR = Path(__file__).parent / "schemas"


def current_schema(spec: TopicSpec) -> dict[str, Any]:
    """The JSON Schema (draft 2020-12, validation mode) the code generates for ``spec``."""
    schema = spec.model.model_json_schema(mode="validation")
    schema["$id"] = f"urn:clarion:contracts:{spec.name}"
    schema["$schema"] = "https://json-schema.org/draft/2020-12/schema"
    return schema


def snapshot_path(spec: TopicSpec, directory: Path = SCHEMA_DIR) -> Path:
    """Where the snapshot of ``spec`` lives: ``<directory>/<topic name>.json``."""
    return directory / f"{spec.name}.json"


def render(schema: dict[str, Any]) -> str:
    """Canonical text of a schema snapshot (sorted keys, two-space indent, final newline)."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def write_snapshots(directory: Path = SCHEMA_DIR) -> list[Path]:
    """Write or refresh every topic's snapshot; return the paths that changed.

    Raises:
        clarion_contracts.compat.IncompatibleSchemaError: a change is not backward
            compatible with the committed snapshot (nothing is written then).
    """
    pending: list[tuple[Path, str]] = []
    for spec in TOPICS:
        path = snapshot_path(spec, directory)
        new = current_schema(spec)
        if path.exists():
            check_compatible(spec.name, load_schema(path), new)
        text = render(new)
        if not path.exists() or path.read_text(encoding="utf-8") != text:
            pending.append((path, text))
    directory.mkdir(parents=True, exist_ok=True)
    for path, text in pending:
        path.write_text(text, encoding="utf-8")
    return [path for path, _ in pending]
