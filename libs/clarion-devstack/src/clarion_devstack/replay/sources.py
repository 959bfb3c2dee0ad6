"""Read replay sources: GH Archive hour files and NDJSON files of domain events.

A source is a path to ``*.json.gz`` / ``*.json`` (GH Archive: one GitHub event
per line) or ``*.ndjson`` / ``*.jsonl`` (optionally gzipped: one contract
:class:`~clarion_contracts.v1.DomainEvent` per line). The kind is decided per
line: a line with an ``event_id`` is a domain event, one with a ``payload`` and
``repo`` is a GitHub event.
"""

from __future__ import annotations

import gzip
import json
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from clarion_contracts.v1 import DomainEvent
from clarion_devstack.replay.github import to_domain_event

DEFAULT_FILE = "2015-01-01-15.json.gz"


@dataclass
class SourceStats:
    """What reading a source produced: lines read, events mapped, lines skipped."""

    lines: int = 0
    mapped: int = 0
    skipped: int = 0


def default_data_dir() -> Path:
    """Where the real GitHub events live: ``$CLARION_DATA_DIR`` or ``../shared/data/gharchive``.

    The relative default is resolved against the repository root (the folder
    holding the Makefile), walking up from the current directory.
    """
    env = os.environ.get("CLARION_DATA_DIR")
    if env:
        return Path(env)
    here = Path.cwd().resolve()
    for folder in (here, *here.parents):
        if (folder / "Makefile").exists() and (folder / "contracts").is_dir():
            return folder.parent / "shared" / "data" / "gharchive"
    return here.parent / "shared" / "data" / "gharchive"


def resolve_source(spec: str) -> Path:
    """Turn ``default`` or a path into an existing file.

    Raises:
        FileNotFoundError: no such file.
    """
    path = default_data_dir() / DEFAULT_FILE if spec in ("", "default") else Path(spec)
    if not path.is_file():
        raise FileNotFoundError(f"replay source not found: {path}")
    return path


def _open(path: Path) -> IO[str]:
    if path.suffix == ".gz":
        return gzip.open(path, "rt", encoding="utf-8")
    return path.open(encoding="utf-8")


def read_events(path: Path, stats: SourceStats | None = None) -> Iterator[DomainEvent]:
    """Yield the domain events of a source file in file order.

    Lines that are blank or map to no notification are counted in ``stats.skipped``.

    Raises:
        ValueError: a line is not JSON, not a GitHub event, or an NDJSON domain
            event that breaks the contract (the message names file and line).
    """
    stats = stats if stats is not None else SourceStats()
    with _open(path) as handle:
        for number, line in enumerate(handle, start=1):
            if not line.strip():
                continue
            stats.lines += 1
            try:
                raw = json.loads(line)
            except json.JSONDecodeError as exc:
                raise ValueError(f"{path}:{number}: not JSON: {exc}") from exc
            try:
                event = (
                    DomainEvent.model_validate(raw) if "event_id" in raw else to_domain_event(raw)
                )
            except (KeyError, TypeError, ValueError) as exc:
                raise ValueError(f"{path}:{number}: not a domain or GitHub event: {exc}") from exc
            if event is None:
                stats.skipped += 1
                continue
            stats.mapped += 1
            yield event
