"""``clarion_kit.continuity``: offset continuity and broker data-loss detection.

The unit tests fake aiokafka's fetching (``getmany``, ``seek``, offset look-ups) with
a partition log whose records can be made readable late or never, so their verdicts
are deterministic. The ``integration`` tests run against the embedded Kafka-protocol
broker (each isolates its topics with ``topic_prefix``); their waits are bounded by
timeouts and never asserted on, verdicts compare offsets and counters.
"""

from __future__ import annotations

import asyncio
import contextlib
import subprocess
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
from aiokafka.structs import ConsumerRecord, OffsetAndMetadata
from prometheus_client import CollectorRegistry

from clarion_contracts.registry import DOMAIN_EVENTS
from clarion_kit.continuity import BrokerDataLossError, ConsumerGuard, ContinuityConsumer
from clarion_kit.kafka import (
    IntervalCommitConsumer,
    create_broker,
    ensure_topics,
    ping,
    raw_records,
    subscriber_options,
)
from clarion_kit.settings import ServiceSettings

TP = TopicPartition("events", 0)


@dataclass
class State:
    """What aiokafka keeps per assigned partition (the fields the consumer reads)."""

    position: int = 0
    highwater: int | None = None
    paused: bool = False

    @property
    def has_valid_position(self) -> bool:
        return True


@dataclass
class Assignment:
    states: dict[Any, State] = field(default_factory=lambda: {TP: State()})

    @property
    def tps(self) -> set[Any]:
        return set(self.states)

    def state_value(self, tp: Any) -> State:
        return self.states[tp]


@dataclass
class FakeLog:
    """One partition: ``end`` records written, ``hidden`` ones not readable yet.

    A fetch returns the readable records from the position on, skipping hidden ones,
    as the embedded broker was seen to; ``reveal_after`` re-fetches reveal them.
    """

    end: int
    hidden: set[int] = field(default_factory=set)
    reveal_after: int | None = None
    log_start: int = 0
    fetches: int = 0
    seeks: list[int] = field(default_factory=list)


class FakeConsumer(ContinuityConsumer):
    """A ``ContinuityConsumer`` over a :class:`FakeLog` (no broker connection)."""

    def __init__(self, log: FakeLog, guard: ConsumerGuard) -> None:
        super().__init__("events", guard=guard, group_id="g", auto_offset_reset="earliest")
        self.log = log
        self.fake_assignment = Assignment()

    def _assignment(self) -> Any:
        return self.fake_assignment

    @property
    def state(self) -> State:
        return self.fake_assignment.states[TP]

    def __del__(self, _warnings: Any = None) -> None:
        """Never started, so nothing to close (aiokafka warns about unclosed consumers)."""


def _record(offset: int) -> ConsumerRecord[bytes, bytes]:
    return ConsumerRecord("events", 0, offset, 0, 0, None, str(offset).encode(), None, 0, 0, ())


@pytest.fixture
def fake_fetching(monkeypatch: pytest.MonkeyPatch) -> None:
    """Route the aiokafka calls ``ContinuityConsumer`` makes to the consumer's FakeLog."""

    async def getmany(
        self: FakeConsumer, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[Any, list[Any]]:
        log, state = self.log, self.state
        log.fetches += 1
        state.highwater = log.end
        if state.paused:
            return {}
        readable = [o for o in range(state.position, log.end) if o not in log.hidden]
        records = [_record(o) for o in readable[: max_records or None]]
        if not records:
            return {}
        state.position = records[-1].offset + 1
        return {TP: records}

    def seek(self: FakeConsumer, partition: Any, offset: int) -> None:
        self.log.seeks.append(offset)
        if self.log.reveal_after is not None and len(self.log.seeks) >= self.log.reveal_after:
            self.log.hidden.clear()
        self.state.position = offset

    async def beginning_offsets(self: FakeConsumer, partitions: Any) -> dict[Any, int]:
        return dict.fromkeys(partitions, self.log.log_start)

    async def end_offsets(self: FakeConsumer, partitions: Any) -> dict[Any, int]:
        return dict.fromkeys(partitions, self.log.end)

    def pause(self: FakeConsumer, *partitions: Any) -> None:
        self.state.paused = True

    def resume(self: FakeConsumer, *partitions: Any) -> None:
        self.state.paused = False

    def paused(self: FakeConsumer) -> set[Any]:
        return {TP} if self.state.paused else set()

    for name, fake in {
        "getmany": getmany,
        "seek": seek,
        "beginning_offsets": beginning_offsets,
        "end_offsets": end_offsets,
        "pause": pause,
        "resume": resume,
        "paused": paused,
    }.items():
        monkeypatch.setattr(AIOKafkaConsumer, name, fake)


def _value(registry: CollectorRegistry, name: str) -> float:
    return registry.get_sample_value(f"clarion_unit_{name}", {"topic": "events"}) or 0.0


def _consumer(log: FakeLog, **options: Any) -> tuple[FakeConsumer, CollectorRegistry]:
    registry = CollectorRegistry()
    options.setdefault("gap_confirm_ms", 50)
    return FakeConsumer(log, ConsumerGuard(service="unit", registry=registry, **options)), registry


async def _offsets(consumer: FakeConsumer, **kwargs: Any) -> list[int]:
    return [r.offset for records in (await consumer.getmany(**kwargs)).values() for r in records]


async def test_records_after_a_hole_wait_until_a_refetch_fills_it(fake_fetching: None) -> None:
    # Offsets 3 and 4 were acknowledged but the broker serves 5.. before them.
    log = FakeLog(end=10, hidden={3, 4}, reveal_after=2)
    consumer, registry = _consumer(log)
    assert await _offsets(consumer) == list(range(10))
    # Seeked back to the missing offset; the second re-fetch found it.
    assert log.seeks == [3, 3]
    assert _value(registry, "consumer_offset_gaps_total") == 1
    assert _value(registry, "consumer_offset_gaps_confirmed_total") == 0
    assert consumer.state.position == 10


async def test_a_hole_before_the_first_record_is_refetched(fake_fetching: None) -> None:
    log = FakeLog(end=6, hidden={0, 1}, reveal_after=1)
    consumer, registry = _consumer(log)
    assert await _offsets(consumer) == list(range(6))
    assert log.seeks == [0]
    assert _value(registry, "consumer_offset_gaps_total") == 1


async def test_a_persistent_hole_is_confirmed_counted_and_accepted(fake_fetching: None) -> None:
    # Compaction, transaction markers: the offsets never come back.
    log = FakeLog(end=10, hidden={3, 4})
    consumer, registry = _consumer(log, gap_confirm_ms=30)
    assert await _offsets(consumer) == [0, 1, 2, 5, 6, 7, 8, 9]
    assert len(log.seeks) >= 2
    assert set(log.seeks) == {3}
    assert _value(registry, "consumer_offset_gaps_total") == 1
    assert _value(registry, "consumer_offset_gaps_confirmed_total") == 1
    # The next batch continues after the accepted gap without another re-fetch.
    log.end = 12
    assert await _offsets(consumer) == [10, 11]
    assert _value(registry, "consumer_offset_gaps_total") == 1


async def test_consecutive_batches_cost_no_refetch(fake_fetching: None) -> None:
    log = FakeLog(end=4)
    consumer, registry = _consumer(log)
    assert await _offsets(consumer, max_records=2) == [0, 1]
    assert await _offsets(consumer, max_records=2) == [2, 3]
    assert log.seeks == []
    assert log.fetches == 2
    assert _value(registry, "consumer_offset_gaps_total") == 0


async def test_getone_returns_records_in_offset_order_across_a_hole(fake_fetching: None) -> None:
    log = FakeLog(end=4, hidden={1}, reveal_after=1)
    consumer, _ = _consumer(log)
    async with asyncio.timeout(10):
        assert [(await consumer.getone()).offset for _ in range(4)] == [0, 1, 2, 3]


async def test_a_log_end_going_back_is_data_loss_and_resets_to_the_new_log(
    fake_fetching: None,
) -> None:
    log = FakeLog(end=8)
    consumer, registry = _consumer(log)
    assert await _offsets(consumer) == list(range(8))
    await consumer.guard.monitor.check()
    # The broker restarted empty and 3 records were written since.
    log.end = 3
    consumer.state.position = 2  # where the broker let the fetch land in the new log
    assert await _offsets(consumer) == []
    assert _value(registry, "broker_data_loss_total") == 1
    with pytest.raises(BrokerDataLossError, match=r"events\[0\]: log end went back from 8 to 3"):
        await consumer.guard.monitor.check()
    # "reset": from the new log's start, in order.
    assert await _offsets(consumer) == [0, 1, 2]


async def test_a_position_beyond_the_log_end_is_data_loss_and_halts_when_asked(
    fake_fetching: None,
) -> None:
    log = FakeLog(end=3)
    consumer, registry = _consumer(log, on_data_loss="halt")
    consumer.state.position = 100  # a committed offset of the log before it was lost
    consumer.state.highwater = 3
    assert await _offsets(consumer) == []
    assert _value(registry, "broker_data_loss_total") == 1
    assert consumer.state.paused
    assert await _offsets(consumer) == []
    assert consumer.state.position == 100
    assert _value(registry, "broker_data_loss_total") == 1
    consumer.guard.monitor.clear()
    await consumer.guard.monitor.check()


def test_guard_from_settings_reads_the_policy(clean_env: pytest.MonkeyPatch) -> None:
    clean_env.setenv("CLARION_KAFKA_ON_DATA_LOSS", "halt")
    settings = ServiceSettings(service_name="unit", kafka_gap_confirm_ms=80)
    guard = ConsumerGuard.from_settings(settings, registry=CollectorRegistry())
    assert guard.on_data_loss == "halt"
    assert guard.gap_confirm_ms == 80
    clean_env.delenv("CLARION_KAFKA_ON_DATA_LOSS")
    assert ServiceSettings().kafka_on_data_loss == "reset"


# ---------------------------------------------------------------- against the broker

WAIT = 30.0
BUDGET = 40.0
"""Seconds the load test may spend producing and consuming, together."""
PRODUCERS = 4
RECORDS_PER_PRODUCER = 2_000
BURST = 5
LOAD_PROCESSES = 3
CONSUMERS = 4


@pytest.fixture
def settings(devstack: Any, topic_prefix: str, clean_env: pytest.MonkeyPatch) -> ServiceSettings:
    return ServiceSettings(
        service_name="kit-continuity",
        kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
        topic_prefix=topic_prefix,
        kafka_partitions_override=1,
        kafka_session_timeout_ms=3000,
    )


@pytest.fixture
async def topic(settings: ServiceSettings) -> str:
    await ensure_topics(settings, [DOMAIN_EVENTS], include_dlq=False)
    return settings.topic(DOMAIN_EVENTS)


@pytest.fixture
def cpu_load() -> Iterator[None]:
    """Busy processes competing for the CPU while the test runs (killed by pid after)."""
    procs = [
        subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(LOAD_PROCESSES)
    ]
    try:
        yield
    finally:
        for proc in procs:
            proc.kill()
        for proc in procs:
            proc.wait()


def _guard(registry: CollectorRegistry, **options: Any) -> ConsumerGuard:
    return ConsumerGuard(service="kit-continuity", registry=registry, **options)


@contextlib.asynccontextmanager
async def _member(
    settings: ServiceSettings, topic: str, guard: ConsumerGuard, group: str = "continuity"
) -> AsyncIterator[IntervalCommitConsumer]:
    consumer = IntervalCommitConsumer(
        topic,
        guard=guard,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.topic_prefix + group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=10,
        session_timeout_ms=3000,
        heartbeat_interval_ms=1000,
        commit_interval_ms=50,
    )
    await consumer.start()
    try:
        yield consumer
    finally:
        await consumer.stop()


async def _produce(settings: ServiceSettings, topic: str, tag: int) -> list[int]:
    """Send bursts of concurrent records with ``acks="all"``; the acknowledged offsets."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    acked: list[int] = []
    try:
        for start in range(0, RECORDS_PER_PRODUCER, BURST):
            futures = [
                await producer.send(topic, f"{tag}:{n}".encode(), partition=0)
                for n in range(start, start + BURST)
            ]
            acked.extend(meta.offset for meta in await asyncio.gather(*futures))
    finally:
        await producer.stop()
    return acked


async def _consume(consumer: Any, total: int, seen: list[int]) -> None:
    """Collect offsets until ``total`` records arrived (duplicates included)."""
    distinct: set[int] = set()
    while len(distinct) < total:
        batches = await consumer.getmany(timeout_ms=200, max_records=500)
        for records in batches.values():
            offsets = [r.offset for r in records]
            seen.extend(offsets)
            distinct.update(offsets)
        await consumer.commit()


@pytest.mark.integration
async def test_concurrent_producers_under_cpu_load_lose_no_record(
    settings: ServiceSettings, topic: str, cpu_load: None
) -> None:
    # Several consumer groups read the partition while it is written: each is one more
    # chance to catch the broker serving records past ones it acknowledged but does
    # not return yet.
    registry = CollectorRegistry()
    guard = _guard(registry)
    total = PRODUCERS * RECORDS_PER_PRODUCER
    seen: list[list[int]] = [[] for _ in range(CONSUMERS)]
    async with contextlib.AsyncExitStack() as stack:
        members = [
            await stack.enter_async_context(_member(settings, topic, guard, group=f"c{n}"))
            for n in range(CONSUMERS)
        ]
        consuming = asyncio.gather(
            *(
                _consume(member, total, offsets)
                for member, offsets in zip(members, seen, strict=True)
            )
        )
        deadline = asyncio.get_running_loop().time() + BUDGET
        acked_lists = await asyncio.wait_for(
            asyncio.gather(*(_produce(settings, topic, tag) for tag in range(PRODUCERS))), BUDGET
        )
        remaining = max(deadline - asyncio.get_running_loop().time(), 5.0)
        try:
            # Bounded: what did not arrive by then is reported as missing below.
            await asyncio.wait_for(asyncio.shield(consuming), remaining)
        except TimeoutError:
            consuming.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await consuming
    acked = sorted(o for offsets in acked_lists for o in offsets)
    assert acked == list(range(total))
    for offsets in seen:
        missing = sorted(set(acked) - set(offsets))
        assert not missing, f"{len(missing)} acknowledged records never consumed: {missing[:20]}"
        # Every acknowledged record exactly once, in offset order: no skip, no redelivery.
        assert offsets == acked
    gaps = registry.get_sample_value(
        "clarion_kit_continuity_consumer_offset_gaps_total", {"topic": topic}
    )
    confirmed = registry.get_sample_value(
        "clarion_kit_continuity_consumer_offset_gaps_confirmed_total", {"topic": topic}
    )
    # Gaps the broker showed (if any this run) were all filled by re-fetching.
    assert not confirmed
    print(f"offset gaps seen and filled: {int(gaps or 0)}")


async def _commit_beyond_end(
    settings: ServiceSettings, topic: str, group: str, offset: int
) -> None:
    """Commit ``offset`` for ``group`` on partition 0 of ``topic`` (past the log's end)."""
    committer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.topic_prefix + group,
        enable_auto_commit=False,
    )
    await committer.start()
    try:
        tp = TopicPartition(topic, 0)
        committer.assign([tp])
        await committer.commit({tp: OffsetAndMetadata(offset, "")})
    finally:
        await committer.stop()


async def _send(settings: ServiceSettings, topic: str, values: list[bytes]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for value in values:
            await producer.send_and_wait(topic, value, partition=0)
    finally:
        await producer.stop()


async def _take(consumer: Any, count: int) -> list[Any]:
    got: list[Any] = []
    async with asyncio.timeout(WAIT):
        while len(got) < count:
            batches = await consumer.getmany(timeout_ms=200)
            for records in batches.values():
                got.extend(records)
    return got


@pytest.mark.integration
async def test_committed_offset_beyond_the_log_is_data_loss_and_resets_to_its_start(
    settings: ServiceSettings, topic: str
) -> None:
    # The group had read 1000 records of a log that is now 3 long (a restarted
    # memory-only broker, a recreated topic).
    await _send(settings, topic, [b"a", b"b", b"c"])
    await _commit_beyond_end(settings, topic, "lossy", 1000)
    registry = CollectorRegistry()
    guard = _guard(registry)
    await guard.monitor.check()
    async with _member(settings, topic, guard, group="lossy") as consumer:
        records = await _take(consumer, 3)
        await consumer.commit()
    assert [r.value for r in records] == [b"a", b"b", b"c"]
    assert [r.offset for r in records] == [0, 1, 2]
    assert registry.get_sample_value(
        "clarion_kit_continuity_broker_data_loss_total", {"topic": topic}
    ) == pytest.approx(1)
    assert guard.monitor.lost
    with pytest.raises(BrokerDataLossError, match=r"beyond the log end 3"):
        await guard.monitor.check()
    guard.monitor.clear()
    await guard.monitor.check()


@pytest.mark.integration
async def test_halt_stops_the_partition_after_data_loss(
    settings: ServiceSettings, topic: str
) -> None:
    await _send(settings, topic, [b"a"])
    await _commit_beyond_end(settings, topic, "halted", 500)
    registry = CollectorRegistry()
    guard = _guard(registry, on_data_loss="halt")
    async with _member(settings, topic, guard, group="halted") as consumer:
        async with asyncio.timeout(WAIT):
            while not guard.monitor.lost:
                assert not await consumer.getmany(timeout_ms=100)
        tp = TopicPartition(topic, 0)
        assert tp in consumer.paused()
        await _send(settings, topic, [b"b"])
        # Halted: a further poll returns nothing, and the position stays where it was.
        assert not await consumer.getmany(timeout_ms=500)
        assert await consumer.position(tp) == 500


@pytest.mark.integration
async def test_a_new_group_starts_from_the_earliest_offset_unflagged(
    settings: ServiceSettings, topic: str
) -> None:
    await _send(settings, topic, [b"x", b"y"])
    guard = _guard(CollectorRegistry())
    async with _member(settings, topic, guard, group="fresh") as consumer:
        records = await _take(consumer, 2)
    assert [r.value for r in records] == [b"x", b"y"]
    assert not guard.monitor.lost


@pytest.mark.integration
async def test_a_subscriber_seeing_data_loss_fails_ping_and_keeps_consuming(
    settings: ServiceSettings, topic: str, wait_until: Any
) -> None:
    await _send(settings, topic, [b"a", b"b", b"c"])
    await _commit_beyond_end(settings, topic, "subscriber", 1000)
    registry = CollectorRegistry()
    broker = create_broker(settings, registry=registry)
    got: list[bytes] = []

    @broker.subscriber(
        topic, decoder=raw_records, **subscriber_options(settings, group_id="subscriber")
    )
    async def handle(records: list[Any]) -> None:
        got.extend(r.value for r in records)

    await asyncio.wait_for(broker.start(), WAIT)
    try:
        # "reset": the new log is consumed from its start, and readiness fails.
        await wait_until(lambda: len(got) >= 3, timeout=WAIT)
        assert got == [b"a", b"b", b"c"]
        with pytest.raises(BrokerDataLossError, match=r"beyond the log end 3"):
            await ping(broker)
        assert registry.get_sample_value(
            "clarion_kit_continuity_broker_data_loss_total", {"topic": topic}
        ) == pytest.approx(1)
        broker.clarion_consumer_guard.monitor.clear()  # type: ignore[attr-defined]
        assert await ping(broker) is None
    finally:
        await broker.stop()
