"""One authenticated WebSocket session and its writer task.

A frame is written at once when the socket can take it; otherwise it waits in the
session's bounded queue, written by the session's own writer task, so a slow
socket only ever blocks its own task: when the queue is full the session is
closed with 4008 and the others are untouched.
The writer applies :func:`clarion_gateway.protocol.decide_live` to each message
(skip duplicates, fill gaps from the history, resync on a new epoch).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections import deque
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING

from redis.exceptions import RedisError
from websockets.asyncio.server import ServerConnection
from websockets.exceptions import ConnectionClosed
from websockets.protocol import State

from clarion_gateway.protocol import (
    CLOSE_REASONS,
    KIND_NOTIFICATION,
    CloseCode,
    LiveAction,
    WireMessage,
    decide_live,
    replay_is_complete,
)
from clarion_kit.logging import get_logger

if TYPE_CHECKING:
    from clarion_gateway.adapters.history import HistoryStore
    from clarion_gateway.metrics import GatewayMetrics

log = get_logger(__name__)

Delivered = Callable[[str, WireMessage], None]
"""Called after a notification frame was written to a session: ``(user_id, message)``."""


class Session:
    """A user's live session.

    Args:
        ws: the WebSocket connection.
        user_id: the authenticated user (JWT ``sub``).
        session_id: id reported in ``connected``.
        history: the history store (gap fills).
        metrics: instance metrics.
        queue_size: frames that may wait before the session is a slow consumer.
        write_limit: transport buffer size (bytes) above which frames wait in the queue.
        on_delivered: notification frames written (delivery status, latency).
        on_closed: called once when the session ends for any reason.

    Frames offered before :meth:`start` are buffered (the recovery seam). After it,
    a frame that can be written at once (nothing queued, the transport buffer below
    ``write_limit``, the next seq) is written synchronously, as websockets'
    ``broadcast()`` does; otherwise it is queued and the session's writer task,
    started on demand, writes the queue with backpressure (``await send``) and
    ends when the queue is empty. An idle session holds no task of its own.
    """

    __slots__ = (
        "_on_closed",
        "_on_delivered",
        "_writer",
        "closed",
        "epoch",
        "history",
        "holds_channel",
        "last_seen",
        "last_sent",
        "metrics",
        "queue",
        "queue_size",
        "session_id",
        "started",
        "timer",
        "user_id",
        "write_limit",
        "ws",
    )

    def __init__(
        self,
        ws: ServerConnection,
        user_id: str,
        session_id: str,
        *,
        history: HistoryStore,
        metrics: GatewayMetrics,
        queue_size: int,
        write_limit: int,
        on_delivered: Delivered,
        on_closed: Callable[[Session], None],
    ) -> None:
        self.ws = ws
        self.user_id = user_id
        self.session_id = session_id
        self.history = history
        self.metrics = metrics
        self.queue_size = queue_size
        self.write_limit = write_limit
        # Created on first use: an idle session should not hold an empty deque's block.
        self.queue: deque[WireMessage | str] | None = None
        self.last_seen = 0.0
        self.epoch = ""
        self.last_sent = 0
        self.closed = False
        self.started = False
        self.holds_channel = False
        self.timer: asyncio.TimerHandle | None = None
        self._writer: asyncio.Task[None] | None = None
        self._on_delivered = on_delivered
        self._on_closed = on_closed

    # ------------------------------------------------------------------ input side

    def offer(self, item: WireMessage | str) -> None:
        """Write or queue a stream message or a control frame (never blocks).

        Closes the session with 4008 when the queue already holds ``queue_size`` items.
        """
        if self.closed:
            return
        if self.started and self._writer is None and self._can_write_now():
            if isinstance(item, str):
                self._write_now(item.encode())
                self.metrics.frames_control.inc()
                return
            if item.epoch == self.epoch:
                if item.seq <= self.last_sent:
                    return
                if item.seq == self.last_sent + 1:
                    self._write_now(item.frame)
                    self._account(item)
                    return
            # A gap or a new epoch: the writer task decides (it may need the history).
        if self.queue is None:
            self.queue = deque()
        elif len(self.queue) >= self.queue_size:
            self.metrics.slow_consumer_closes.inc()
            log.info("slow_consumer", user_id=self.user_id, session=self.session_id)
            self.close(CloseCode.SLOW_CONSUMER)
            return
        self.queue.append(item)
        if self.started and self._writer is None:
            self._writer = asyncio.create_task(self._write_queue())

    def start(self, epoch: str, last_sent: int) -> None:
        """Go live: the client has everything up to ``epoch:last_sent``; write the buffer."""
        self.epoch = epoch
        self.last_sent = last_sent
        self.started = True
        if self.queue and self._writer is None:
            self._writer = asyncio.create_task(self._write_queue())

    def close(self, code: CloseCode, reason: str | None = None) -> None:
        """End the session: stop writing, drop the queue, close the socket with ``code``."""
        if self.closed:
            return
        self.closed = True
        self.queue = None
        self.metrics.closes.labels(str(int(code))).inc()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._on_closed(self)
        task = asyncio.ensure_future(
            self.ws.close(int(code), reason or CLOSE_REASONS.get(code, ""))
        )
        task.add_done_callback(_ignore_result)

    def mark_closed(self) -> None:
        """The connection ended by itself (client left, network): release resources."""
        if self.closed:
            return
        self.closed = True
        self.queue = None
        code = self.ws.close_code if self.ws.close_code is not None else 1006
        self.metrics.closes.labels(str(code)).inc()
        if self._writer is not None and self._writer is not asyncio.current_task():
            self._writer.cancel()
        self._on_closed(self)

    # ------------------------------------------------------------------ output side

    def _can_write_now(self) -> bool:
        transport = self.ws.transport
        return (
            self.ws.protocol.state is State.OPEN
            and transport is not None
            and not transport.is_closing()
            and transport.get_write_buffer_size() < self.write_limit
        )

    def _write_now(self, frame: bytes) -> None:
        # What websockets.broadcast() does for one connection: frame and write, no drain.
        self.ws.protocol.send_text(frame)
        self.ws.send_data()

    def _account(self, msg: WireMessage) -> None:
        self.last_sent = msg.seq
        if msg.kind == KIND_NOTIFICATION:
            self.metrics.frames_notification.inc()
            self._on_delivered(self.user_id, msg)
        else:
            self.metrics.frames_inbox.inc()

    async def send_message(self, msg: WireMessage) -> None:
        """Write one stream message with backpressure and advance ``last_sent``."""
        await self.ws.send(msg.frame, text=True)
        self._account(msg)

    async def send_control(self, frame: str) -> None:
        """Write a frame outside the stream (``connected``, ``pong``, ``unread_count``)."""
        await self.ws.send(frame)
        self.metrics.frames_control.inc()

    async def _write_queue(self) -> None:
        try:
            while self.queue and not self.closed:
                item = self.queue.popleft()
                if not self.queue:
                    self.queue = None
                if isinstance(item, str):
                    await self.send_control(item)
                else:
                    await self._deliver(item)
        except ConnectionClosed:
            self.mark_closed()
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("session_writer_failed", user_id=self.user_id)
            self.close(CloseCode.INTERNAL_ERROR)
        finally:
            self._writer = None

    async def _deliver(self, msg: WireMessage) -> None:
        decision = decide_live(
            epoch=self.epoch, last_sent=self.last_sent, msg_epoch=msg.epoch, msg_seq=msg.seq
        )
        action = decision.action
        if action is LiveAction.SKIP:
            return
        if action is LiveAction.RESYNC:
            self.close(CloseCode.RESYNC)
            return
        if action is LiveAction.FILL_GAP:
            await self._fill_gap(decision.gap_from, decision.gap_to)
            if self.closed:
                return
        await self.send_message(msg)

    async def _fill_gap(self, gap_from: int, gap_to: int) -> None:
        self.metrics.gap_fills.inc()
        try:
            missing = await self.history.read(self.user_id, gap_from, gap_to)
        except RedisError:
            log.warning("gap_fill_failed", user_id=self.user_id)
            self.close(CloseCode.TRY_AGAIN_LATER)
            return
        seqs = [m.seq for m in missing]
        if (
            len(missing) != gap_to - gap_from + 1
            or not replay_is_complete(self.last_sent, seqs)
            or any(m.epoch != self.epoch for m in missing)
        ):
            # Trimmed or reset meanwhile: the client must refetch.
            self.close(CloseCode.RESYNC)
            return
        for m in missing:
            await self.send_message(m)


def _ignore_result(task: asyncio.Future[None]) -> None:
    if not task.cancelled():
        task.exception()


async def run_with_timeout(awaitable: Awaitable[None], timeout: float) -> None:
    """Await with a timeout, ignoring the timeout (best-effort shutdown steps)."""
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(awaitable, timeout)
