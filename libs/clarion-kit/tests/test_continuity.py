"""Offset continuity and data-loss detection of ``ContinuityConsumer``, broker faked.

aiokafka's fetching (``getmany``, ``seek``, offset look-ups) is replaced by a fake
partition log whose records can be made readable late or never, so the verdicts are
deterministic. The broker-backed tests are in ``test_continuity_integration.py``.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.structs import ConsumerRecord
from prometheus_client import CollectorRegistry

from clarion_kit.continuity import BrokerDataLossError, ConsumerGuard, ContinuityConsumer
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


@pytest.fixture(autouse=True)
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


async def test_records_after_a_hole_wait_until_a_refetch_fills_it() -> None:
    # Offsets 3 and 4 were acknowledged but the broker serves 5.. before them.
    log = FakeLog(end=10, hidden={3, 4}, reveal_after=2)
    consumer, registry = _consumer(log)
    assert await _offsets(consumer) == list(range(10))
    # Seeked back to the missing offset; the second re-fetch found it.
    assert log.seeks == [3, 3]
    assert _value(registry, "consumer_offset_gaps_total") == 1
    assert _value(registry, "consumer_offset_gaps_confirmed_total") == 0
    assert consumer.state.position == 10


async def test_a_hole_before_the_first_record_is_refetched() -> None:
    log = FakeLog(end=6, hidden={0, 1}, reveal_after=1)
    consumer, registry = _consumer(log)
    assert await _offsets(consumer) == list(range(6))
    assert log.seeks == [0]
    assert _value(registry, "consumer_offset_gaps_total") == 1


async def test_a_persistent_hole_is_confirmed_counted_and_accepted() -> None:
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


async def test_consecutive_batches_cost_no_refetch() -> None:
    log = FakeLog(end=4)
    consumer, registry = _consumer(log)
    assert await _offsets(consumer, max_records=2) == [0, 1]
    assert await _offsets(consumer, max_records=2) == [2, 3]
    assert log.seeks == []
    assert log.fetches == 2
    assert _value(registry, "consumer_offset_gaps_total") == 0


async def test_getone_returns_records_in_offset_order_across_a_hole() -> None:
    log = FakeLog(end=4, hidden={1}, reveal_after=1)
    consumer, _ = _consumer(log)
    async with asyncio.timeout(10):
        assert [(await consumer.getone()).offset for _ in range(4)] == [0, 1, 2, 3]


async def test_a_log_end_going_back_is_data_loss_and_resets_to_the_new_log() -> None:
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


async def test_a_position_beyond_the_log_end_is_data_loss_and_halts_when_asked() -> None:
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
