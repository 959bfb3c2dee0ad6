"""Debounced presence of the users with sessions on this instance (pure, time injected).

A user's status on this instance follows its session count (0 → offline, ≥ 1 →
online), but a change is only acted upon after it held for ``debounce`` seconds,
so a page reload or a network blip (disconnect then reconnect within the window)
publishes nothing. Whether the user is online *globally* (on any instance) is
decided in Redis by :mod:`clarion_gateway.adapters.presence`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from clarion_contracts.v1 import PresenceStatus


@dataclass(slots=True)
class _UserPresence:
    sessions: int = 0
    registered: bool = False
    pending_since: float | None = None


@dataclass(slots=True)
class PresenceLedger:
    """Session counts and pending (debounced) status changes per user.

    Args:
        debounce: seconds a status must hold before :meth:`due` reports it.
    """

    debounce: float
    _users: dict[str, _UserPresence] = field(default_factory=dict)

    def join(self, user_id: str, now: float) -> None:
        """A session of ``user_id`` opened at monotonic time ``now`` (seconds)."""
        state = self._users.setdefault(user_id, _UserPresence())
        state.sessions += 1
        if state.sessions == 1:
            state.pending_since = None if state.registered else now

    def leave(self, user_id: str, now: float) -> None:
        """A session of ``user_id`` closed at ``now``."""
        state = self._users.get(user_id)
        if state is None or state.sessions == 0:
            return
        state.sessions -= 1
        if state.sessions == 0:
            if state.registered:
                state.pending_since = now
            else:
                del self._users[user_id]

    def sessions(self, user_id: str) -> int:
        """Live sessions of ``user_id`` on this instance."""
        state = self._users.get(user_id)
        return state.sessions if state else 0

    def due(self, now: float) -> list[tuple[str, PresenceStatus]]:
        """Changes that held ``debounce`` seconds by ``now``; they are marked applied.

        Returns ``(user_id, ONLINE)`` when this instance must register the user and
        ``(user_id, OFFLINE)`` when it must unregister it.
        """
        out: list[tuple[str, PresenceStatus]] = []
        for user_id, state in list(self._users.items()):
            since = state.pending_since
            if since is None or now - since < self.debounce:
                continue
            state.pending_since = None
            if state.sessions > 0 and not state.registered:
                state.registered = True
                out.append((user_id, PresenceStatus.ONLINE))
            elif state.sessions == 0:
                if state.registered:
                    out.append((user_id, PresenceStatus.OFFLINE))
                del self._users[user_id]
        return out

    def registered_users(self) -> list[str]:
        """Users this instance has registered as online (to unregister at shutdown)."""
        return [u for u, s in self._users.items() if s.registered]
