"""Kafka wiring of analytics: a broker with ONE batch subscriber on the four topics.

One consumer per process (consumer group ``analytics``) reads all four topics:
a consumer per topic in the same group would make every start-up a series of
group rebalances. Batches (up to ``batch_max_records`` records or
``batch_timeout_ms``) are committed after the batch handler returned
(``AckPolicy.NACK_ON_ERROR``). Record values are handed to the handler raw (a
custom decoder), so one malformed record cannot fail a whole batch's decoding:
the handler dead-letters it on its own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

from aiokafka import TopicPartition
from faststream.kafka import KafkaBroker
from faststream.kafka.annotations import KafkaMessage
from prometheus_client import CollectorRegistry

from clarion_analytics.handlers.consume import BatchHandler
from clarion_analytics.settings import AnalyticsSettings
from clarion_contracts.registry import (
    DELIVERY_STATUS,
    INBOX_EVENTS,
    NOTIFICATIONS,
    PRESENCE,
    TopicSpec,
)
from clarion_kit.kafka import create_broker, raw_records, subscriber_options
from clarion_kit.retry import RecordLike

CONSUMED: tuple[TopicSpec, ...] = (NOTIFICATIONS, INBOX_EVENTS, DELIVERY_STATUS, PRESENCE)
"""The topics analytics consumes."""


def _report_lag(handler: BatchHandler, consumer: Any, records: Sequence[RecordLike]) -> None:
    """Lag per partition of the batch: high watermark minus the next offset to read."""
    last: dict[tuple[str, int], int] = {}
    for record in records:
        key = (record.topic, record.partition)
        last[key] = max(last.get(key, -1), record.offset)
    highwater = getattr(consumer, "highwater", None)
    if highwater is None:
        return
    for (topic, partition), offset in last.items():
        high = highwater(TopicPartition(topic, partition))
        if high is not None:
            handler.metrics.lag(topic, partition, high - (offset + 1))


def build_broker(
    settings: AnalyticsSettings,
    get_handler: Callable[[], BatchHandler],
    *,
    registry: CollectorRegistry | None = None,
) -> KafkaBroker:
    """A broker subscribed to :data:`CONSUMED`; ``get_handler`` returns the batch handler
    (created in the lifespan, once the database is ready)."""
    broker = create_broker(settings, registry=registry)
    by_topic = {settings.topic(spec): spec for spec in CONSUMED}
    options = subscriber_options(
        settings,
        group_id=settings.consumer_group,
        auto_offset_reset=settings.auto_offset_reset,
        background=True,
    )

    @broker.subscriber(  # type: ignore[untyped-decorator]
        *by_topic,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=settings.batch_timeout_ms,
        decoder=raw_records,
        title="analytics",
        **options,
    )
    async def consume(message: KafkaMessage) -> None:
        raw = message.raw_message
        records: Sequence[RecordLike] = list(raw) if isinstance(raw, tuple) else [raw]
        grouped: dict[str, list[RecordLike]] = {}
        for record in records:
            grouped.setdefault(record.topic, []).append(record)
        handler = get_handler()
        # Registry order (notifications first) lets most facts find their cohort at once.
        for topic, spec in by_topic.items():
            if topic in grouped:
                await handler.handle(spec, grouped[topic])
        _report_lag(handler, message.consumer, records)

    return broker
