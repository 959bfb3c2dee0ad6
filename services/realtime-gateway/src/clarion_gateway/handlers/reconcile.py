"""Bringing live sessions level with their users' streams after the pub/sub connection failed.

While an instance's pub/sub connection is down (Redis restarted, failed over, or
the network dropped), every frame published for its users is lost to it. A hole
in the middle of a stream is found by the next frame's seq
(:func:`clarion_gateway.protocol.decide_live`), but the last frames before a
quiet period, and a history that Redis lost meanwhile, would go unnoticed. So
when the connection is back (:class:`~clarion_gateway.adapters.pubsub.UserChannels`
``on_reconnect``), :func:`reconcile_sessions` reads each user's stream state
(which starts a new epoch when Redis lost the user's history) and, per live session:

* another epoch: the history was lost; the session is closed with 4009 (RESYNC), so
  the client reconnects, is told ``recovered: false`` and refetches its inbox;
* a higher top seq: the missed frames are read from the history and offered to the
  session, which writes them in order (or closes with 4009 if they were trimmed);
* otherwise nothing was missed.

If Redis fails again meanwhile, the sessions it could not check are closed with
1013 (try again later): their clients reconnect with their offsets and recover.
"""

from __future__ import annotations

from collections.abc import Mapping, Set

from redis.exceptions import RedisError

from clarion_gateway.adapters.history import HistoryStore
from clarion_gateway.handlers.session import Session
from clarion_gateway.protocol import CloseCode
from clarion_kit.logging import get_logger

log = get_logger(__name__)


async def reconcile_sessions(
    sessions: Mapping[str, Set[Session]], history: HistoryStore
) -> tuple[int, int]:
    """Compare every live session with its user's stream (see the module docstring).

    Args:
        sessions: live sessions per user on this instance (read, never changed here).
        history: the users' streams.

    Returns:
        ``(resynced, filled)``: sessions closed with 4009, sessions offered missed frames.
    """
    resynced = filled = 0
    for user_id in list(sessions):
        live = [s for s in sessions.get(user_id, ()) if s.started and not s.closed]
        if not live:
            continue
        try:
            state = await history.state(user_id)
            behind = [s for s in live if s.epoch == state.epoch and s.last_sent < state.top_seq]
            missed = (
                await history.read(user_id, min(s.last_sent for s in behind) + 1) if behind else []
            )
        except RedisError as exc:
            log.warning("reconcile_failed", user_id=user_id, error=str(exc))
            for session in live:
                session.close(CloseCode.TRY_AGAIN_LATER)
            continue
        for session in live:
            if session.closed:
                continue
            if session.epoch != state.epoch:
                session.close(CloseCode.RESYNC)
                resynced += 1
            elif session in behind:
                # offer() skips what the session already sent and fills or resyncs gaps.
                for msg in missed:
                    session.offer(msg)
                filled += 1
    log.info("sessions_reconciled", resynced=resynced, filled=filled)
    return resynced, filled
