"""The channel-worker frame: compacted-topic records, delivery events, the life cycle."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from datetime import UTC, datetime
from types import SimpleNamespace
from typing import Any

import httpx
import pytest
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry

from clarion_contracts.base import Channel
from clarion_contracts.registry import DELIVERY_STATUS, EMAIL_REQUESTS, PREFERENCES
from clarion_contracts.v1 import DeliveryState, DeliveryStatus
from clarion_kit.kafka import create_broker
from clarion_kit.scheduling import SchedulePoller
from clarion_kit.settings import ServiceSettings
from clarion_kit.worker import (
    MAX_DEAD_LETTER_ERROR_CHARS,
    ChannelWorker,
    DeliveryEvents,
    materialise,
)

# --- materialise ----------------------------------------------------------------------


def record(body: bytes, key: bytes | None) -> Any:
    return SimpleNamespace(body=body, raw_message=SimpleNamespace(key=key))


class StateCopy:
    def __init__(self) -> None:
        self.applied: list[bytes] = []
        self.deleted: list[str] = []

    async def apply(self, body: bytes) -> None:
        self.applied.append(body)

    async def delete(self, key: str) -> None:
        self.deleted.append(key)


async def test_a_value_is_applied() -> None:
    state = StateCopy()
    await materialise(record(b'{"a": 1}', b"u1"), state.apply, state.delete)
    assert (state.applied, state.deleted) == ([b'{"a": 1}'], [])


async def test_an_empty_value_deletes_the_key() -> None:
    state = StateCopy()
    await materialise(record(b"", "ü1".encode()), state.apply, state.delete)
    assert (state.applied, state.deleted) == ([], ["ü1"])


async def test_a_tombstone_without_a_key_changes_nothing() -> None:
    state = StateCopy()
    await materialise(record(b"", None), state.apply, state.delete)
    assert (state.applied, state.deleted) == ([], [])


async def test_errors_of_apply_propagate() -> None:
    async def refuse(body: bytes) -> None:
        raise ValueError("not the contract")

    with pytest.raises(ValueError, match="not the contract"):
        await materialise(record(b"x", b"k"), refuse, StateCopy().delete)


async def test_a_batch_is_refused() -> None:
    batch = SimpleNamespace(body=b"x", raw_message=(SimpleNamespace(key=b"k"),))
    with pytest.raises(TypeError, match="batch"):
        await materialise(batch, StateCopy().apply, StateCopy().delete)  # type: ignore[arg-type]


# --- DeliveryEvents -------------------------------------------------------------------


class RecordingBroker:
    def __init__(self) -> None:
        self.published: list[dict[str, Any]] = []

    async def publish(self, value: bytes, **options: Any) -> None:
        self.published.append({"value": value, **options})


def events_over(broker: RecordingBroker, clean_env: pytest.MonkeyPatch) -> DeliveryEvents:
    settings = ServiceSettings(topic_prefix="t1.")
    return DeliveryEvents(broker, settings, EMAIL_REQUESTS)  # type: ignore[arg-type]


async def test_status_is_keyed_by_notification(clean_env: pytest.MonkeyPatch) -> None:
    broker = RecordingBroker()
    status = DeliveryStatus(
        status_id="email:r1:n1:delivered:1",
        notification_id="n1",
        version=1,
        recipient_id="ann",
        channel=Channel.EMAIL,
        status=DeliveryState.DELIVERED,
        occurred_at=datetime(2025, 1, 2, tzinfo=UTC),
    )
    await events_over(broker, clean_env).status(status)
    assert broker.published == [
        {
            "value": status.to_bytes(),
            "topic": "t1.clarion.delivery-status.v1",
            "key": b"n1",
            "headers": {"content-type": "application/json"},
        }
    ]


async def test_dead_letter_carries_the_request_and_the_dlq_headers(
    clean_env: pytest.MonkeyPatch,
) -> None:
    broker = RecordingBroker()
    request = SimpleNamespace(recipient_id="ann", to_bytes=lambda: b'{"request_id": "r1"}')
    before = datetime.now(UTC)
    await events_over(broker, clean_env).publish_dead_letter(
        request,
        error="x" * 5000,
        error_type="smtp_451",
        attempts=3,
        extra_headers={"x-clarion-subscription-id": "s1"},
    )
    (sent,) = broker.published
    assert (sent["value"], sent["topic"], sent["key"]) == (
        b'{"request_id": "r1"}',
        "t1.clarion.email-requests.v1.dlq",
        b"ann",
    )
    headers = sent["headers"]
    assert list(headers) == [
        "content-type",
        "x-clarion-error",
        "x-clarion-error-type",
        "x-clarion-original-topic",
        "x-clarion-attempts",
        "x-clarion-failed-at",
        "x-clarion-subscription-id",
    ]
    assert headers["x-clarion-error"] == "x" * MAX_DEAD_LETTER_ERROR_CHARS
    assert headers["x-clarion-error-type"] == "smtp_451"
    assert headers["x-clarion-original-topic"] == "t1.clarion.email-requests.v1"
    assert headers["x-clarion-attempts"] == "3"
    assert datetime.fromisoformat(headers["x-clarion-failed-at"]) >= before
    assert headers["x-clarion-subscription-id"] == "s1"


# --- ChannelWorker --------------------------------------------------------------------


class DemoWorker(ChannelWorker[ServiceSettings]):
    """A worker whose parts only record what happened to them."""

    topics = (PREFERENCES, DELIVERY_STATUS)

    def __init__(self, *args: Any, run_due: Callable[[], Any] | None = None, **kw: Any) -> None:
        super().__init__(*args, **kw)
        self.events: list[str] = []
        self.rounds = 0
        self._run_due = run_due or self._count
        self.built_with: Any = None

    async def _count(self) -> int:
        self.rounds += 1
        return 0

    def build(self, redis: Any) -> None:
        self.events.append("build")
        self.built_with = redis

    def poller(self) -> SchedulePoller:
        return SchedulePoller(self._run_due, interval=0.01, name="demo-poller")

    @property
    def shutdown_timeout(self) -> float:
        return 0.05

    async def drain(self) -> None:
        self.events.append("drain")

    async def close(self) -> None:
        self.events.append("close")

    def poller_overran(self) -> None:
        self.events.append("overran")


class SubscribingBroker:
    def __init__(self) -> None:
        self.subscribed: list[tuple[str, dict[str, Any], Any]] = []

    def subscriber(self, topic: str, **options: Any) -> Callable[[Any], Any]:
        def register(handler: Any) -> Any:
            self.subscribed.append((topic, options, handler))
            return handler

        return register


async def handler(msg: Any) -> None:
    return None


def test_subscribe_uses_the_service_group_or_its_own(clean_env: pytest.MonkeyPatch) -> None:
    broker = SubscribingBroker()
    settings = ServiceSettings(service_name="demo", topic_prefix="t2.")
    worker = DemoWorker(settings, broker)  # type: ignore[arg-type]
    worker.subscribe(PREFERENCES, handler, group_suffix="preferences")
    worker.subscribe(EMAIL_REQUESTS, handler)
    (t1, o1, h1), (t2, o2, h2) = broker.subscribed
    assert (t1, o1["group_id"], h1) == ("t2.clarion.preferences.v1", "t2.demo-preferences", handler)
    assert (t2, o2["group_id"], h2) == ("t2.clarion.email-requests.v1", "t2.demo", handler)
    # Off the live path: the background fetch wait.
    assert o1["fetch_max_wait_ms"] == o2["fetch_max_wait_ms"] == 200


def test_application_exposes_the_worker_in_its_context(clean_env: pytest.MonkeyPatch) -> None:
    worker = DemoWorker(ServiceSettings(), KafkaBroker())
    app = worker.application("demo_worker")
    assert app.context.get("demo_worker") is worker


async def test_shutdown_stops_polling_drains_then_closes(clean_env: pytest.MonkeyPatch) -> None:
    worker = DemoWorker(ServiceSettings(), KafkaBroker(), serve_http=False)
    closed: list[bool] = []
    worker.redis = SimpleNamespace(aclose=lambda: asyncio.sleep(0, closed.append(True)))  # type: ignore[assignment]
    await worker.after_startup()
    await asyncio.sleep(0.05)
    await worker.on_shutdown()
    rounds = worker.rounds
    await asyncio.sleep(0.05)
    assert worker.rounds == rounds > 0  # the poller stopped
    assert not await worker.checks.ready()
    await worker.after_shutdown()
    assert worker.events == ["drain", "close"]
    assert closed == [True]


async def test_a_poller_outliving_the_timeout_is_reported(clean_env: pytest.MonkeyPatch) -> None:
    async def stuck() -> int:
        await asyncio.Event().wait()
        return 0

    worker = DemoWorker(ServiceSettings(), KafkaBroker(), serve_http=False, run_due=stuck)
    await worker.after_startup()
    await asyncio.sleep(0.01)
    await worker.on_shutdown()
    assert worker.events == ["drain", "overran"]


@pytest.mark.integration
async def test_the_worker_runs_on_the_stack(
    stack_settings: dict[str, Any], wait_until: Any
) -> None:
    settings = ServiceSettings(**stack_settings, service_name="kit-worker")
    broker = create_broker(settings, registry=CollectorRegistry())
    worker = DemoWorker(settings, broker)
    state = StateCopy()

    async def on_preferences(msg: KafkaMessage) -> None:
        await materialise(msg, state.apply, state.delete)

    worker.subscribe(PREFERENCES, on_preferences, group_suffix="preferences")
    app = worker.application("demo_worker")
    await app.start()
    try:
        assert worker.events == ["build"]
        assert worker.built_with is worker.redis
        admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
        await admin.start()
        try:
            topics = set(await admin.list_topics())
        finally:
            await admin.close()
        for spec in worker.topics:
            assert {settings.topic(spec), settings.dlq(spec)} <= topics
        assert worker.health_server is not None
        async with httpx.AsyncClient(
            base_url=f"http://127.0.0.1:{worker.health_server.port}"
        ) as client:
            ready = await client.get("/readyz")
        assert ready.status_code == 200, ready.text
        assert set(ready.json()["checks"]) == {"redis", "kafka"}
        await broker.publish(b'{"x": 1}', topic=settings.topic(PREFERENCES), key=b"u1")
        await broker.publish(b"", topic=settings.topic(PREFERENCES), key=b"u1")
        await wait_until(lambda: state.deleted and worker.rounds >= 2, timeout=30.0)
        assert (state.applied, state.deleted) == ([b'{"x": 1}'], ["u1"])
    finally:
        await app.stop()
    assert worker.events == ["build", "drain", "close"]
