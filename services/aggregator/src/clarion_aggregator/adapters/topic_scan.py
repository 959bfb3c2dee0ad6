"""Reading a topic's retained records up to its current end (no consumer group).

Used to rebuild Redis state from durable topics: the compacted
``clarion.preferences.v1`` / ``clarion.user-profiles.v1``, ``clarion.presence.v1``
and the aggregator's own ``clarion.notifications.v1``.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from aiokafka import AIOKafkaConsumer, ConsumerRecord, TopicPartition

from clarion_aggregator.settings import AggregatorSettings
from clarion_kit.logging import get_logger

log = get_logger(__name__)


async def scan_topic(
    settings: AggregatorSettings,
    topic: str,
    *,
    since_ms: int | None = None,
    max_records: int = 5000,
) -> AsyncIterator[list[ConsumerRecord[Any, Any]]]:
    """Yield batches of ``topic``'s records, per partition in offset order, until the
    scan has caught up with each partition's end.

    A partition is caught up once the scan passed the end offset reported when it
    started AND a fetch from there returned nothing: the embedded broker reports the
    base offset of a partition's last record batch + 1 as its end, short of the
    batch's other records, so that end alone would miss acknowledged records.

    Args:
        settings: broker address and fetch wait.
        topic: the runtime topic name.
        since_ms: start at the first record with a timestamp at or after this epoch
            ms (Kafka ListOffsets by timestamp); ``None``, or a broker that cannot
            answer, starts at the earliest offset.
        max_records: most records per batch.

    The scan checks offset continuity: a fetch that skips offsets (seen on the
    embedded broker under load) is discarded and the partition read again from the
    first missing offset, so no retained record is missed.

    Raises:
        aiokafka.errors.KafkaError: the broker failed.
    """
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.service_name}-{settings.instance_id}-scan",
        group_id=None,
        enable_auto_commit=False,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        metadata_max_age_ms=5_000,
    )
    await consumer.start()
    try:
        partitions = consumer.partitions_for_topic(topic)
        if not partitions:
            await consumer.force_metadata_update()
            partitions = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(partitions)]
        if not tps:
            return
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        starts = await consumer.beginning_offsets(tps)
        if since_ms is not None:
            starts = await _starts_at(consumer, tps, since_ms, starts, ends)
        remaining: dict[TopicPartition, int] = {}
        for tp in tps:
            consumer.seek(tp, starts[tp])
            remaining[tp] = starts[tp]
        while remaining:
            fetched = await consumer.getmany(*remaining, timeout_ms=500, max_records=max_records)
            batch: list[ConsumerRecord[Any, Any]] = []
            for tp in list(remaining):
                expected = remaining[tp]
                records = fetched.get(tp, [])
                if not records and expected >= ends[tp]:
                    # Past the reported end and nothing more to fetch: caught up.
                    del remaining[tp]
                    continue
                for rec in records:
                    if rec.offset != expected:
                        log.warning(
                            "scan_gap", topic=topic, partition=tp.partition, offset=expected
                        )
                        consumer.seek(tp, expected)
                        break
                    batch.append(rec)
                    expected += 1
                remaining[tp] = expected
            if batch:
                yield batch
    finally:
        await consumer.stop()


async def _starts_at(
    consumer: AIOKafkaConsumer,
    tps: list[TopicPartition],
    since_ms: int,
    earliest: dict[TopicPartition, int],
    ends: dict[TopicPartition, int],
) -> dict[TopicPartition, int]:
    try:
        found = await consumer.offsets_for_times(dict.fromkeys(tps, since_ms))
    except Exception as exc:  # the embedded broker may not implement it: read it all
        log.info("scan_from_earliest", reason=f"{type(exc).__name__}: {exc}")
        return earliest
    out: dict[TopicPartition, int] = {}
    for tp in tps:
        hit = found.get(tp)
        # No record at or after since_ms: nothing of this partition is needed.
        out[tp] = max(hit.offset, earliest[tp]) if hit is not None else ends[tp]
    return out
