"""The realtime-gateway application: factory and lifespan.

``create_app(settings)`` builds a :class:`Gateway` without connecting anything;
``async with gateway.lifespan():`` (or :meth:`Gateway.start` / :meth:`Gateway.stop`)
connects Redis and Kafka, starts the WebSocket server on ``ws_port`` (path
``/v1/ws``), the probe/metrics server on ``http_port``, the consumer-group member,
presence and delivery-status tasks; leaving it shuts down gracefully (sessions
closed with 1001, the consumer's finished batch committed).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Awaitable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from redis.asyncio import Redis
from redis.exceptions import RedisError
from websockets.asyncio.server import Server, ServerConnection, serve

from clarion_contracts.registry import DELIVERY_STATUS, INBOX_EVENTS, NOTIFICATIONS, PRESENCE
from clarion_contracts.v1 import PresenceEvent, PresenceStatus
from clarion_gateway.adapters.history import HistoryStore
from clarion_gateway.adapters.kafka import create_consumer, create_producer
from clarion_gateway.adapters.presence import PresenceStore
from clarion_gateway.adapters.pubsub import UserChannels
from clarion_gateway.adapters.resp import pack_command, run_packed
from clarion_gateway.domain.delivery import delivered_status
from clarion_gateway.domain.presence import PresenceLedger
from clarion_gateway.handlers.connection import handle_connection
from clarion_gateway.handlers.reconcile import reconcile_sessions
from clarion_gateway.handlers.records import RecordProcessor
from clarion_gateway.handlers.session import Session, run_with_timeout
from clarion_gateway.metrics import GatewayMetrics
from clarion_gateway.protocol import CLOSE_REASONS, KIND_NOTIFICATION, CloseCode, WireMessage
from clarion_gateway.settings import GatewaySettings
from clarion_kit.continuity import ConsumerGuard
from clarion_kit.health import HealthChecks, HealthServer, health_app
from clarion_kit.kafka import OutgoingRecord, ensure_topics, send_batches
from clarion_kit.logging import get_logger
from clarion_kit.redis import create_redis

log = get_logger(__name__)

_REPORTED_CACHE = 100_000
"""Notification versions remembered locally as already reported delivered."""


def _log_unacknowledged(ack: asyncio.Future[Any]) -> None:
    if not ack.cancelled() and (exc := ack.exception()) is not None:
        log.warning("delivery_status_unacknowledged", error=f"{type(exc).__name__}: {exc}")


class Gateway:
    """One gateway instance (see the module docstring).

    Attributes:
        ws_port / http_port: the bound ports (useful when settings asked for 0).
        sessions: live sessions per user on this instance.
    """

    def __init__(self, settings: GatewaySettings) -> None:
        self.settings = settings
        self.metrics = GatewayMetrics()
        self.checks = HealthChecks()
        self.prefix = settings.redis_prefix + "gw:"
        self.sessions: dict[str, set[Session]] = {}
        self.connections_per_address: dict[str, int] = {}
        self.ledger = PresenceLedger(debounce=settings.presence_debounce)
        self.ws_port = settings.ws_port
        self.http_port = settings.http_port
        self._redis: Redis | None = None
        self._history: HistoryStore | None = None
        self._channels: UserChannels | None = None
        self._presence: PresenceStore | None = None
        self._producer: AIOKafkaProducer | None = None
        self._consumer: AIOKafkaConsumer | None = None
        self._server: Server | None = None
        self._health: HealthServer | None = None
        self._tasks: list[asyncio.Task[None]] = []
        self._consume_task: asyncio.Task[None] | None = None
        self._stopping = asyncio.Event()
        self._reported: OrderedDict[tuple[str, int], None] = OrderedDict()
        self._to_report: list[tuple[str, WireMessage, datetime]] = []
        self._report_wake = asyncio.Event()
        self._ready = False
        self._reconciling: set[asyncio.Task[tuple[int, int]]] = set()

    # ------------------------------------------------------------------ accessors

    @property
    def history(self) -> HistoryStore:
        """The Redis history store (after :meth:`start`)."""
        assert self._history is not None, "gateway not started"
        return self._history

    @property
    def channels(self) -> UserChannels:
        """The pub/sub subscriptions (after :meth:`start`)."""
        assert self._channels is not None, "gateway not started"
        return self._channels

    @property
    def redis(self) -> Redis:
        """The Redis client (after :meth:`start`)."""
        assert self._redis is not None, "gateway not started"
        return self._redis

    @property
    def connection_count(self) -> int:
        """Live sessions on this instance."""
        return sum(len(s) for s in self.sessions.values())

    # ------------------------------------------------------------------ lifecycle

    @contextlib.asynccontextmanager
    async def lifespan(self) -> AsyncIterator[Gateway]:
        """Run the gateway for the duration of the ``async with`` block."""
        await self.start()
        try:
            yield self
        finally:
            await self.stop()

    async def start(self, *, kafka: bool = True) -> None:
        """Connect and serve. ``kafka=False`` runs without the consumer and producer
        (benchmarks that publish straight to Redis)."""
        s = self.settings
        self._redis = create_redis(s)
        await self._redis.ping()
        self._history = HistoryStore(
            self._redis,
            self.prefix,
            history_size=s.history_size,
            history_ttl=s.history_ttl,
            meta_ttl=s.meta_ttl,
        )
        self._presence = PresenceStore(self._redis, self.prefix, s.instance_id, s.heartbeat_ttl)
        self._channels = UserChannels(
            self._redis,
            channel_of=self._history.channel,
            deliver=self._on_message,
            control_channel=f"{self.prefix}instance:{s.instance_id}",
            on_reconnect=self._on_pubsub_reconnect,
        )
        await self._channels.start()
        await self._presence.heartbeat()
        self.checks.add("redis", self._redis.ping, timeout=1.0)
        if kafka:
            # Before any client names them: a broker that auto-creates topics on a
            # metadata request (Tansu) would otherwise pick their partitions itself.
            await ensure_topics(s, (NOTIFICATIONS, INBOX_EVENTS, DELIVERY_STATUS, PRESENCE))
            self._producer = create_producer(s)
            await self._producer.start()
            processor = RecordProcessor(s, self._history, self._producer, self.metrics)
            guard = ConsumerGuard.from_settings(s, registry=self.metrics.registry)
            # Broker data loss (a restarted memory-only broker, a recreated topic) keeps
            # the instance unready until it restarts: the history may lack those records.
            self.checks.add("kafka-data", guard.monitor.check, timeout=1.0)
            self._consumer = create_consumer(s, processor.topics, guard)
            await self._consumer.start()
            self._consume_task = asyncio.create_task(self._consume(processor))
            self._tasks.append(self._consume_task)
            self._tasks.append(asyncio.create_task(self._report_delivered()))
        self._tasks.append(asyncio.create_task(self._presence_loop()))
        self._tasks.append(asyncio.create_task(self._keepalive_loop()))
        self._server = await serve(
            lambda ws: handle_connection(self, ws),
            s.ws_host,
            s.ws_port,
            compression=s.compression,
            open_timeout=s.connect_timeout,
            # One keepalive task for all sessions instead of one per connection.
            ping_interval=None,
            close_timeout=s.close_timeout,
            max_size=s.max_message_bytes,
            max_queue=4,
            write_limit=s.write_limit,
        )
        self.ws_port = next(iter(self._server.sockets)).getsockname()[1]
        self.checks.add("accepting", self._accepting, timeout=1.0)
        self._health = HealthServer(
            health_app(self.checks, self.metrics.registry), s.http_host, s.http_port
        )
        await self._health.start()
        self.http_port = self._health.port
        self._ready = True
        log.info("gateway_started", ws_port=self.ws_port, http_port=self.http_port)

    async def _accepting(self) -> bool:
        return self._ready

    async def stop(self) -> None:
        """Graceful shutdown: refuse new connections, close sessions with 1001, stop the
        consumer after its current batch (committed), flush delivery statuses."""
        self._ready = False
        self._stopping.set()
        if self._server is not None:
            self._server.close(close_connections=False)
        for sessions in list(self.sessions.values()):
            for session in list(sessions):
                session.close(CloseCode.GOING_AWAY)
        if self._server is not None:
            # Connections that have not sent `connect` yet have no session to close.
            for conn in list(self._server.connections):
                if conn.close_code is None:
                    closing = asyncio.ensure_future(
                        conn.close(int(CloseCode.GOING_AWAY), CLOSE_REASONS[CloseCode.GOING_AWAY])
                    )
                    closing.add_done_callback(_swallow)
            await run_with_timeout(self._server.wait_closed(), self.settings.close_timeout + 1)
        if self._consume_task is not None:
            # The consumer notices _stopping after its current batch and commits it.
            await run_with_timeout(asyncio.shield(self._consume_task), 5)
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            await _bounded(task, "task")
        self._tasks.clear()
        # Every step is bounded: a stuck dependency must not keep the process alive.
        await _bounded(self._flush_reports(), "delivery status flush")
        if self._consumer is not None:
            await _bounded(self._consumer.stop(), "consumer stop")
        if self._presence is not None:
            # The other instances' sweepers unregister our users; if they are
            # reconnecting elsewhere they never appear offline.
            await _bounded(self._presence.stop_heartbeat(), "heartbeat removal")
        if self._producer is not None:
            await _bounded(self._producer.stop(), "producer stop")
        if self._channels is not None:
            await _bounded(self._channels.stop(), "pubsub stop")
        if self._health is not None:
            await _bounded(self._health.stop(), "health server stop")
        if self._redis is not None:
            await _bounded(self._redis.aclose(), "redis close")
        log.info("gateway_stopped")

    async def kill(self) -> None:
        """Stop abruptly, as a crash would: sockets dropped, nothing flushed or committed.

        Used by failover tests; the heartbeat key is left to expire.
        """
        self._ready = False
        self._stopping.set()
        for task in self._tasks:
            task.cancel()
        if self._server is not None:
            self._server.close(close_connections=False)
            for conn in list(self._server.connections):
                if conn.transport is not None:
                    conn.transport.abort()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        self._tasks.clear()
        if self._consumer is not None:
            # Leave the group without committing: the survivors take the partitions.
            with contextlib.suppress(Exception):
                await self._consumer.stop()
        if self._producer is not None:
            with contextlib.suppress(Exception):
                await self._producer.stop()
        if self._channels is not None:
            await self._channels.stop()
        if self._health is not None:
            await self._health.stop()
        if self._redis is not None:
            with contextlib.suppress(RedisError):
                await self._redis.aclose()

    # ------------------------------------------------------------------ sessions

    def admit_address(self, address: str) -> bool:
        """Count a new connection from ``address``; False (not counted) when it is at its limit."""
        held = self.connections_per_address.get(address, 0)
        if held >= self.settings.max_connections_per_ip:
            return False
        self.connections_per_address[address] = held + 1
        return True

    def release_address(self, address: str) -> None:
        """Uncount a connection admitted by :meth:`admit_address`."""
        held = self.connections_per_address.get(address, 0) - 1
        if held > 0:
            self.connections_per_address[address] = held
        else:
            self.connections_per_address.pop(address, None)

    def open_session(self, ws: ServerConnection, user_id: str, session_id: str) -> Session:
        """Register a new authenticated session (it buffers until its writer starts)."""
        session = Session(
            ws,
            user_id,
            session_id,
            history=self.history,
            metrics=self.metrics,
            queue_size=self.settings.send_queue_size,
            write_limit=self.settings.write_limit,
            on_delivered=self._on_delivered,
            on_closed=self._on_session_closed,
        )
        self.sessions.setdefault(user_id, set()).add(session)
        self.ledger.join(user_id, time.monotonic())
        self.metrics.connections.inc()
        return session

    def _on_session_closed(self, session: Session) -> None:
        user_sessions = self.sessions.get(session.user_id)
        if user_sessions is not None:
            user_sessions.discard(session)
            if not user_sessions:
                del self.sessions[session.user_id]
        if session.timer is not None:
            session.timer.cancel()
        if session.holds_channel:
            session.holds_channel = False
            self.channels.release(session.user_id)
        self.ledger.leave(session.user_id, time.monotonic())
        self.metrics.connections.dec()

    def _on_pubsub_reconnect(self) -> None:
        # Frames published while the connection was down (and a history Redis lost
        # meanwhile) are found by comparing each session with its user's stream.
        task = asyncio.create_task(reconcile_sessions(self.sessions, self.history))
        self._reconciling.add(task)
        task.add_done_callback(self._reconciling.discard)

    def _on_message(self, user_id: str, msg: WireMessage) -> None:
        sessions = self.sessions.get(user_id)
        if sessions:
            # A copy: offer() may close a slow session, which leaves the set.
            for session in tuple(sessions):
                session.offer(msg)

    # ------------------------------------------------------------------ consumer

    async def _consume(self, processor: RecordProcessor) -> None:
        assert self._consumer is not None
        try:
            await processor.run(self._consumer, self._stopping)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.exception("consumer_failed")
            self._ready = False

    # ------------------------------------------------------------------ delivery status

    def _on_delivered(self, user_id: str, msg: WireMessage) -> None:
        now = time.time()
        self.metrics.delivery_latency.observe(max(0.0, now - msg.ts_ms / 1000))
        key = (msg.notification_id, msg.version)
        if key in self._reported:
            return
        self._reported[key] = None
        if len(self._reported) > _REPORTED_CACHE:
            self._reported.popitem(last=False)
        if self._producer is None:
            return
        self._to_report.append((user_id, msg, datetime.fromtimestamp(now, UTC)))
        self._report_wake.set()

    async def _report_delivered(self) -> None:
        while True:
            await self._report_wake.wait()
            self._report_wake.clear()
            try:
                await self._flush_reports()
            except (RedisError, OSError, Exception) as exc:  # keep reporting after a blip
                log.warning("delivery_status_failed", error=str(exc))
                await asyncio.sleep(0.5)

    async def _flush_reports(self) -> None:
        if not self._to_report or self._producer is None or self._redis is None:
            return
        batch, self._to_report = self._to_report, []
        ttl = self.settings.delivery_status_dedup_ttl
        # One SET NX marker per (notification, version): the first instance to write
        # a frame of it reports it.
        packed: list[bytes] = []
        for user_id, msg, _ in batch:
            pack_command(
                (
                    b"SET",
                    f"{self.prefix}{{{user_id}}}:dlv:{msg.notification_id}:{msg.version}",
                    b"1",
                    b"NX",
                    b"EX",
                    ttl,
                ),
                packed,
            )
        firsts = await run_packed(self._redis, b"".join(packed), len(batch))
        for reply in firsts:
            if isinstance(reply, Exception):
                raise reply
        topic = self.settings.topic(DELIVERY_STATUS)
        records = [
            OutgoingRecord(topic, status.notification_id.encode(), status.to_bytes())
            for (user_id, msg, at), first in zip(batch, firsts, strict=True)
            if first and msg.kind == KIND_NOTIFICATION
            for status in (delivered_status(user_id, msg, at),)
        ]
        # Statuses feed analytics and the inbox's delivery record; their
        # acknowledgements are not awaited (frames must not wait on them).
        for ack in await send_batches(self._producer, records):
            asyncio.ensure_future(ack).add_done_callback(_log_unacknowledged)
        self.metrics.delivery_status.inc(len(records))

    # ------------------------------------------------------------------ keepalive

    async def _keepalive_loop(self) -> None:
        """Close idle sessions (4004) and dead peers (1011), ping the others.

        A single task walks every session each tick, which costs far less memory than
        websockets' per-connection keepalive task. A peer whose previous ping is
        unanswered after ``ping_timeout`` seconds is dead.
        """
        s = self.settings
        tick = min(s.ping_interval or s.idle_timeout, s.idle_timeout / 4)
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            for sessions in list(self.sessions.values()):
                for session in list(sessions):
                    if session.closed or not session.started:
                        continue
                    if now - session.last_seen > s.idle_timeout:
                        session.close(CloseCode.IDLE_TIMEOUT)
                        continue
                    if s.ping_interval is None:
                        continue
                    ws = session.ws
                    pending = ws.pending_pings
                    timeout = s.ping_timeout
                    if pending and timeout is not None:
                        oldest = min(sent for _, sent in pending.values())
                        if loop.time() - oldest > timeout:
                            session.close(CloseCode.INTERNAL_ERROR, "keepalive ping timeout")
                        continue
                    ping = asyncio.ensure_future(ws.ping())
                    ping.add_done_callback(_swallow)

    # ------------------------------------------------------------------ presence

    async def _presence_loop(self) -> None:
        s = self.settings
        assert self._presence is not None
        tick = min(0.25, max(0.05, s.presence_debounce / 4)) if s.presence_debounce else 0.1
        next_beat = next_sweep = time.monotonic()
        while True:
            await asyncio.sleep(tick)
            now = time.monotonic()
            try:
                for user_id, status in self.ledger.due(now):
                    if status is PresenceStatus.ONLINE:
                        changed = await self._presence.register(user_id)
                    else:
                        changed = await self._presence.unregister(user_id)
                    if changed:
                        await self._publish_presence(user_id, status)
                if now >= next_beat:
                    next_beat = now + s.heartbeat_interval
                    await self._presence.heartbeat()
                if now >= next_sweep:
                    next_sweep = now + s.sweep_interval
                    for user_id in await self._presence.sweep():
                        if not self.ledger.sessions(user_id):
                            await self._publish_presence(user_id, PresenceStatus.OFFLINE)
            except (RedisError, OSError) as exc:
                log.warning("presence_failed", error=str(exc))

    async def _publish_presence(self, user_id: str, status: PresenceStatus) -> None:
        self.metrics.presence.labels(status.value).inc()
        if self._producer is None:
            return
        event = PresenceEvent(
            event_id=uuid4(),
            user_id=user_id,
            status=status,
            sessions=self.ledger.sessions(user_id),
            instance_id=self.settings.instance_id,
            occurred_at=datetime.now(UTC),
        )
        await self._producer.send(
            self.settings.topic(PRESENCE), value=event.to_bytes(), key=user_id.encode()
        )


async def _bounded(step: Awaitable[Any], what: str, timeout: float = 5.0) -> None:
    """Await one shutdown step for at most ``timeout`` seconds; log instead of raising."""
    try:
        await asyncio.wait_for(step, timeout)
    except asyncio.CancelledError:
        if isinstance(step, asyncio.Task) and step.cancelled():
            return  # the task we cancelled ended
        raise
    except Exception as exc:  # includes TimeoutError
        log.warning("shutdown_step_failed", step=what, error=repr(exc))


def _swallow(task: asyncio.Future[Any]) -> None:
    if not task.cancelled():
        task.exception()


def create_app(settings: GatewaySettings | None = None) -> Gateway:
    """Build a gateway from ``settings`` (default: the environment). Connects nothing."""
    return Gateway(settings or GatewaySettings())
