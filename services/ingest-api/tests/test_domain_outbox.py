"""How the outbox relay's state reads in /readyz (pure)."""

from __future__ import annotations

import pytest

from clarion_ingest.domain.outbox import RelayState, RelayStatus, RelayUnhealthyError


def test_a_relay_making_progress_reports_its_state_and_backlog() -> None:
    assert RelayStatus(RelayState.STARTING).check() == "starting"
    assert RelayStatus(RelayState.STANDBY, pending=0, oldest_age_seconds=0.0).check() == (
        "standby, 0 pending"
    )
    relaying = RelayStatus(RelayState.RELAYING, pending=3, oldest_age_seconds=0.25)
    assert relaying.check() == "relaying, 3 pending, oldest 0.2s"


def test_a_failing_or_stopped_relay_fails_its_check_with_the_error() -> None:
    failing = RelayStatus(RelayState.FAILING, "BrokerUnavailableError: not connected", 7, 12.0)
    with pytest.raises(RelayUnhealthyError, match=r"failing, 7 pending, oldest 12.0s: Broker"):
        failing.check()
    with pytest.raises(RelayUnhealthyError, match="not running"):
        RelayStatus(RelayState.STOPPED).check()
