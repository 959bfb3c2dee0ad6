"""Kafka integration: topic creation, retries and the DLQ, trace context across a hop.

Runs against the devstack's Kafka-protocol broker; each test isolates its topics
with ``topic_prefix``. Waits are bounded by timeouts and never asserted on.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from opentelemetry import trace
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from prometheus_client import CollectorRegistry
from pydantic import BaseModel

from clarion_contracts.registry import DOMAIN_EVENTS, PREFERENCES, TopicSpec
from clarion_devstack.testing import eventually
from clarion_kit.kafka import (
    COALESCE_MAX_RECORDS,
    IntervalCommitConsumer,
    OutgoingRecord,
    create_broker,
    ensure_topics,
    ping,
    send_batches,
    subscriber_options,
)
from clarion_kit.retry import RetryPolicy
from clarion_kit.settings import ServiceSettings
from clarion_kit.tracing import get_tracer, inject

pytestmark = pytest.mark.integration

WAIT = 30.0
FAST_RETRY = RetryPolicy(
    max_attempts=3, initial_backoff_seconds=0.01, max_backoff_seconds=0.05, jitter_seconds=0.01
)


class Ping(BaseModel):
    n: int


@pytest.fixture
def settings(devstack: Any, topic_prefix: str, clean_env: pytest.MonkeyPatch) -> ServiceSettings:
    return ServiceSettings(
        service_name="kit-test",
        kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
        topic_prefix=topic_prefix,
        kafka_partitions_override=1,
        kafka_session_timeout_ms=3000,  # the embedded broker then admits a member in ~1.5 s
    )


@pytest.fixture
async def producer(settings: ServiceSettings) -> AsyncIterator[AIOKafkaProducer]:
    p = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await p.start()
    yield p
    await p.stop()


async def _read(settings: ServiceSettings, topic: str, count: int) -> list[Any]:
    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        records = []
        async with asyncio.timeout(WAIT):
            while len(records) < count:
                records.append(await consumer.getone())
        return records
    finally:
        await consumer.stop()


def _group(settings: ServiceSettings) -> str:
    return settings.topic_prefix + settings.service_name


async def _started(broker: KafkaBroker) -> None:
    await asyncio.wait_for(broker.start(), WAIT)


async def test_ensure_topics_creates_topics_and_dlqs(settings: ServiceSettings) -> None:
    specs = (DOMAIN_EVENTS, PREFERENCES)
    created = await ensure_topics(settings, specs)
    expected = {settings.topic(s) for s in specs} | {settings.dlq(s) for s in specs}
    assert set(created) == expected

    admin = AIOKafkaAdminClient(bootstrap_servers=settings.kafka_bootstrap_servers)
    await admin.start()
    try:
        described = {t["topic"]: t for t in await admin.describe_topics(sorted(expected))}
    finally:
        await admin.close()
    assert set(described) == expected
    assert all(len(t["partitions"]) == 1 for t in described.values())

    assert await ensure_topics(settings, specs) == []  # idempotent: all exist now


async def _subscribe(
    settings: ServiceSettings,
    spec: TopicSpec,
    handler: Callable[..., Any],
    registry: CollectorRegistry,
) -> KafkaBroker:
    await ensure_topics(settings, [spec])
    broker = create_broker(settings, registry=registry, retry_policy=FAST_RETRY)
    # A group per test: a group shared with an earlier test's departed member would make
    # the join wait for that member's session timeout.
    options = subscriber_options(settings, group_id=_group(settings))
    broker.subscriber(settings.topic(spec), **options)(handler)
    await _started(broker)
    return broker


async def test_failing_handler_ends_in_dlq(
    settings: ServiceSettings, producer: AIOKafkaProducer
) -> None:
    calls: list[dict[str, Any]] = []

    async def always_fails(body: dict[str, Any]) -> None:
        calls.append(body)
        raise RuntimeError("downstream refused " + "x" * 2000)

    reg = CollectorRegistry()
    broker = await _subscribe(settings, DOMAIN_EVENTS, always_fails, reg)
    try:
        value = b'{"opaque": "\xc3\xa9v\xc3\xa9nement"}'
        meta = await producer.send_and_wait(
            settings.topic(DOMAIN_EVENTS), value, key=b"user-1", headers=[("origin", b"test")]
        )
        (dead,) = await _read(settings, settings.dlq(DOMAIN_EVENTS), 1)
    finally:
        await broker.stop()

    headers = {k: v.decode() for k, v in dead.headers}
    assert dead.value == value
    assert dead.key == b"user-1"
    assert headers["origin"] == "test"
    assert headers["x-clarion-attempts"] == "3"
    assert headers["x-clarion-error-type"] == "RuntimeError"
    assert headers["x-clarion-error"].startswith("downstream refused xxx")
    assert len(headers["x-clarion-error"]) == 1000
    assert headers["x-clarion-original-topic"] == settings.topic(DOMAIN_EVENTS)
    assert headers["x-clarion-original-partition"] == str(meta.partition)
    assert headers["x-clarion-original-offset"] == str(meta.offset)
    assert headers["x-clarion-failed-at"].endswith("+00:00")
    assert calls == [{"opaque": "événement"}] * 3
    labels = {"topic": settings.topic(DOMAIN_EVENTS), "error_type": "RuntimeError"}
    assert reg.get_sample_value("clarion_kit_test_dlq_messages_total", labels) == 1.0
    assert reg.get_sample_value("clarion_kit_test_handler_retries_total", labels) == 2.0


async def test_poison_record_is_not_retried_and_flaky_one_is_not_dead_lettered(
    settings: ServiceSettings, producer: AIOKafkaProducer
) -> None:
    seen: list[int] = []
    failed_once: set[int] = set()
    both_done = asyncio.Event()

    async def flaky(msg: Ping) -> None:
        if msg.n not in failed_once:
            failed_once.add(msg.n)
            raise ConnectionError("transient")
        seen.append(msg.n)
        if len(seen) == 2:
            both_done.set()

    reg = CollectorRegistry()
    broker = await _subscribe(settings, DOMAIN_EVENTS, flaky, reg)
    topic = settings.topic(DOMAIN_EVENTS)
    try:
        # One partition: the DLQ's first record tells whether the flaky record went there.
        await producer.send_and_wait(topic, json.dumps({"n": 1}).encode(), key=b"k")
        await producer.send_and_wait(topic, b'{"n": "not a number"}', key=b"k")
        await producer.send_and_wait(topic, json.dumps({"n": 2}).encode(), key=b"k")
        (dead,) = await _read(settings, settings.dlq(DOMAIN_EVENTS), 1)
        await asyncio.wait_for(both_done.wait(), WAIT)
    finally:
        await broker.stop()

    headers = {k: v.decode() for k, v in dead.headers}
    assert dead.value == b'{"n": "not a number"}'
    assert headers["x-clarion-attempts"] == "1"
    assert headers["x-clarion-error-type"] == "ValidationError"
    assert headers["x-clarion-original-offset"] == "1"
    assert seen == [1, 2]
    retries = reg.get_sample_value(
        "clarion_kit_test_handler_retries_total",
        {"topic": topic, "error_type": "ConnectionError"},
    )
    assert retries == 2.0


async def test_offset_committed_after_dead_letter(
    settings: ServiceSettings, producer: AIOKafkaProducer
) -> None:
    async def fails(body: Any) -> None:
        raise RuntimeError("no")

    broker = await _subscribe(settings, PREFERENCES, fails, CollectorRegistry())
    try:
        # FastStream's consumers commit through the interval committer (flushed on stop).
        consumer = broker.subscribers[0].consumer
        assert isinstance(consumer, IntervalCommitConsumer)
        assert consumer._commit_interval == settings.kafka_commit_interval_ms / 1000
        await producer.send_and_wait(settings.topic(PREFERENCES), b"v", key=b"k")
        await _read(settings, settings.dlq(PREFERENCES), 1)
    finally:
        await broker.stop()

    # A member of the same group (prefixed like the topics) reads the committed position.
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.topic_prefix + _group(settings),
        enable_auto_commit=False,
    )
    await consumer.start()
    try:
        committed = await asyncio.wait_for(
            consumer.committed(TopicPartition(settings.topic(PREFERENCES), 0)), WAIT
        )
    finally:
        await consumer.stop()
    assert committed == 1


async def test_trace_context_crosses_kafka(
    settings: ServiceSettings, producer: AIOKafkaProducer, spans: InMemorySpanExporter
) -> None:
    received: asyncio.Queue[tuple[int, dict[str, Any]]] = asyncio.Queue()

    async def traced(msg: Ping, message: KafkaMessage) -> None:
        ctx = trace.get_current_span().get_span_context()
        await received.put((ctx.trace_id, dict(message.headers)))

    broker = await _subscribe(settings, DOMAIN_EVENTS, traced, CollectorRegistry())
    topic = settings.topic(DOMAIN_EVENTS)
    tracer = get_tracer("kit-test")
    try:
        assert await ping(broker) is None
        # 1. through FastStream's publisher (telemetry middleware injects traceparent)
        with tracer.start_as_current_span("publish-via-broker") as span:
            await broker.publish(Ping(n=1), topic, key=b"k")
            first_trace = span.get_span_context().trace_id
        # 2. a raw aiokafka produce with headers injected by clarion_kit.tracing.inject
        with tracer.start_as_current_span("publish-raw") as span:
            headers: list[tuple[str, bytes]] = []
            inject(headers)
            await producer.send_and_wait(topic, b'{"n": 2}', key=b"k", headers=headers)
            second_trace = span.get_span_context().trace_id
        async with asyncio.timeout(WAIT):
            got1 = await received.get()
            got2 = await received.get()
    finally:
        await broker.stop()

    assert got1[0] == first_trace
    assert got2[0] == second_trace
    assert "traceparent" in got1[1]
    process_spans = [s for s in spans.get_finished_spans() if s.context.trace_id == second_trace]
    assert any(s.kind == trace.SpanKind.CONSUMER for s in process_spans)


async def test_raw_records_decoder_hands_over_the_consumer_records() -> None:
    from types import SimpleNamespace

    from clarion_kit.kafka import raw_records

    one, two = SimpleNamespace(offset=1), SimpleNamespace(offset=2)
    assert await raw_records(SimpleNamespace(raw_message=(one, two))) == [one, two]
    assert await raw_records(SimpleNamespace(raw_message=[one])) == [one]
    assert await raw_records(SimpleNamespace(raw_message=two)) == [two]


@contextlib.asynccontextmanager
async def _member(settings: ServiceSettings, topic: str, interval_ms: int) -> AsyncIterator[Any]:
    """A started group member committing per ``interval_ms``, stopped (gracefully) on exit."""
    consumer = IntervalCommitConsumer(
        topic,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.topic_prefix + "interval",
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=5,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
        commit_interval_ms=interval_ms,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _take(consumer: Any, count: int) -> None:
    got = 0
    async with asyncio.timeout(WAIT):
        while got < count:
            batches = await consumer.getmany(timeout_ms=200, max_records=count - got)
            got += sum(len(records) for records in batches.values())


async def _process_twice(consumer: Any) -> None:
    """Take two records and commit, twice (the second commit falls within the interval)."""
    for _ in range(2):
        await _take(consumer, 2)
        await consumer.commit()


async def _committed(settings: ServiceSettings, topic: str) -> int | None:
    reader = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.topic_prefix + "interval",
        enable_auto_commit=False,
    )
    await reader.start()
    try:
        offset: int | None = await asyncio.wait_for(
            reader.committed(TopicPartition(topic, 0)), WAIT
        )
        return offset
    finally:
        await reader.stop()


@pytest.fixture
async def four_records(settings: ServiceSettings, producer: AIOKafkaProducer) -> str:
    await ensure_topics(settings, [PREFERENCES])
    topic = settings.topic(PREFERENCES)
    for n in range(4):
        await producer.send_and_wait(topic, str(n).encode(), key=b"k")
    return topic


async def test_interval_commit_defers_a_second_commit_to_the_timer(
    settings: ServiceSettings, four_records: str
) -> None:
    async with _member(settings, four_records, interval_ms=2000) as consumer:
        await _take(consumer, 2)
        await consumer.commit()  # the first one goes out at once
        assert await _committed(settings, four_records) == 2
        await _take(consumer, 2)
        await consumer.commit()  # within the interval: only the timer commits it
        assert await _committed(settings, four_records) == 2

        async def committed_all() -> bool:
            return await _committed(settings, four_records) == 4

        await eventually(committed_all, timeout=10, interval=0.1, what="timer commit")


async def test_interval_commit_flushes_on_stop(
    settings: ServiceSettings, four_records: str
) -> None:
    async with _member(settings, four_records, interval_ms=60_000) as consumer:
        await _process_twice(consumer)
    # Leaving stopped the consumer: graceful shutdown commits what was finished.
    assert await _committed(settings, four_records) == 4


async def test_interval_commit_drops_positions_from_before_a_rebalance(
    settings: ServiceSettings, four_records: str
) -> None:
    async with _member(settings, four_records, interval_ms=60_000) as consumer:
        await _process_twice(consumer)  # the second commit is pending
        consumer.unsubscribe()
        consumer.subscribe([four_records])  # a rebalance: a new assignment

        async def reassigned() -> bool:
            await consumer.getmany(timeout_ms=100)
            return bool(consumer.assignment())

        await eventually(reassigned, timeout=WAIT, interval=0.05, what="new assignment")
    # The new owner resumes from the last commit; the stale position is never committed.
    assert await _committed(settings, four_records) == 2


async def test_interval_zero_commits_every_time(
    settings: ServiceSettings, four_records: str
) -> None:
    async with _member(settings, four_records, interval_ms=0) as consumer:
        for done in (2, 4):
            await _take(consumer, 2)
            await consumer.commit()
            assert await _committed(settings, four_records) == done


def _count_produce_requests(producer: AIOKafkaProducer) -> list[int]:
    """Wrap the producer's client so each ProduceRequest it sends is counted."""
    client: Any = producer.client
    sent = client.send
    counted = [0]

    async def counting(node_id: int, request: Any, *args: Any, **kwargs: Any) -> Any:
        if type(request).__name__.startswith("ProduceRequest"):
            counted[0] += 1
        return await sent(node_id, request, *args, **kwargs)

    client.send = counting
    return counted


async def test_concurrent_single_record_sends_share_produce_requests(
    settings: ServiceSettings, producer: AIOKafkaProducer
) -> None:
    await ensure_topics(settings, [DOMAIN_EVENTS])
    topic = settings.topic(DOMAIN_EVENTS)
    requests = _count_produce_requests(producer)
    callers = 80

    async def one(n: int) -> None:
        record = OutgoingRecord(topic, f"k{n % 4}".encode(), str(n).encode())
        await asyncio.gather(*await send_batches(producer, [record]))

    await asyncio.gather(*(one(n) for n in range(callers)))
    # A batch per caller would take a round trip per caller: one request each.
    assert 1 <= requests[0] <= callers // 4
    records = await _read(settings, topic, callers)
    assert sorted(int(r.value) for r in records) == list(range(callers))
    for key in {r.key for r in records}:
        values = [int(r.value) for r in records if r.key == key]
        assert values == sorted(values)


async def test_many_records_for_one_partition_keep_their_order(
    settings: ServiceSettings, producer: AIOKafkaProducer
) -> None:
    await ensure_topics(settings, [DOMAIN_EVENTS])
    topic = settings.topic(DOMAIN_EVENTS)
    count = COALESCE_MAX_RECORDS * 3
    records = [OutgoingRecord(topic, b"same", str(n).encode(), [("n", b"x")]) for n in range(count)]
    acks = await send_batches(producer, records)
    assert len(acks) < count  # one future for the partition's batch, not one per record
    await asyncio.gather(*acks)
    got = await _read(settings, topic, count)
    assert [int(r.value) for r in got] == list(range(count))
    assert all(r.headers == (("n", b"x"),) for r in got)
