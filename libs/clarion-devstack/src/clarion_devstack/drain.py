"""Consumer lag of Clarion's consumer groups, to know when the pipeline has drained.

Every consumer group on the broker is listed (Kafka protocol ListGroups), and
its committed offsets are fetched (OffsetFetch) for every partition of every
registry topic under the run's topic prefix. A group consumes a topic when it
has committed an offset on one of its partitions; its lag is the sum over those
topics' partitions of ``end offset - committed offset`` (a partition it has not
committed yet counts its whole length), as ``kafka-consumer-groups --describe``
reports it.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterable

from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

from clarion_contracts.registry import TOPICS


async def pipeline_lag(
    bootstrap_servers: str, topic_prefix: str = "", only: Iterable[str] | None = None
) -> dict[str, int]:
    """Return ``{group: lag in records}`` for every group consuming a registry topic.

    ``only`` keeps the groups whose name (without the topic prefix) is one of these
    service names, e.g. ``("aggregator", "ingest-api")``.

    Raises:
        aiokafka.errors.KafkaError: the broker cannot be reached.
    """
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap_servers, request_timeout_ms=5000)
    probe = AIOKafkaConsumer(bootstrap_servers=bootstrap_servers, enable_auto_commit=False)
    await admin.start()
    await probe.start()
    try:
        partitions: list[TopicPartition] = []
        for spec in TOPICS:
            topic = topic_prefix + spec.name
            for number in probe.partitions_for_topic(topic) or ():
                partitions.append(TopicPartition(topic, number))
        if not partitions:
            return {}
        ends = await probe.end_offsets(partitions)
        result: dict[str, int] = {}
        wanted = {topic_prefix + name for name in only} if only is not None else None
        for group, _kind in await admin.list_consumer_groups():
            if wanted is not None and group not in wanted:
                continue
            committed = await admin.list_consumer_group_offsets(group, partitions=partitions)
            done = {tp: meta.offset for tp, meta in committed.items() if meta.offset >= 0}
            consumed = {tp.topic for tp in done}
            if not consumed:
                continue
            result[group] = sum(
                max(0, ends[tp] - done.get(tp, 0)) for tp in partitions if tp.topic in consumed
            )
        return result
    finally:
        await _stop(probe)
        await admin.close()


async def _stop(consumer: AIOKafkaConsumer) -> None:
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        # aiokafka 0.14 re-raises the cancellation of a group-less consumer's background
        # task when it is stopped before that task first ran (nothing to wait for then);
        # only a cancellation of this task itself must propagate.
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


async def wait_drained(
    bootstrap_servers: str,
    *,
    topic_prefix: str = "",
    timeout: float = 300.0,
    settle: float = 1.0,
    only: Iterable[str] | None = None,
    expect: Iterable[str] = (),
) -> dict[str, int]:
    """Wait until every group's lag stays zero for ``settle`` seconds.

    A group that has committed nothing yet is invisible to :func:`pipeline_lag` (it
    cannot tell which topics the group reads), so a consumer still joining its group
    would look drained. ``expect`` names the services (group names without the topic
    prefix) whose groups must have committed before the pipeline counts as drained.

    Returns:
        The last lag reading (all zeros).

    Raises:
        TimeoutError: still lagging after ``timeout`` seconds (the message holds the lags).
    """
    deadline = time.monotonic() + timeout
    zero_since: float | None = None
    lags: dict[str, int] = {}
    missing: list[str] = []
    while time.monotonic() < deadline:
        lags = await pipeline_lag(bootstrap_servers, topic_prefix, only)
        missing = [name for name in expect if topic_prefix + name not in lags]
        if not missing and all(v == 0 for v in lags.values()):
            zero_since = zero_since or time.monotonic()
            if time.monotonic() - zero_since >= settle:
                return lags
        else:
            zero_since = None
        await asyncio.sleep(0.25)
    raise TimeoutError(f"consumer groups still lagging: {lags}; not committed yet: {missing}")
