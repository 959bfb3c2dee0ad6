"""Fan-out across instances: one Redis pub/sub connection per instance, one channel per user.

An instance subscribes to a user's channel while it holds at least one session of
that user and hands every message to those sessions. Redis pub/sub is
at-most-once (a message published while the subscription or the connection is
not in place is lost); sessions detect the hole by its seq and fill it from the
history (:func:`clarion_gateway.protocol.decide_live`). A hole at the END of a
stream has no later message to reveal it, so when the connection comes back after
a failure (redis-py resubscribes every channel on reconnect) ``on_reconnect`` is
called and the instance compares each session with its user's stream
(:mod:`clarion_gateway.handlers.reconcile`).
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import RedisError

from clarion_gateway.protocol import WireMessage, decode_wire
from clarion_kit.logging import get_logger

log = get_logger(__name__)

Deliver = Callable[[str, WireMessage], None]
"""Called with ``(user_id, message)`` for every message on a subscribed user channel."""


class _Channel:
    __slots__ = ("confirmed", "refs", "unsubscribe_handle", "user_id")

    def __init__(self, user_id: str, loop: asyncio.AbstractEventLoop) -> None:
        self.user_id = user_id
        self.refs = 0
        self.confirmed: asyncio.Future[None] = loop.create_future()
        self.unsubscribe_handle: asyncio.TimerHandle | None = None


class UserChannels:
    """Reference-counted subscriptions to users' channels on one pub/sub connection.

    Args:
        redis: the Redis client (a dedicated connection is taken from it).
        channel_of: maps a user id to its channel name.
        deliver: called for each message (in the reader task; must not block).
        control_channel: a channel this instance always listens to (keeps the
            connection subscribed while no user is).
        unsubscribe_delay: seconds a channel stays subscribed after its last
            session left, so a reconnecting client does not churn subscriptions.
        on_reconnect: called (in the reader task; must not block) once the
            subscriptions are confirmed again after the connection failed.
    """

    def __init__(
        self,
        redis: Redis,
        *,
        channel_of: Callable[[str], str],
        deliver: Deliver,
        control_channel: str,
        unsubscribe_delay: float = 5.0,
        on_reconnect: Callable[[], None] | None = None,
    ) -> None:
        self._redis = redis
        self._pubsub = redis.pubsub()
        self._channel_of = channel_of
        self._deliver = deliver
        self._control = control_channel
        self._delay = unsubscribe_delay
        self._channels: dict[bytes, _Channel] = {}
        self._by_user: dict[str, _Channel] = {}
        self._task: asyncio.Task[None] | None = None
        self._control_ready: asyncio.Future[None] | None = None
        self._on_reconnect = on_reconnect
        self._broken = False

    async def start(self) -> None:
        """Connect and start reading (returns once the control subscription is confirmed)."""
        loop = asyncio.get_running_loop()
        self._control_ready = loop.create_future()
        await self._pubsub.subscribe(self._control)
        self._task = asyncio.create_task(self._read(), name="gateway-pubsub-reader")
        await asyncio.wait_for(asyncio.shield(self._control_ready), 10)

    async def stop(self) -> None:
        """Stop reading and close the pub/sub connection."""
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(asyncio.CancelledError, RedisError):
                await self._task
        with contextlib.suppress(RedisError, RuntimeError):
            await self._pubsub.aclose()  # type: ignore[no-untyped-call]

    async def acquire(self, user_id: str, timeout: float = 5.0) -> None:
        """Hold a subscription to ``user_id``'s channel; returns once Redis confirmed it.

        Raises:
            TimeoutError: no confirmation in ``timeout`` seconds.
            redis.RedisError: the subscription could not be sent.
        """
        ch = self._by_user.get(user_id)
        if ch is None:
            ch = _Channel(user_id, asyncio.get_running_loop())
            name = self._channel_of(user_id)
            self._by_user[user_id] = ch
            self._channels[name.encode()] = ch
            ch.refs += 1
            try:
                await self._pubsub.subscribe(name)
            except BaseException:
                ch.refs -= 1
                self._forget(ch)
                raise
        else:
            ch.refs += 1
            if ch.unsubscribe_handle is not None:
                ch.unsubscribe_handle.cancel()
                ch.unsubscribe_handle = None
        try:
            await asyncio.wait_for(asyncio.shield(ch.confirmed), timeout)
        except BaseException:
            self.release(user_id)
            raise

    def release(self, user_id: str) -> None:
        """Drop one hold; the channel is unsubscribed ``unsubscribe_delay`` after the last."""
        ch = self._by_user.get(user_id)
        if ch is None:
            return
        ch.refs -= 1
        if ch.refs <= 0 and ch.unsubscribe_handle is None:
            loop = asyncio.get_running_loop()
            ch.unsubscribe_handle = loop.call_later(self._delay, self._unsubscribe_now, ch)

    def _unsubscribe_now(self, ch: _Channel) -> None:
        ch.unsubscribe_handle = None
        if ch.refs > 0:
            return
        self._forget(ch)
        task = asyncio.ensure_future(self._pubsub.unsubscribe(self._channel_of(ch.user_id)))
        task.add_done_callback(_log_failure)

    def _forget(self, ch: _Channel) -> None:
        if self._by_user.get(ch.user_id) is ch:
            del self._by_user[ch.user_id]
            self._channels.pop(self._channel_of(ch.user_id).encode(), None)

    @property
    def subscribed_users(self) -> int:
        """How many user channels are held."""
        return len(self._by_user)

    async def _read(self) -> None:
        while True:
            try:
                message = await self._pubsub.get_message(timeout=None)
            except asyncio.CancelledError:
                raise
            except (RedisError, OSError) as exc:
                # redis-py reconnects and resubscribes on the next call; what was
                # published meanwhile is recovered by gap detection.
                log.warning("pubsub_read_failed", error=str(exc))
                self._broken = True
                await asyncio.sleep(0.5)
                continue
            if message is not None:
                self._handle(message)

    def _handle(self, message: dict[str, Any]) -> None:
        kind = message["type"]
        channel = message["channel"]
        if kind == "message":
            ch = self._channels.get(channel)
            if ch is None:
                return
            try:
                wire = decode_wire(message["data"])
            except ValueError:
                log.error("pubsub_bad_message", channel=channel)
                return
            self._deliver(ch.user_id, wire)
        elif kind == "subscribe":
            if channel == self._control.encode():
                if self._control_ready is not None and not self._control_ready.done():
                    self._control_ready.set_result(None)
                if self._broken:
                    # One SUBSCRIBE names every channel on reconnect, so once Redis
                    # confirms one of them all are in place again.
                    self._broken = False
                    log.info("pubsub_resubscribed", users=len(self._by_user))
                    if self._on_reconnect is not None:
                        self._on_reconnect()
                return
            ch = self._channels.get(channel)
            if ch is not None and not ch.confirmed.done():
                ch.confirmed.set_result(None)


def _log_failure(task: asyncio.Future[Any]) -> None:
    if not task.cancelled() and task.exception() is not None:
        log.warning("pubsub_unsubscribe_failed", error=str(task.exception()))
