"""Kafka subscribers of the aggregator (FastStream), wired by :func:`register`.

* ``clarion.domain-events.v1``, consumer group ``aggregator``: batches go through
  :class:`~clarion_aggregator.handlers.pipeline.Pipeline`; offsets are committed
  after the batch's records were acknowledged (``AckPolicy.NACK_ON_ERROR``), so a crash
  redelivers the batch (at-least-once; duplicates are absorbed by dedup).
* ``clarion.preferences.v1``, ``clarion.user-profiles.v1`` (compacted) and
  ``clarion.presence.v1``: materialised into Redis by one consumer WITHOUT a
  consumer group, which reads every partition from the earliest offset at each
  start (writes are idempotent, so re-reading the compacted state on start is
  harmless and heals any update a past failure missed). A failed batch is retried
  in place with backoff (:data:`STATE_RETRY_ATTEMPTS`), then counted as dropped
  until the next start re-reads it. When Redis loses them, the state rebuild
  (:mod:`clarion_aggregator.handlers.rebuild`) re-reads these topics too.

The consumer group id is ``topic_prefix + consumer_group`` so deployments (and
tests) that isolate their topics by prefix also isolate their groups.

A record that is not a valid contract goes to the topic's DLQ with the
``x-clarion-error*`` headers and is counted; it never blocks its partition.
A failure of Redis or Kafka makes the batch fail: FastStream seeks back and the
batch is consumed again after a short pause.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, TypeVar

from aiokafka import ConsumerRecord
from faststream.kafka import KafkaBroker
from faststream.middlewares import AckPolicy
from pydantic import ValidationError

from clarion_aggregator.adapters.kafka import KafkaPublisher, OutRecord
from clarion_aggregator.adapters.redis_store import RedisStateStore
from clarion_aggregator.handlers.pipeline import Pipeline
from clarion_aggregator.handlers.rebuild import StateRebuilder, process_rebuilding
from clarion_aggregator.metrics import AggregatorMetrics
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.base import ContractModel
from clarion_contracts.registry import (
    DOMAIN_EVENTS,
    PREFERENCES,
    PRESENCE,
    USER_PROFILES,
    TopicSpec,
)
from clarion_contracts.v1 import DomainEvent, Preferences, PresenceEvent, UserProfile
from clarion_kit.kafka import raw_records
from clarion_kit.logging import get_logger
from clarion_kit.retry import dlq_headers
from clarion_kit.tracing import continue_traces

log = get_logger(__name__)
M = TypeVar("M", bound=ContractModel)

RETRY_PAUSE_SECONDS = 1.0
"""Pause before a failed batch is consumed again, so an outage is not a busy loop."""

STATE_RETRY_ATTEMPTS = 12
"""Tries of a materialised-state batch (backoff 1, 2, 4... capped at 10 s: about 1.5 min)."""


async def parse_batch(
    records: Sequence[ConsumerRecord[Any, Any]],
    model: type[M],
    publisher: KafkaPublisher,
    dlq_topic: str,
    original_topic: str,
    metrics: AggregatorMetrics,
    headers_out: list[Any] | None = None,
) -> list[M]:
    """Parse each record value as ``model``; invalid ones go to ``dlq_topic``.

    Tombstones (null values on compacted topics) are skipped. Returns the valid
    models in record order; with ``headers_out``, each one's record headers are appended
    to it (the same order), for the trace context of what the model produces.

    Raises:
        aiokafka.errors.KafkaError: a DLQ record was not acknowledged.
    """
    out: list[M] = []
    dead: list[OutRecord] = []
    for rec in records:
        if rec.value is None:
            continue
        try:
            out.append(model.from_bytes(rec.value))
            if headers_out is not None:
                headers_out.append(rec.headers)
        except (ValidationError, ValueError) as exc:
            key = rec.key.decode(errors="replace") if isinstance(rec.key, bytes) else ""
            dead.append(
                OutRecord(
                    dlq_topic,
                    key,
                    rec.value if isinstance(rec.value, bytes) else str(rec.value).encode(),
                    dlq_headers(rec, exc, 1),
                )
            )
    if dead:
        await publisher.publish_many(dead)
        metrics.dead_lettered.labels(topic=original_topic).inc(len(dead))
        log.warning("records_dead_lettered", topic=original_topic, count=len(dead))
    return out


def register(
    broker: KafkaBroker,
    settings: AggregatorSettings,
    pipeline: Pipeline,
    store: RedisStateStore,
    publisher: KafkaPublisher,
    metrics: AggregatorMetrics,
    rebuilder: StateRebuilder | None = None,
) -> None:
    """Attach the aggregator's subscribers to ``broker`` (before it starts).

    With ``rebuilder``, a batch that meets lost Redis state
    (:class:`~clarion_aggregator.adapters.redis_store.StateLost`) waits for the
    rebuild and is processed again; without it the batch fails and is consumed again.
    """
    batch_opts: dict[str, Any] = {
        "batch": True,
        "max_records": settings.batch_max_records,
        "batch_timeout_ms": 20,
        "auto_offset_reset": "earliest",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "fetch_max_wait_ms": settings.kafka_fetch_max_wait_ms,
        "decoder": raw_records,
    }

    def consume(
        spec: TopicSpec,
        model: type[M],
        group_id: str,
        handle: Callable[[list[M], list[Any]], Awaitable[None]],
    ) -> None:
        topic = settings.topic(spec)
        dlq = settings.dlq(spec)

        @broker.subscriber(topic, group_id=group_id, **batch_opts)  # type: ignore[untyped-decorator]
        async def _consume(records: list[Any]) -> None:
            try:
                headers: list[Any] = []
                items = await parse_batch(
                    records, model, publisher, dlq, spec.name, metrics, headers
                )
                if items:
                    await handle(items, headers)
            except Exception:
                log.exception("batch_failed", topic=topic, records=len(records))
                metrics.batches_failed.labels(topic=spec.name).inc()
                await asyncio.sleep(RETRY_PAUSE_SECONDS)
                raise

    async def on_events(events: list[DomainEvent], headers: list[Any]) -> None:
        started = time.perf_counter()
        # One span per event in the event's own trace; what it produces continues below it.
        topic = settings.topic(DOMAIN_EVENTS)
        attrs = {"messaging.destination.name": topic}
        with continue_traces(f"{topic} process", headers, attributes=attrs) as carriers:
            await process_rebuilding(pipeline, rebuilder, events, carriers)
        metrics.batch_seconds.observe(time.perf_counter() - started)

    async def on_state(records: list[ConsumerRecord[Any, Any]]) -> None:
        by_topic: dict[str, list[ConsumerRecord[Any, Any]]] = {}
        for rec in records:
            by_topic.setdefault(rec.topic, []).append(rec)
        for topic, recs in by_topic.items():
            spec = state_topics[topic]
            if spec is PREFERENCES:
                prefs = await parse_batch(
                    recs, Preferences, publisher, settings.dlq(spec), spec.name, metrics
                )
                await store.put_preferences_many(prefs)
                count = len(prefs)
            elif spec is USER_PROFILES:
                profiles = await parse_batch(
                    recs, UserProfile, publisher, settings.dlq(spec), spec.name, metrics
                )
                await store.put_profiles(profiles)
                count = len(profiles)
            else:
                presence = await parse_batch(
                    recs, PresenceEvent, publisher, settings.dlq(spec), spec.name, metrics
                )
                for event in presence:
                    await store.put_presence(event)
                count = len(presence)
            metrics.materialised.labels(topic=spec.name).inc(count)

    consume(DOMAIN_EVENTS, DomainEvent, settings.topic_prefix + settings.consumer_group, on_events)

    state_topics = {settings.topic(s): s for s in (PREFERENCES, USER_PROFILES, PRESENCE)}

    @broker.subscriber(
        *state_topics,
        group_id=None,
        batch=True,
        max_records=settings.batch_max_records,
        batch_timeout_ms=20,
        auto_offset_reset="earliest",
        ack_policy=AckPolicy.ACK_FIRST,
        decoder=raw_records,
        # Off the live path: a profile or preference change applies within this wait.
        fetch_max_wait_ms=settings.kafka_background_fetch_max_wait_ms,
    )
    async def _materialise(records: list[Any]) -> None:
        for attempt in range(1, STATE_RETRY_ATTEMPTS + 1):
            try:
                await on_state(records)
                return
            except Exception:
                log.exception("materialise_failed", attempt=attempt, records=len(records))
                await asyncio.sleep(min(RETRY_PAUSE_SECONDS * 2 ** (attempt - 1), 10.0))
        metrics.materialise_dropped.inc(len(records))
