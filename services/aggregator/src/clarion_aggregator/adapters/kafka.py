"""Kafka side of the aggregator: the broker and a batched, confirmed publisher.

Records are produced without waiting for each acknowledgement and then awaited
together, so a batch of thousands of notifications costs one round of broker
acknowledgements (``acks=all``) instead of one per record. The consumer commits
its offsets only after :meth:`KafkaPublisher.publish_many` returned, which is
what makes delivery at-least-once.
"""

from __future__ import annotations

import asyncio
import inspect
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker

from clarion_aggregator.settings import AggregatorSettings
from clarion_kit import kafka as kit_kafka


@dataclass(frozen=True)
class OutRecord:
    """One record to produce: runtime topic name, key, JSON value and headers."""

    topic: str
    key: str
    value: bytes
    headers: dict[str, str] | None = None


def create_broker(settings: AggregatorSettings, **overrides: Any) -> KafkaBroker:
    """The service's broker (:func:`clarion_kit.kafka.create_broker`: acks=all, telemetry,
    Prometheus, retry/DLQ middleware for single-record subscribers)."""
    return kit_kafka.create_broker(settings, **overrides)


async def ensure_topics(settings: AggregatorSettings) -> None:
    """Create every registry topic and its DLQ if missing (kit ``ensure_topics``)."""
    await kit_kafka.ensure_topics(settings)


def raw_producer(broker: KafkaBroker) -> Any | None:
    """The connected aiokafka producer behind a FastStream broker, or ``None``.

    FastStream 0.7 keeps it at ``broker.config.producer._producer.producer``;
    :class:`faststream.kafka.TestKafkaBroker` has none.
    """
    fast = getattr(getattr(broker, "config", None), "producer", None)
    inner = getattr(getattr(fast, "_producer", None), "producer", None)
    return inner if inner is not None and hasattr(inner, "send") else None


_PARTITIONER = DefaultPartitioner()


async def _send_batches(producer: Any, records: Sequence[OutRecord]) -> list[Awaitable[Any]]:
    """Hand ``records`` to aiokafka as record batches, one future per batch.

    Records go to the partition aiokafka's ``send`` would choose (the Java client's
    murmur2 of the key), in order within each partition, so per-key order holds. A
    batch per partition instead of a future per record: at fan-out sizes the
    per-record ``send`` costs more than building the notification.
    """
    by_partition: dict[tuple[str, int], list[tuple[bytes, OutRecord]]] = {}
    partitions: dict[str, list[int]] = {}
    for rec in records:
        parts = partitions.get(rec.topic)
        if parts is None:
            parts = partitions[rec.topic] = list(await producer.partitions_for(rec.topic))
        key = rec.key.encode()
        by_partition.setdefault((rec.topic, _PARTITIONER(key, parts, parts)), []).append((key, rec))
    pending: list[Awaitable[Any]] = []
    for (topic, partition), items in by_partition.items():
        batch = producer.create_batch()
        for key, rec in items:
            headers = [(k, v.encode()) for k, v in rec.headers.items()] if rec.headers else []
            if batch.append(key=key, value=rec.value, timestamp=None, headers=headers) is None:
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                if batch.append(key=key, value=rec.value, timestamp=None, headers=headers) is None:
                    # Larger than a whole batch: send() raises the broker's size error.
                    pending.append(
                        await producer.send(
                            topic, rec.value, key=key, partition=partition, headers=headers
                        )
                    )
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
    return pending


class KafkaPublisher:
    """Produces batches of records with the broker's connection.

    Bulk records go straight to the broker's aiokafka producer: FastStream's
    per-message publish middlewares (a span and metrics per record) cost more
    than the aggregation itself at fan-out sizes. Trace context travels in the
    records' ``traceparent`` headers set by the pipeline, and the pipeline counts
    what it produces. Without a raw producer (test broker) it publishes through
    FastStream.

    Args:
        broker: a connected (or test) :class:`KafkaBroker`.
    """

    def __init__(self, broker: KafkaBroker) -> None:
        self.broker = broker

    async def publish_many(self, records: Sequence[OutRecord]) -> None:
        """Produce every record and wait until the broker acknowledged all of them.

        Raises:
            aiokafka.errors.KafkaError: a record was not acknowledged; the caller
                must not commit its input offsets (the batch will be redelivered).
        """
        pending = await self.send_many(records)
        if pending:
            await asyncio.gather(*pending)

    async def send_many(self, records: Sequence[OutRecord]) -> list[Awaitable[Any]]:
        """Hand every record to the producer; returns the acknowledgements to await.

        The caller must await all of them (``asyncio.gather``) before it commits
        the offsets of what produced them.
        """
        producer = raw_producer(self.broker)
        pending: list[Awaitable[Any]] = []
        if producer is not None:
            return await _send_batches(producer, records)
        for rec in records:
            result = await self.broker.publish(
                rec.value,
                rec.topic,
                key=rec.key.encode(),
                headers=rec.headers,
                no_confirm=True,
            )
            if inspect.isawaitable(result):
                pending.append(result)
        return pending
