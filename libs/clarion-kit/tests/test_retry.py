"""Retry policy, DLQ headers and the DLQ middleware on FastStream's in-memory test broker."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from clarion_kit.kafka import create_broker, subscriber_options
from clarion_kit.retry import (
    DLQ_HEADERS,
    PermanentError,
    RetryPolicy,
    dead_letter,
    dlq_headers,
    is_outage,
    is_poison,
    retry_call,
)
from clarion_kit.settings import ServiceSettings

FAST = RetryPolicy(
    max_attempts=4, initial_backoff_seconds=0.001, max_backoff_seconds=0.002, jitter_seconds=0
)


@dataclass
class Record:
    topic: str = "t.clarion.x.v1"
    partition: int = 2
    offset: int = 41
    key: bytes | None = b"user-9"
    value: bytes | None = b"\x00raw\xff"
    headers: Any = field(
        default_factory=lambda: [("traceparent", b"00-abc"), ("x-clarion-attempts", b"9")]
    )


class FakeProducer:
    def __init__(self) -> None:
        self.sent: list[dict[str, Any]] = []

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> None:
        self.sent.append({"topic": topic, "value": value, "key": key, "headers": headers})


async def test_retry_call_succeeds_after_failures() -> None:
    calls = 0
    retried: list[int] = []

    async def flaky() -> str:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("try again")
        return "ok"

    assert await retry_call(flaky, FAST, on_retry=lambda e, n: retried.append(n)) == "ok"
    assert calls == 3
    assert retried == [1, 2]


async def test_retry_call_gives_up_with_last_error() -> None:
    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        raise TimeoutError(f"attempt {calls}")

    with pytest.raises(TimeoutError, match="attempt 4"):
        await retry_call(broken, FAST)
    assert calls == 4


async def test_an_outage_is_waited_out_without_using_up_attempts() -> None:
    from redis.exceptions import BusyLoadingError
    from redis.exceptions import ConnectionError as RedisConnectionError

    calls = 0
    outage = [RedisConnectionError("refused")] * 6 + [BusyLoadingError("LOADING")]

    async def during_a_restart() -> str:
        nonlocal calls
        calls += 1
        if outage:
            raise outage.pop(0)
        if calls < 10:  # then a real failure, within the policy's attempts
            raise ValueError("bad luck")
        return "ok"

    # Seven outage failures and two real ones: more runs than max_attempts (4), and
    # still the handler is not given up on, nor its record dead-lettered.
    assert await retry_call(during_a_restart, FAST) == "ok"
    assert calls == 10


async def test_real_failures_after_an_outage_still_stop_at_max_attempts() -> None:
    from redis.exceptions import ConnectionError as RedisConnectionError

    calls = 0

    async def broken() -> None:
        nonlocal calls
        calls += 1
        if calls <= 5:
            raise RedisConnectionError("refused")
        raise ValueError(f"attempt {calls}")

    with pytest.raises(ValueError, match="attempt 9"):
        await retry_call(broken, FAST)


def test_outages_are_told_from_failures_of_the_record() -> None:
    from asyncpg.exceptions import CannotConnectNowError
    from sqlalchemy.exc import DBAPIError, IntegrityError

    assert is_outage(ConnectionRefusedError())
    assert is_outage(DBAPIError("SELECT 1", {}, CannotConnectNowError("starting up")))
    lost = DBAPIError("SELECT 1", {}, Exception("closed"), connection_invalidated=True)
    assert is_outage(lost)
    wrapped = RuntimeError("handler failed")
    wrapped.__cause__ = ConnectionResetError()
    assert is_outage(wrapped)
    assert not is_outage(IntegrityError("INSERT", {}, Exception("duplicate key")))
    assert not is_outage(ValueError("bad value"))
    assert not is_outage(TimeoutError("slow handler"))


async def test_poison_is_not_retried() -> None:
    calls = 0

    async def poison() -> None:
        nonlocal calls
        calls += 1
        raise PermanentError("bad record")

    with pytest.raises(PermanentError):
        await retry_call(poison, FAST)
    assert calls == 1
    assert is_poison(json.JSONDecodeError("x", "doc", 0))
    assert not is_poison(ConnectionError())


def test_policy_validation_and_settings(clean_env: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="max_attempts"):
        RetryPolicy(max_attempts=0)
    clean_env.setenv("CLARION_RETRY_MAX_ATTEMPTS", "7")
    assert RetryPolicy.from_settings(ServiceSettings()).max_attempts == 7


def test_dlq_headers() -> None:
    h = dlq_headers(Record(), ValueError("é" * 1500), 3)
    assert set(h) == set(DLQ_HEADERS)
    assert h["x-clarion-error-type"] == "ValueError"
    assert len(h["x-clarion-error"]) == 1000
    assert h["x-clarion-original-partition"] == "2"
    assert h["x-clarion-original-offset"] == "41"
    assert h["x-clarion-attempts"] == "3"
    assert h["x-clarion-original-topic"] == "t.clarion.x.v1"
    assert dlq_headers(Record(), RuntimeError(), 1)["x-clarion-error"] == "RuntimeError"


async def test_dead_letter_keeps_record_and_replaces_stale_headers() -> None:
    producer = FakeProducer()
    await dead_letter(producer, Record(), RuntimeError("boom"), 2)
    (sent,) = producer.sent
    assert sent["topic"] == "t.clarion.x.v1.dlq"
    assert sent["value"] == b"\x00raw\xff"
    assert sent["key"] == b"user-9"
    headers = sent["headers"]
    assert ("traceparent", b"00-abc") in headers
    assert [v for k, v in headers if k == "x-clarion-attempts"] == [b"2"]


class Order(BaseModel):
    id: int


async def test_middleware_on_test_broker(clean_env: pytest.MonkeyPatch) -> None:
    settings = ServiceSettings(service_name="unit", topic_prefix="u.")
    reg = CollectorRegistry()
    broker = create_broker(settings, registry=reg, retry_policy=FAST)
    attempts: dict[int, int] = {}

    @broker.subscriber("u.orders", **subscriber_options(settings))
    @broker.publisher("u.shipped")
    async def handle(order: Order) -> Order:
        attempts[order.id] = attempts.get(order.id, 0) + 1
        if order.id == 1 or (order.id == 2 and attempts[2] == 1):
            raise RuntimeError(f"order {order.id} failed")
        return order

    @broker.subscriber("u.shipped", group_id="inspect")
    async def shipped(body: Any) -> None:
        pass

    @broker.subscriber("u.orders.dlq", group_id="inspect")
    async def dlq(body: Any) -> None:
        pass

    async with TestKafkaBroker(broker) as br:
        await br.publish({"id": 1}, "u.orders", key=b"a")
        await br.publish({"id": 2}, "u.orders", key=b"b")
        await br.publish({"id": "x"}, "u.orders", key=b"c")
        dead = [c.args[0] for c in dlq.mock.call_args_list]
        out = [c.args[0] for c in shipped.mock.call_args_list]

    assert attempts == {1: 4, 2: 2}
    # id 1 always fails (4 attempts), id 2 succeeds on its retry, id "x" is poison.
    assert dead == [{"id": 1}, {"id": "x"}]
    assert out == [{"id": 2}]  # dead-lettered records publish no result
    sample = reg.get_sample_value
    assert (
        sample(
            "clarion_unit_dlq_messages_total", {"topic": "u.orders", "error_type": "RuntimeError"}
        )
        == 1.0
    )
    assert (
        sample(
            "clarion_unit_dlq_messages_total",
            {"topic": "u.orders", "error_type": "ValidationError"},
        )
        == 1.0
    )
    assert (
        sample(
            "clarion_unit_handler_retries_total",
            {"topic": "u.orders", "error_type": "RuntimeError"},
        )
        == 4.0
    )


def test_create_broker_defaults(clean_env: pytest.MonkeyPatch) -> None:
    settings = ServiceSettings(service_name="svc", kafka_bootstrap_servers="a:1, b:2")
    broker = create_broker(settings, registry=CollectorRegistry())
    assert broker.clarion_dlq is not None  # type: ignore[attr-defined]
    opts = subscriber_options(settings, max_records=5)
    assert opts["group_id"] == "svc"
    prefixed = settings.model_copy(update={"topic_prefix": "staging."})
    assert subscriber_options(prefixed)["group_id"] == "staging.svc"
    assert subscriber_options(prefixed, group_id="svc-x")["group_id"] == "staging.svc-x"
    assert opts["auto_offset_reset"] == "earliest"
    assert opts["fetch_max_wait_ms"] == 5
    assert subscriber_options(ServiceSettings(), background=True)["fetch_max_wait_ms"] == 200
    tuned = ServiceSettings(kafka_fetch_max_wait_ms=20, kafka_background_fetch_max_wait_ms=500)
    assert subscriber_options(tuned)["fetch_max_wait_ms"] == 20
    assert subscriber_options(tuned, background=True)["fetch_max_wait_ms"] == 500
    assert opts["max_records"] == 5
    assert (opts["session_timeout_ms"], opts["heartbeat_interval_ms"]) == (10_000, 3000)
    short = ServiceSettings(kafka_session_timeout_ms=3000)
    assert subscriber_options(short)["heartbeat_interval_ms"] == 1000
    assert create_broker(settings, dead_letter=False).clarion_dlq is None  # type: ignore[attr-defined]
