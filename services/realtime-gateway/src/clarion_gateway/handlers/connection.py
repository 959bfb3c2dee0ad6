"""The WebSocket connection handler: connect, authenticate, recover, then serve the session.

Order of the recovery seam (no gap, no duplicate): the session is registered and
the user's channel subscription confirmed *before* the history is read, so every
message published from then on is buffered in the session queue; the history
replay is written next, then the writer drains the buffer, skipping the seqs the
replay already covered.
"""

from __future__ import annotations

import asyncio
import secrets
import socket
import time
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed

from clarion_gateway.limits import TokenBucket, client_address
from clarion_gateway.protocol import (
    CLOSE_REASONS,
    CloseCode,
    ConnectFrame,
    Offset,
    PingFrame,
    ProtocolError,
    ServerSessionProtocol,
    connected_frame,
    decide_recovery,
    pong_frame,
    replay_is_complete,
    unread_count_frame,
)
from clarion_kit.auth import AuthError, verify_token
from clarion_kit.logging import get_logger

from .session import Session

if TYPE_CHECKING:
    from clarion_gateway.app import Gateway

log = get_logger(__name__)

WS_PATH = "/v1/ws"


async def _reject(gw: Gateway, ws: ServerConnection, code: CloseCode, reason: str = "") -> None:
    gw.metrics.closes.labels(str(int(code))).inc()
    await ws.close(int(code), reason or CLOSE_REASONS[code])


async def handle_connection(gw: Gateway, ws: ServerConnection) -> None:
    """Serve one WebSocket connection until it closes (see the module docstring).

    Whatever ends the connection (a close by either side, a protocol error, an
    exception in this handler, cancellation at shutdown), the socket is closed and
    the connection's share of the per-address limit, its session, channel
    subscription and presence are released before this returns.
    """
    request = ws.request
    if request is None or request.path.split("?", 1)[0] != WS_PATH:
        await _reject(gw, ws, CloseCode.PROTOCOL_ERROR, "unknown path")
        return
    peer = ws.remote_address[0] if ws.remote_address else None
    address = client_address(
        peer, request.headers.get("X-Forwarded-For"), gw.settings.trusted_proxies
    )
    if not gw.admit_address(address):
        await _reject(gw, ws, CloseCode.POLICY_VIOLATION, "too many connections from address")
        return
    try:
        await _handle(gw, ws)
    except Exception:
        log.exception("connection_failed", address=address)
        if ws.close_code is None:
            await _reject(gw, ws, CloseCode.INTERNAL_ERROR)
    finally:
        gw.release_address(address)


async def _handle(gw: Gateway, ws: ServerConnection) -> None:
    if gw.settings.socket_send_buffer:
        sock = ws.transport.get_extra_info("socket")
        if sock is not None:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, gw.settings.socket_send_buffer)
    protocol = ServerSessionProtocol(gw.settings.max_message_bytes)
    try:
        raw = await asyncio.wait_for(ws.recv(), gw.settings.connect_timeout)
        frame = protocol.receive(raw)
    except TimeoutError:
        await _reject(gw, ws, CloseCode.CONNECT_TIMEOUT)
        return
    except ProtocolError as exc:
        await _reject(gw, ws, exc.code, exc.reason)
        return
    except ConnectionClosed:
        return
    assert isinstance(frame, ConnectFrame)
    # End-user access tokens only: unsubscribe tokens, over-long lifetimes and the
    # development secret outside development are refused here (reason in the close frame).
    try:
        claims = verify_token(gw.settings, frame.token)
    except AuthError as exc:
        await _reject(gw, ws, CloseCode.BAD_TOKEN, exc.reason)
        return
    user_id = claims.subject
    since = frame.since
    # Checked and registered with no await in between: concurrent connects cannot overshoot.
    if len(gw.sessions.get(user_id, ())) >= gw.settings.max_sessions_per_user:
        await _reject(gw, ws, CloseCode.POLICY_VIOLATION, "too many sessions for user")
        return
    session = gw.open_session(ws, user_id, secrets.token_hex(8))
    session.last_seen = time.monotonic()
    if claims.expires_at:
        delay = max(0.0, claims.expires_at - time.time())
        session.timer = asyncio.get_running_loop().call_later(
            delay, session.close, CloseCode.BAD_TOKEN, "token expired"
        )
    # Only what the session needs stays referenced while it lives (memory per connection).
    del raw, frame, claims
    try:
        await _recover(gw, session, since)
        await _serve(gw, session, protocol)
    except ConnectionClosed:
        session.mark_closed()
    except (RedisError, TimeoutError) as exc:
        log.warning("session_setup_failed", user_id=user_id, error=str(exc))
        session.close(CloseCode.TRY_AGAIN_LATER)
    except asyncio.CancelledError:
        session.close(CloseCode.GOING_AWAY)
        raise
    except Exception:
        log.exception("session_failed", user_id=user_id)
        session.close(CloseCode.INTERNAL_ERROR)
    finally:
        # Every path above has started the closing handshake (or the peer closed);
        # this only makes sure, then lets it finish (bounded by close_timeout)
        # before returning, as websockets closes the transport when the handler returns.
        session.close(CloseCode.INTERNAL_ERROR)
        await ws.wait_closed()


async def _recover(gw: Gateway, session: Session, since: Offset | None) -> None:
    user_id = session.user_id
    await gw.channels.acquire(user_id)
    session.holds_channel = True
    state = await gw.history.state(user_id)
    decision = decide_recovery(
        since, epoch=state.epoch, top_seq=state.top_seq, first_seq=state.first_seq
    )
    recovered, start_after = decision.recovered, decision.start_after
    replay = []
    if decision.replay_from is not None:
        replay = await gw.history.read(user_id, decision.replay_from)
        seqs = [m.seq for m in replay]
        if not replay_is_complete(start_after, seqs) or any(m.epoch != state.epoch for m in replay):
            recovered, start_after, replay = False, state.top_seq, []
    gw.metrics.recoveries.labels("true" if recovered else "false").inc()
    if since is not None and not recovered:
        log.info("recovery_refused", user_id=user_id, since=str(since), epoch=state.epoch)
    await session.send_control(
        connected_frame(
            session=session.session_id,
            offset=Offset(state.epoch, start_after),
            unread_count=state.unread,
            recovered=recovered,
            missed=len(replay),
        )
    )
    for msg in replay:
        await session.send_message(msg)
    session.start(state.epoch, replay[-1].seq if replay else start_after)


async def _serve(gw: Gateway, session: Session, protocol: ServerSessionProtocol) -> None:
    # Idle and dead connections are closed by the gateway's keepalive task, so an idle
    # session waits here without a timer of its own.
    ws = session.ws
    settings = gw.settings
    bucket = TokenBucket(settings.frame_rate, settings.frame_burst, time.monotonic())
    while not session.closed:
        raw = await ws.recv()
        session.last_seen = now = time.monotonic()
        if not bucket.take(now):
            session.close(CloseCode.POLICY_VIOLATION, "frame rate exceeded")
            return
        try:
            frame = protocol.receive(raw)
        except ProtocolError as exc:
            session.close(exc.code, exc.reason)
            return
        if isinstance(frame, PingFrame):
            session.offer(pong_frame())
        else:
            state = await gw.history.state(session.user_id)
            session.offer(
                unread_count_frame(
                    offset=Offset(state.epoch, state.top_seq), unread_count=state.unread
                )
            )
