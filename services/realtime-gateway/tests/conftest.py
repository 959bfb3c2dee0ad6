"""Fixtures of the gateway tests: gateway instances on the embedded stack, clients, producers."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import TopicAlreadyExistsError
from websockets.asyncio.client import ClientConnection, connect

from clarion_contracts.base import Actor, Channel, EventObject
from clarion_contracts.registry import (
    DELIVERY_STATUS,
    INBOX_EVENTS,
    NOTIFICATIONS,
    PRESENCE,
    TopicSpec,
)
from clarion_contracts.v1 import InboxAction, InboxEvent, Notification
from clarion_devstack.testing import eventually
from clarion_gateway.app import Gateway, create_app
from clarion_gateway.settings import GatewaySettings
from clarion_kit.auth import issue_token

GATEWAY_TOPICS: tuple[TopicSpec, ...] = (NOTIFICATIONS, INBOX_EVENTS, DELIVERY_STATUS, PRESENCE)


async def wait_for(
    predicate: Callable[[], Awaitable[bool]] | Callable[[], bool],
    timeout: float = 20.0,
    what: str = "condition",
) -> None:
    """Poll ``predicate`` until it is true (bounded; raises AssertionError on timeout)."""
    await eventually(predicate, timeout, what=what)


def make_notification(
    user: str, nid: str, version: int = 1, *, body: str = "", title: str | None = None
) -> Notification:
    """A valid notification version for ``user``."""
    now = datetime.now(UTC)
    created = now - timedelta(seconds=version - 1)
    return Notification(
        notification_id=nid,
        version=version,
        recipient_id=user,
        type="post.liked",
        category="social",
        group_key=f"{user}|post.liked|post:1|0",
        object=EventObject(type="post", id="1", title="A post"),
        actors=[Actor(id="alice", name="Alice <b>")],
        actor_count=version,
        event_ids=[uuid.uuid4()],
        title=title or f"Alice liked your post ({nid} v{version})",
        body=body or "Alice liked your post",
        body_html="Alice liked your post",
        channels=[Channel.IN_APP],
        created_at=created,
        updated_at=now,
        first_occurred_at=created,
        last_occurred_at=now,
    )


def make_inbox_event(user: str, action: InboxAction, ids: list[str], unread: int) -> InboxEvent:
    """A valid inbox event for ``user``."""
    return InboxEvent(
        event_id=uuid.uuid4(),
        recipient_id=user,
        action=action,
        notification_ids=ids,
        unread_count=unread,
        occurred_at=datetime.now(UTC),
    )


async def create_topics(bootstrap: str, names: list[str]) -> None:
    """Create ``names`` with 2 partitions each (existing ones are fine)."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        for name in names:
            with contextlib.suppress(TopicAlreadyExistsError):
                await admin.create_topics(
                    [NewTopic(name=name, num_partitions=2, replication_factor=1)]
                )
    finally:
        await admin.close()


@pytest.fixture
async def stack_settings(devstack: Any, topic_prefix: str, redis_prefix: str) -> dict[str, Any]:
    """Settings shared by the gateway instances of one test, topics created."""
    names: list[str] = []
    for spec in GATEWAY_TOPICS:
        names += [topic_prefix + spec.name, topic_prefix + spec.dlq]
    await create_topics(devstack.kafka_bootstrap_servers, names)
    return {
        "kafka_bootstrap_servers": devstack.kafka_bootstrap_servers,
        "redis_url": devstack.redis_url,
        "topic_prefix": topic_prefix,
        "redis_prefix": redis_prefix,
        "environment": "test",
        "ws_port": 0,
        "http_port": 0,
        "kafka_auto_offset_reset": "earliest",
        "presence_debounce": 0.2,
        "heartbeat_interval": 0.5,
        "heartbeat_ttl": 2,
        "sweep_interval": 0.5,
        "connect_timeout": 1.0,
        "close_timeout": 1.0,
        "event_loop": "asyncio",
    }


class Client:
    """A test WebSocket client of the gateway protocol."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.frames: list[dict[str, Any]] = []
        self.connected: dict[str, Any] = {}

    @property
    def offset(self) -> str:
        """The last offset seen (stream frames, else the connected frame)."""
        for frame in reversed(self.frames):
            if frame["type"].startswith("notification"):
                return str(frame["offset"])
        return str(self.connected["offset"])

    async def recv(self, timeout: float = 20.0) -> dict[str, Any]:
        """Receive one frame (JSON) and keep it."""
        frame: dict[str, Any] = json.loads(await asyncio.wait_for(self.ws.recv(), timeout))
        self.frames.append(frame)
        return frame

    async def recv_until(self, count: int, timeout: float = 20.0) -> list[dict[str, Any]]:
        """Receive until ``count`` stream frames arrived in total; return them all."""
        deadline = time.monotonic() + timeout
        while len(self.stream_frames()) < count:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise AssertionError(f"got {len(self.stream_frames())} of {count} frames")
            await self.recv(remaining)
        return self.stream_frames()

    def stream_frames(self) -> list[dict[str, Any]]:
        """Frames of the user's stream (``notification.*`` / ``notifications.*``)."""
        return [f for f in self.frames if f["type"].startswith("notification")]

    async def close(self) -> None:
        """Close the connection normally."""
        await self.ws.close()


def released(gw: Gateway) -> bool:
    """The gateway holds no socket, session, per-address count or presence count."""
    assert gw._server is not None
    return (
        not gw._server.all_connections
        and gw.connection_count == 0
        and gw.connections_per_address == {}
        and gw.metrics.connections._value.get() == 0
        and all(state.sessions == 0 for state in gw.ledger._users.values())
    )


class Harness:
    """Gateway instances, clients and producers of one integration test."""

    wait_for = staticmethod(wait_for)
    released = staticmethod(released)
    notification = staticmethod(make_notification)
    inbox_event = staticmethod(make_inbox_event)
    token = staticmethod(lambda user, ttl=3600: token_for(user, ttl))

    def __init__(self, settings: dict[str, Any], producer: AIOKafkaProducer) -> None:
        self.settings = settings
        self.prefix: str = settings["topic_prefix"]
        self.producer = producer
        self.gateways: list[Gateway] = []
        self.clients: list[Client] = []

    async def gateway(self, *, kafka: bool = True, **overrides: Any) -> Gateway:
        """Start a gateway instance in this process (``kafka=False``: no consumer/producer)."""
        settings = GatewaySettings(
            **{**self.settings, "instance_id": f"gw-{uuid.uuid4().hex[:6]}", **overrides}
        )
        gateway = create_app(settings)
        await gateway.start(kafka=kafka)
        self.gateways.append(gateway)
        return gateway

    async def client(
        self, gateway: Gateway, user: str, since: str | None = None, **kwargs: Any
    ) -> Client:
        """Connect and authenticate as ``user``; the ``connected`` frame is stored."""
        ws = await connect(f"ws://127.0.0.1:{gateway.ws_port}/v1/ws", **kwargs)
        await ws.send(json.dumps({"type": "connect", "token": token_for(user), "since": since}))
        client = Client(ws)
        first = json.loads(await asyncio.wait_for(ws.recv(), 20))
        assert first["type"] == "connected", first
        client.connected = first
        self.clients.append(client)
        return client

    async def notify(self, notification: Notification) -> None:
        """Produce a notification version to the (prefixed) notifications topic."""
        await self.producer.send_and_wait(
            self.prefix + NOTIFICATIONS.name,
            value=notification.to_bytes(),
            key=notification.recipient_id.encode(),
        )

    async def inbox(self, event: InboxEvent) -> None:
        """Produce an inbox event to the (prefixed) inbox-events topic."""
        await self.producer.send_and_wait(
            self.prefix + INBOX_EVENTS.name,
            value=event.to_bytes(),
            key=event.recipient_id.encode(),
        )

    async def read_topic(
        self, spec: TopicSpec, predicate: Callable[[list[Any]], bool], timeout: float = 30.0
    ) -> list[Any]:
        """Read ``spec``'s (prefixed) topic from the start until ``predicate(models)`` holds."""
        consumer = AIOKafkaConsumer(
            self.prefix + spec.name,
            bootstrap_servers=self.settings["kafka_bootstrap_servers"],
            auto_offset_reset="earliest",
            fetch_max_wait_ms=10,
        )
        await consumer.start()
        models: list[Any] = []
        deadline = time.monotonic() + timeout
        try:
            while not predicate(models):
                if time.monotonic() > deadline:
                    raise AssertionError(f"{spec.name}: condition not met, got {models}")
                batch = await consumer.getmany(timeout_ms=200)
                for records in batch.values():
                    models.extend(spec.model.from_bytes(r.value) for r in records if r.value)
        finally:
            await consumer.stop()
        return models

    async def close(self) -> None:
        for client in self.clients:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(client.ws.close(), 2)
        for gateway in self.gateways:
            if gateway._ready:
                await gateway.stop()


def token_for(user: str, ttl: int = 3600) -> str:
    """A development JWT for ``user`` signed with the default secret."""
    return issue_token(GatewaySettings(environment="test"), user, ttl=ttl)


@pytest.fixture
async def harness(stack_settings: dict[str, Any], devstack: Any) -> AsyncIterator[Harness]:
    """A :class:`Harness` on this test's topics and Redis prefix."""
    prod = AIOKafkaProducer(
        bootstrap_servers=devstack.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await prod.start()
    h = Harness(stack_settings, prod)
    try:
        yield h
    finally:
        await h.close()
        await prod.stop()
