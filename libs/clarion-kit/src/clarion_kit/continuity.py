"""Consumers that never skip an offset and make broker data loss loud.

Every Clarion consumer (FastStream subscribers through
:class:`clarion_kit.kafka.IntervalCommitConsumer`, the realtime-gateway's own loop)
is a :class:`ContinuityConsumer`, an aiokafka ``AIOKafkaConsumer`` with two checks.

**Offset continuity.** Within a partition, offsets are consecutive integers. The
consumer keeps the next expected offset of each assigned partition (the position at
assignment or after a seek, then the offset after the last record it returned). A
*gap* is a fetch whose records for a partition start beyond the expected offset, or
skip offsets between two records. A consumer that handed on the records after a gap
and committed past it would lose the missing records for good: the embedded broker
was measured returning records past acknowledged ones that were not yet readable
under CPU load. So on a gap the records from the gap on are withheld (nothing after
it reaches the handler or a commit), the gap is counted
(``clarion_<service>_consumer_offset_gaps_total{topic}``) and logged, and the
consumer seeks back to the missing offset and fetches again after a growing pause.
The records before the gap are returned as usual. When the re-fetch returns the
missing offset, the gap is *filled* and consumption goes on in order. When the gap
is still there after re-fetches spanning ``gap_confirm_ms``, it is *confirmed*:
legitimate on Apache Kafka (log compaction, transaction markers, the log start moved
by retention), so the consumer accepts it, counts it
(``clarion_<service>_consumer_offset_gaps_confirmed_total{topic}``) and logs a
warning. A confirmed gap costs ``gap_confirm_ms`` of delay on that partition, once
per gap and read. On the normal path the check is one integer comparison per
partition and batch, plus one high-watermark comparison per assigned partition and
poll.

**Broker data loss.** Detected when (a) a fetch position is out of range and beyond
the partition's end offset (the broker restarted empty, as the memory-only embedded
broker does, or the topic was deleted and recreated: the committed offset points past
the new log), or (b) a partition's high watermark goes backwards. Apache Kafka
answers (a) with ``OFFSET_OUT_OF_RANGE``; the embedded broker answers an empty fetch
whose high watermark is below the position, which is checked too. Both are confirmed
with the leader's end offset (ListOffsets) before anything is flagged. Then
``clarion_<service>_broker_data_loss_total{topic}`` is incremented, an error is
logged and the :class:`DataLossMonitor` shared by the service's consumers flags the
partition: its :meth:`~DataLossMonitor.check` (part of the ``kafka`` readiness check,
:func:`clarion_kit.kafka.ping`) fails until the process restarts or an operator calls
:meth:`~DataLossMonitor.clear`. What the consumer does next is
``ServiceSettings.kafka_on_data_loss``:

* ``"reset"`` (default): resume from the earliest offset of the new log, so the
  pipeline keeps flowing while readiness and the metric say what happened;
* ``"halt"``: pause the partition (no record of it is consumed or committed) until
  the partition is reassigned or the process restarts.

A position *below* the log start (records removed by retention before this group read
them) is not broker data loss: it is counted as a confirmed gap, logged, and the
consumer resumes from the log start.

aiokafka's own reset (``auto_offset_reset="earliest"``) would hide both cases, so the
consumer runs aiokafka with ``auto_offset_reset="none"`` and applies the configured
policy itself: a partition without a committed offset (a new consumer group) starts
from the earliest (or latest) offset as asked, without being flagged.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import NoOffsetForPartitionError, OffsetOutOfRangeError

from clarion_kit.consumer_guard import (
    BrokerDataLossError,
    ConsumerGuard,
    DataLossMonitor,
    DataLossPolicy,
)
from clarion_kit.logging import get_logger

__all__ = [
    "BrokerDataLossError",
    "ConsumerGuard",
    "ContinuityConsumer",
    "DataLossMonitor",
    "DataLossPolicy",
]

_log = get_logger(__name__)

GETONE_WAIT_MS = 1_000
"""``getone`` waits for a record in slices of this many ms (it returns when one arrives)."""


class ContinuityConsumer(AIOKafkaConsumer):  # type: ignore[misc]
    """An ``AIOKafkaConsumer`` that returns each partition's records without gaps.

    ``getmany`` / ``getone`` behave as aiokafka's, except that (module docstring)
    records after an unconfirmed offset gap are withheld until a re-fetch fills or
    confirms the gap, and broker data loss is detected, counted, flagged on
    ``guard.monitor`` and handled by ``guard.on_data_loss``.

    Args:
        *topics: topics to subscribe to, as for ``AIOKafkaConsumer``.
        guard: metrics, readiness flag and policies (a default one when omitted).
        auto_offset_reset: where a partition without a committed offset starts:
            ``"earliest"``, ``"latest"`` (aiokafka's default) or ``"none"`` (raise
            ``NoOffsetForPartitionError``). Out-of-range positions are never reset
            silently.
        **kwargs: any other ``AIOKafkaConsumer`` argument.
    """

    def __init__(
        self,
        *topics: str,
        guard: ConsumerGuard | None = None,
        auto_offset_reset: str = "latest",
        **kwargs: Any,
    ) -> None:
        # aiokafka resets out-of-range positions silently under "earliest"/"latest":
        # with "none" it raises, and this class applies the policy itself.
        super().__init__(*topics, auto_offset_reset="none", **kwargs)
        self.guard = guard if guard is not None else ConsumerGuard()
        self._no_offset_policy = auto_offset_reset
        self._tracked: Any = None
        self._expected: dict[Any, int] = {}
        self._highwater: dict[Any, int] = {}
        self._confirm_s = self.guard.gap_confirm_ms / 1000
        # The first re-fetch pause: a few fetch waits, at most a quarter of the
        # confirmation time so that a gap is re-fetched several times before acceptance.
        self._refetch_s = (
            min(max(self._fetch_max_wait_ms * 2, 10), self.guard.gap_confirm_ms / 4) / 1000
        )

    def _assignment(self) -> Any:
        """The current assignment (a new object after every rebalance), or None."""
        subscription = self._subscription.subscription
        return subscription.assignment if subscription is not None else None

    def _track(self) -> Any:
        """The current assignment, with expectations learnt from valid positions."""
        assignment = self._assignment()
        if assignment is not self._tracked:
            self._tracked = assignment
            self._expected = {}
            self._highwater = {}
        if assignment is not None and len(self._expected) < len(assignment.tps):
            for tp in assignment.tps:
                if tp not in self._expected:
                    state = assignment.state_value(tp)
                    if state.has_valid_position:
                        self._expected[tp] = state.position
        return assignment

    # ------------------------------------------------------------------ seeks

    def seek(self, partition: Any, offset: int) -> None:
        """``AIOKafkaConsumer.seek``; the next record expected is ``offset``."""
        super().seek(partition, offset)
        if self._assignment() is self._tracked:
            self._expected[partition] = offset

    async def seek_to_beginning(self, *partitions: Any) -> bool:
        """``AIOKafkaConsumer.seek_to_beginning``; expectations are learnt anew."""
        self._forget(partitions)
        return bool(await super().seek_to_beginning(*partitions))

    async def seek_to_end(self, *partitions: Any) -> bool:
        """``AIOKafkaConsumer.seek_to_end``; expectations are learnt anew."""
        self._forget(partitions)
        return bool(await super().seek_to_end(*partitions))

    async def seek_to_committed(self, *partitions: Any) -> dict[Any, Any]:
        """``AIOKafkaConsumer.seek_to_committed``; expectations are learnt anew."""
        self._forget(partitions)
        result: dict[Any, Any] = await super().seek_to_committed(*partitions)
        return result

    def _forget(self, partitions: tuple[Any, ...]) -> None:
        if partitions:
            for tp in partitions:
                self._expected.pop(tp, None)
        else:
            self._expected.clear()

    # ------------------------------------------------------------------ reading

    async def getone(self, *partitions: Any) -> Any:
        """The next record, in offset order without gaps (see :meth:`getmany`)."""
        while True:
            batch = await self.getmany(*partitions, timeout_ms=GETONE_WAIT_MS, max_records=1)
            for records in batch.values():
                if records:
                    return records[0]

    async def getmany(
        self, *partitions: Any, timeout_ms: int = 0, max_records: int | None = None
    ) -> dict[Any, list[Any]]:
        """Records by partition, as ``AIOKafkaConsumer.getmany``, never past a gap.

        Returns:
            ``{TopicPartition: [ConsumerRecord, ...]}``; each list holds consecutive
            offsets from the partition's expected one, except across confirmed gaps.

        Raises:
            aiokafka.errors.NoOffsetForPartitionError: a partition has no committed
                offset and ``auto_offset_reset="none"``.
            aiokafka.errors.KafkaError: as ``AIOKafkaConsumer.getmany``.
        """
        assignment = self._track()
        try:
            batches: dict[Any, list[Any]] = await super().getmany(
                *partitions, timeout_ms=timeout_ms, max_records=max_records
            )
        except NoOffsetForPartitionError as exc:
            await self._start_without_offset(exc)
            return {}
        except OffsetOutOfRangeError as exc:
            await self._out_of_range(exc)
            return {}
        try:
            # A rebalance may have happened while waiting: check the current assignment.
            assignment = self._track()
            lost = await self._log_ends_hold(assignment) if assignment is not None else ()
            if not batches:
                return batches
            return await self._checked(batches, lost, max_records)
        except BaseException:
            # The positions already moved past these records: put them back, so an
            # error (or a cancellation) here never lets a commit skip them.
            for tp, records in batches.items():
                if records and self._subscription.is_assigned(tp):
                    super().seek(tp, records[0].offset)
                    self._expected.pop(tp, None)
            raise

    async def _checked(
        self,
        batches: dict[Any, list[Any]],
        lost: Any,
        max_records: int | None,
    ) -> dict[Any, list[Any]]:
        """``batches`` without the ``lost`` partitions, each checked for offset gaps."""
        expected = self._expected
        out: dict[Any, list[Any]] = {}
        for tp, records in batches.items():
            if tp in lost:
                # Records of a log that lost data: the position was reset or halted.
                continue
            want = expected.get(tp)
            first = records[0].offset
            last = records[-1].offset
            if want is None:
                want = await self._start_offset(tp, first)
            # Offsets ascend within a partition: consecutive iff the span equals the count.
            if first == want and last - first == len(records) - 1:
                expected[tp] = last + 1
                out[tp] = records
                continue
            records = await self._without_gaps(tp, records, want, max_records)
            if records:
                out[tp] = records
        return out

    async def _start_offset(self, tp: Any, first: int) -> int:
        """The offset the partition started from in this assignment (rarely needed).

        Its position became valid while ``getmany`` waited, after the snapshot taken
        before it: the start was the committed offset (or, without one, the reset
        this class performed, which records it).
        """
        if self._group_id is None:
            return first
        committed = await self.committed(tp)
        return first if committed is None else int(committed)

    async def _without_gaps(
        self, tp: Any, records: list[Any], want: int, max_records: int | None
    ) -> list[Any]:
        """``records`` cut at the first unconfirmed gap, re-fetching to fill or confirm it."""
        out: list[Any] = []
        while records:
            if records[0].offset < want:
                # Behind the expectation (a seek this class did not see): accept them;
                # redelivery is what at-least-once consumers absorb.
                want = records[0].offset
            k, n = 0, len(records)
            while k < n and records[k].offset == want + k:
                k += 1
            out.extend(records[:k])
            if k == len(records):
                self._expected[tp] = want + k
                return out
            hole = want + k
            records, confirmed = await self._refetch(tp, hole, records[k].offset, max_records)
            if not records:
                # Neither filled nor confirmed in time (the position is at the hole), or
                # the log turned out shorter (handled as data loss).
                return out
            want = records[0].offset if confirmed else hole
        return out

    async def _refetch(
        self, tp: Any, hole: int, seen: int, max_records: int | None
    ) -> tuple[list[Any], bool]:
        """Seek back to ``hole`` and fetch until it is filled or the gap is confirmed.

        Returns ``(records from the re-fetch, confirmed)``: ``confirmed`` is False
        when the records start at ``hole``; ``([], False)`` when nothing came back
        within the confirmation time.
        """
        self.guard.gaps.labels(tp.topic).inc()
        _log.warning(
            "consumer_offset_gap",
            topic=tp.topic,
            partition=tp.partition,
            expected=hole,
            got=seen,
            missing=seen - hole,
        )
        started = time.monotonic()
        pause = self._refetch_s
        records: list[Any] = []
        while True:
            # Pause first: the records behind the gap were acknowledged, but the broker
            # may not serve them yet; the seek discards what was prefetched meanwhile.
            await asyncio.sleep(pause)
            super().seek(tp, hole)
            try:
                fetched = await super().getmany(
                    tp, timeout_ms=int(pause * 1000) + 100, max_records=max_records
                )
            except OffsetOutOfRangeError as exc:
                await self._out_of_range(exc)
                return [], False
            records = fetched.get(tp, [])
            if records and records[0].offset == hole:
                _log.info(
                    "consumer_offset_gap_filled",
                    topic=tp.topic,
                    partition=tp.partition,
                    offset=hole,
                    after_ms=round((time.monotonic() - started) * 1000),
                )
                return records, False
            elapsed = time.monotonic() - started
            if elapsed >= self._confirm_s:
                break
            pause = min(pause * 2, max(self._confirm_s - elapsed, 0.001))
        if not records:
            super().seek(tp, hole)
            self._expected[tp] = hole
            return [], False
        self.guard.gaps_confirmed.labels(tp.topic).inc()
        _log.warning(
            "consumer_offset_gap_confirmed",
            topic=tp.topic,
            partition=tp.partition,
            missing_from=hole,
            missing_to=records[0].offset - 1,
        )
        return records, True

    # ------------------------------------------------------------------ positions

    async def _start_without_offset(self, exc: NoOffsetForPartitionError) -> None:
        """Apply ``auto_offset_reset`` to a partition that has no committed offset."""
        tp = exc.args[0] if exc.args else None
        if self._no_offset_policy not in ("earliest", "latest") or tp is None:
            raise exc
        if self._no_offset_policy == "earliest":
            await super().seek_to_beginning(tp)
        else:
            await super().seek_to_end(tp)
        self._expected.pop(tp, None)
        self._track()

    async def _out_of_range(self, exc: OffsetOutOfRangeError) -> None:
        """Classify an out-of-range position: broker data loss, or retention."""
        offsets: dict[Any, int] = exc.args[0] if exc.args and isinstance(exc.args[0], dict) else {}
        if not offsets:
            raise exc
        tps = list(offsets)
        # No fetch for them while the log's bounds are asked for.
        self.pause(*tps)
        try:
            starts = await self.beginning_offsets(tps)
            ends = await self.end_offsets(tps)
        except BaseException:
            self.resume(*tps)
            raise
        for tp, position in offsets.items():
            start, end = starts[tp], ends[tp]
            if position > end:
                await self._lost(
                    tp, f"position {position} beyond the log end {end} (log start {start})", start
                )
                continue
            if position < start:
                self.guard.gaps_confirmed.labels(tp.topic).inc()
                _log.warning(
                    "consumer_position_before_log_start",
                    topic=tp.topic,
                    partition=tp.partition,
                    position=position,
                    log_start=start,
                    missing=start - position,
                )
                position = start
            super().seek(tp, position)
            self._expected[tp] = position
            self.resume(tp)

    async def _log_ends_hold(self, assignment: Any) -> set[Any]:
        """The partitions found to have lost data (handled), from their high watermarks.

        Two signs, per partition not paused: the high watermark (log end) the last
        fetch response carried is below the one seen before, or the position is
        beyond it. Brokers that do not answer ``OFFSET_OUT_OF_RANGE`` (the embedded
        one returns an empty fetch) show the second.
        """
        lost: set[Any] = set()
        seen = self._highwater
        for tp in assignment.tps:
            state = assignment.state_value(tp)
            hw = state.highwater
            if hw is None or state.paused:
                continue
            before = seen.get(tp, -1)
            seen[tp] = hw
            if hw >= before and (not state.has_valid_position or state.position <= hw):
                continue
            # Confirmed by the partition's leader (ListOffsets): a fetch response may
            # carry a lagging high watermark, e.g. right after a leader change.
            end = (await self.end_offsets([tp]))[tp]
            position = state.position if state.has_valid_position else None
            if end >= before and (position is None or position <= end):
                seen[tp] = end
                continue
            start = (await self.beginning_offsets([tp]))[tp]
            if end < before:
                detail = f"log end went back from {before} to {end} (log start {start})"
            else:
                detail = f"position {position} beyond the log end {end} (log start {start})"
            await self._lost(tp, detail, start)
            lost.add(tp)
        return lost

    async def _lost(self, tp: Any, detail: str, start: int) -> None:
        """Count, log and flag broker data loss on ``tp``; then reset or halt it."""
        guard = self.guard
        guard.data_loss.labels(tp.topic).inc()
        guard.monitor.record(tp.topic, tp.partition, detail)
        self._highwater.pop(tp, None)
        _log.error(
            "broker_data_loss",
            topic=tp.topic,
            partition=tp.partition,
            detail=detail,
            action=guard.on_data_loss,
        )
        if guard.on_data_loss == "halt":
            self.pause(tp)
            self._expected.pop(tp, None)
            return
        super().seek(tp, start)
        self._expected[tp] = start
        self.resume(tp)
