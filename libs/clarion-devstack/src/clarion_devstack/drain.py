"""Consumer lag of Clarion's consumer groups, to know when the pipeline has drained.

The registry names which services consume which topic (``TopicSpec.consumers``),
and each service's consumer group id is its name, so the lag of group ``g`` is
the sum over the partitions of every topic ``g`` consumes of
``end offset - committed offset`` (a partition with no committed offset counts
its whole length). This follows the Kafka protocol's ListOffsets and
OffsetFetch requests, as ``kafka-consumer-groups --describe`` does.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from clarion_contracts.registry import TOPICS


def consumed_topics(group: str, topic_prefix: str = "") -> list[str]:
    """The topics a service's consumer group reads, per the registry."""
    return [topic_prefix + spec.name for spec in TOPICS if group in spec.consumers]


async def group_lag(
    bootstrap_servers: str, groups: Iterable[str], topic_prefix: str = ""
) -> dict[str, int]:
    """Return ``{group: total lag in records}`` for each group.

    Raises:
        aiokafka.errors.KafkaError: the broker cannot be reached.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await probe.start()
    try:
        result: dict[str, int] = {}
        for group in groups:
            partitions: list[TopicPartition] = []
            for topic in consumed_topics(group, topic_prefix):
                for number in probe.partitions_for_topic(topic) or ():
                    partitions.append(TopicPartition(topic, number))
            if not partitions:
                result[group] = 0
                continue
            ends = await probe.end_offsets(partitions)
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            lag = 0
            for tp in partitions:
                meta = committed.get(tp)
                done = meta.offset if meta is not None and meta.offset >= 0 else 0
                lag += max(0, ends[tp] - done)
            result[group] = lag
        return result
    finally:
        await probe.stop()
        await admin.close()


async def wait_drained(
    bootstrap_servers: str,
    groups: Iterable[str],
    *,
    topic_prefix: str = "",
    timeout: float = 300.0,
    settle: float = 1.0,
) -> dict[str, int]:
    """Wait until every group's lag is zero twice in a row ``settle`` seconds apart.

    Returns:
        The last lag reading (all zeros).

    Raises:
        TimeoutError: still lagging after ``timeout`` seconds (the message holds the lags).
    """
    names = list(groups)
    deadline = time.monotonic() + timeout
    zero_since: float | None = None
    lags: dict[str, int] = {}
    while time.monotonic() < deadline:
        lags = await group_lag(bootstrap_servers, names, topic_prefix)
        if all(v == 0 for v in lags.values()):
            zero_since = zero_since or time.monotonic()
            if time.monotonic() - zero_since >= settle:
                return lags
        else:
            zero_since = None
        await asyncio.sleep(0.25)
    raise TimeoutError(f"consumer groups still lagging: {lags}")
