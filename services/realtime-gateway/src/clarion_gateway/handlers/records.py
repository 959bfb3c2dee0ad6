"""Consuming ``clarion.notifications.v1`` and ``clarion.inbox-events.v1`` into users' streams.

Every gateway instance is a member of the consumer group ``realtime-gateway``, so
each record is processed by one instance: it is appended to the recipient's
history and published on the recipient's channel, and every instance delivers it
to its own sessions. Offsets are committed after the batch was appended
(at-least-once); a redelivered record is a no-op thanks to the history script's
dedup. A record that is not a valid contract goes to ``<topic>.dlq`` with the
``x-clarion-*`` error headers and is counted; nothing is dropped silently.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord
from aiokafka.errors import CommitFailedError, KafkaError
from pydantic import ValidationError
from redis.exceptions import RedisError

from clarion_contracts.registry import INBOX_EVENTS, NOTIFICATIONS
from clarion_contracts.v1 import InboxEvent, Notification
from clarion_gateway.adapters.history import HistoryStore
from clarion_gateway.domain.entries import (
    StreamEntry,
    entry_from_inbox_event,
    entry_from_notification,
)
from clarion_gateway.metrics import GatewayMetrics
from clarion_gateway.settings import GatewaySettings
from clarion_kit.logging import get_logger
from clarion_kit.tracing import record_spans

log = get_logger(__name__)


@dataclass(frozen=True, slots=True)
class Rejected:
    """A record that is not a valid contract, with the reason for its DLQ headers."""

    record: ConsumerRecord[bytes, bytes]
    error: str
    error_type: str


class RecordProcessor:
    """Turns consumed records into stream entries and appends them.

    Args:
        settings: topic names (with the test/tenant prefix) and batch size.
        history: the Redis history.
        producer: used for the DLQ.
        metrics: instance metrics.
    """

    def __init__(
        self,
        settings: GatewaySettings,
        history: HistoryStore,
        producer: AIOKafkaProducer,
        metrics: GatewayMetrics,
    ) -> None:
        self.settings = settings
        self.history = history
        self.producer = producer
        self.metrics = metrics
        self.notifications_topic = settings.topic(NOTIFICATIONS)
        self.inbox_topic = settings.topic(INBOX_EVENTS)

    @property
    def topics(self) -> list[str]:
        """The two topics this processor consumes."""
        return [self.notifications_topic, self.inbox_topic]

    def parse(self, record: ConsumerRecord[bytes, bytes]) -> StreamEntry | Rejected:
        """Validate one record against its topic's contract."""
        value = record.value
        if value is None:
            return Rejected(record, "record has no value", "EmptyRecord")
        try:
            if record.topic == self.notifications_topic:
                return entry_from_notification(Notification.from_bytes(value))
            if record.topic == self.inbox_topic:
                return entry_from_inbox_event(InboxEvent.from_bytes(value))
        except ValidationError as exc:
            return Rejected(record, str(exc)[:500], "ValidationError")
        return Rejected(record, f"unexpected topic {record.topic}", "UnknownTopic")

    async def process(self, records: Sequence[ConsumerRecord[bytes, bytes]]) -> None:
        """Append valid records in order, send invalid ones to their DLQ.

        Raises:
            redis.RedisError: the history is unavailable (nothing is committed; the
                caller retries the same records).
            aiokafka.errors.KafkaError: a DLQ write failed.
        """
        entries: list[tuple[str, StreamEntry]] = []
        for record in records:
            parsed = self.parse(record)
            if isinstance(parsed, Rejected):
                await self._dead_letter(parsed)
            else:
                entries.append((record.topic, parsed))
        # One span per record, in the trace its producer started (W3C traceparent header).
        with record_spans(records):
            results = await self.history.append_many([e for _, e in entries])
        for (topic, _), result in zip(entries, results, strict=True):
            outcome = "duplicate" if result.duplicate else "appended"
            self.metrics.records.labels(topic, outcome).inc()

    async def _dead_letter(self, rejected: Rejected) -> None:
        record = rejected.record
        headers = [
            ("x-clarion-error", rejected.error.encode()),
            ("x-clarion-error-type", rejected.error_type.encode()),
            ("x-clarion-original-topic", record.topic.encode()),
            ("x-clarion-attempts", b"1"),
        ]
        await self.producer.send_and_wait(
            record.topic + ".dlq", value=record.value, key=record.key, headers=headers
        )
        self.metrics.records.labels(record.topic, "invalid").inc()
        log.warning("record_dead_lettered", topic=record.topic, offset=record.offset)

    async def run(self, consumer: AIOKafkaConsumer, stopping: asyncio.Event) -> None:
        """Consume until ``stopping`` is set; commit after each processed batch.

        A batch that fails on Redis is retried (with backoff) until it succeeds or
        the gateway stops; its offsets are only committed once it succeeded.
        """
        backoff = 0.1
        while not stopping.is_set():
            batches = await consumer.getmany(
                timeout_ms=200, max_records=self.settings.kafka_max_batch
            )
            records = [r for part in batches.values() for r in part]
            if not records:
                continue
            while True:
                try:
                    await self.process(records)
                    backoff = 0.1
                    break
                except (RedisError, KafkaError, OSError) as exc:
                    log.warning("batch_failed", error=str(exc), records=len(records))
                    if stopping.is_set():
                        return
                    await asyncio.sleep(backoff)
                    backoff = min(backoff * 2, 5.0)
            try:
                await consumer.commit()
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance took the partitions: the next owner replays the batch,
                # which the history script deduplicates.
                log.warning("commit_failed", error=str(exc))
