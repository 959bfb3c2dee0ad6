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
        producer = kit_kafka.raw_producer(self.broker)
        pending: list[Awaitable[Any]] = []
        if producer is not None:
            return await kit_kafka.send_batches(
                producer,
                (
                    kit_kafka.OutgoingRecord(
                        rec.topic,
                        rec.key.encode(),
                        rec.value,
                        [(k, v.encode()) for k, v in rec.headers.items()] if rec.headers else (),
                    )
                    for rec in records
                ),
            )
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
