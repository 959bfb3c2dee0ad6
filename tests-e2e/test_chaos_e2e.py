"""Fault injection in ``make test``: the PostgreSQL, Redis and broker-gap scenarios.

Each runs the whole stack on an embedded stack of its own, replays the first 6,000
events of the real GH Archive hour and injects its fault a third of the way in
(see chaos.py); nothing may be lost, doubled or dead-lettered. ``make chaos`` runs
every scenario, these and the others (kills, broker pause and restart).
"""

from __future__ import annotations

from pathlib import Path

import pytest
from chaos import SCENARIOS, render_table, run_scenario

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]


@pytest.mark.parametrize("name", ["postgres-restart", "redis-restart", "broker-gap"])
async def test_a_fault_mid_replay_loses_and_doubles_nothing(
    name: str, hour_file: Path, tmp_path: Path
) -> None:
    scenario = SCENARIOS[name]
    result = await run_scenario(scenario, hour_file, tmp_path, events=6000, pause_seconds=20.0)
    table = render_table([result])
    assert result.error is None, table
    assert result.expected > 1000, table
    assert (result.missing, result.extra) == (0, 0), table
    assert (result.dup_frames, result.missed_frames) == (0, 0), table
    assert result.dlq == 0, table
    assert result.found == result.expected, table
