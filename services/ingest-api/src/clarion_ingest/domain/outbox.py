"""Pure decisions of the outbox relay: its states and how readiness reports them."""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class RelayState(StrEnum):
    """Where the outbox relay of one replica stands.

    ``standby``: another replica holds the advisory lock and relays; ``relaying``:
    this one holds it and the broker acknowledges; ``failing``: the last attempt
    (PostgreSQL or broker) failed and it is backing off before retrying.
    """

    STARTING = "starting"
    STANDBY = "standby"
    RELAYING = "relaying"
    FAILING = "failing"
    STOPPED = "stopped"


class RelayUnhealthyError(RuntimeError):
    """The relay is not making progress (reported by ``/readyz``, which stays ready)."""


@dataclass(frozen=True)
class RelayStatus:
    """A snapshot of the relay: its ``state``, the last ``error`` text and the backlog.

    ``pending`` is the number of rows not relayed yet and ``oldest_age_seconds`` the
    age of the oldest, as last measured (``None`` before the first measurement).
    """

    state: RelayState
    error: str | None = None
    pending: int | None = None
    oldest_age_seconds: float | None = None

    def describe(self) -> str:
        """One line for operators, e.g. ``"relaying, 3 pending, oldest 0.1s"``."""
        parts = [self.state.value]
        if self.pending is not None:
            parts.append(f"{self.pending} pending")
        if self.oldest_age_seconds is not None and self.pending:
            parts.append(f"oldest {self.oldest_age_seconds:.1f}s")
        return ", ".join(parts)

    def check(self) -> str:
        """The readiness report of the relay: its description when it makes progress.

        Raises:
            RelayUnhealthyError: the relay is failing (its last error) or stopped.
        """
        if self.state is RelayState.FAILING:
            raise RelayUnhealthyError(f"{self.describe()}: {self.error}")
        if self.state is RelayState.STOPPED:
            raise RelayUnhealthyError("the outbox relay is not running")
        return self.describe()
