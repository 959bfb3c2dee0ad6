"""Kafka: the FastStream broker every service uses, subscriber defaults, topic creation.

Delivery is at-least-once: producers use ``acks="all"`` (the record is on every
in-sync replica before the send returns) without the idempotent producer (the
embedded Tansu broker refuses ``InitProducerId``), so duplicates are possible
and every consumer deduplicates (:mod:`clarion_kit.dedup`). Consumers commit an
offset only after the handler finished (FastStream ``AckPolicy.NACK_ON_ERROR``:
commit on success, seek back on an unhandled error) and failures go through
:mod:`clarion_kit.retry` to the DLQ, after which the offset is committed. Commits
are batched in time (:class:`IntervalCommitConsumer`, ``kafka_commit_interval_ms``).
Consumers never hand on a record past an offset gap and flag broker data loss for
readiness (:mod:`clarion_kit.continuity`, ``kafka_on_data_loss``).

Typical service wiring::

    broker = create_broker(settings)

    @broker.subscriber(settings.topic(DOMAIN_EVENTS), **subscriber_options(settings))
    async def on_event(event: DomainEvent) -> None: ...

    app = AsgiFastStream(broker, asgi_routes=health.asgi_routes(checks),
                         on_startup=[lambda: ensure_topics(settings)])
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Iterable, Sequence
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.errors import KafkaError
from aiokafka.partitioner import DefaultPartitioner
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from faststream.middlewares import AckPolicy, BaseMiddleware
from opentelemetry import context as otel_context
from opentelemetry import trace
from prometheus_client import REGISTRY

from clarion_contracts.registry import TOPICS, TopicSpec
from clarion_kit.continuity import ConsumerGuard, ContinuityConsumer
from clarion_kit.logging import get_logger
from clarion_kit.metrics import metric_name
from clarion_kit.retry import DeadLetterMiddleware, RetryPolicy
from clarion_kit.tracing import ensure_tracing, extract

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider
    from prometheus_client import CollectorRegistry

    from clarion_kit.settings import ServiceSettings

_log = get_logger(__name__)

KAFKA_LOGGER = "clarion.kafka"
"""Name of the stdlib logger FastStream brokers log through."""

TOPIC_ALREADY_EXISTS = 36
"""Kafka protocol error code ``TOPIC_ALREADY_EXISTS``."""


class CallerTraceContextMiddleware(BaseMiddleware):
    """Publishes a record under the trace context its caller put in its headers.

    FastStream's telemetry middleware parents a published record on the *current*
    context, which is wrong for a batch handler: one batch holds records of many
    traces, and each record it produces belongs to the trace of the record it came
    from. A caller that knows that parent writes it into the outgoing headers
    (:func:`clarion_kit.tracing.inject`, W3C ``traceparent``); this middleware, placed
    outside the telemetry one, makes that context current while the record is
    published, so the producer spans and the propagated ``traceparent`` continue the
    caller's trace. Records without a ``traceparent`` are published unchanged.
    """

    async def publish_scope(self, call_next: Any, cmd: Any) -> Any:
        """Publish ``cmd`` with the context of its ``traceparent`` header current."""
        headers = getattr(cmd, "headers", None)
        if not isinstance(headers, dict):
            return await call_next(cmd)
        parent = extract(headers)
        if not trace.get_current_span(parent).get_span_context().is_valid:
            return await call_next(cmd)
        # The telemetry middleware writes its own traceparent into the headers in place:
        # a copy keeps the caller's dict (often shared by several records) unchanged.
        cmd.headers = dict(headers)
        token = otel_context.attach(parent)
        try:
            return await call_next(cmd)
        finally:
            otel_context.detach(token)


def create_broker(
    settings: ServiceSettings,
    *,
    registry: CollectorRegistry | None = None,
    tracer_provider: TracerProvider | None = None,
    retry_policy: RetryPolicy | None = None,
    dead_letter: bool = True,
    middlewares: Sequence[Any] = (),
    **overrides: Any,
) -> KafkaBroker:
    """Return a FastStream ``KafkaBroker`` configured the Clarion way (not yet connected).

    * ``acks="all"``, ``enable_idempotence=False``, ``client_id`` =
      ``<service_name>-<instance_id>``;
    * ack policy ``NACK_ON_ERROR``: offsets committed after the handler (at-least-once),
      at most once per ``kafka_commit_interval_ms`` (:class:`IntervalCommitConsumer`);
    * logs through the stdlib logger :data:`KAFKA_LOGGER` (JSON once logging is configured);
    * the global OpenTelemetry tracer provider configured from ``settings`` when none is
      installed yet (:func:`clarion_kit.tracing.ensure_tracing`);
    * middlewares, outermost first: :class:`CallerTraceContextMiddleware` (a record
      whose headers already carry a ``traceparent`` is published in that trace),
      OpenTelemetry (consume/publish spans, W3C ``traceparent`` in record headers),
      Prometheus (``clarion_<service>_*`` FastStream metrics), then ``middlewares``, then
      the DLQ middleware (retries with backoff, then ``<topic>.dlq``) unless ``dead_letter=False``.

    Args:
        settings: ``kafka_bootstrap_servers``, ``service_name``, ``instance_id``, ``retry_*``.
        registry: Prometheus registry (default: the process one).
        tracer_provider: OpenTelemetry provider (default: the global one).
        retry_policy: overrides :meth:`RetryPolicy.from_settings`.
        dead_letter: install the retry/DLQ middleware.
        middlewares: extra FastStream middlewares.
        **overrides: any ``KafkaBroker`` keyword argument, applied last.

    The DLQ middleware is reachable as ``broker.clarion_dlq`` (None when disabled), the
    subscribers' offset-continuity and data-loss guard as ``broker.clarion_consumer_guard``
    (:class:`clarion_kit.continuity.ConsumerGuard`; :func:`ping` fails once it saw data loss).
    """
    reg = registry if registry is not None else REGISTRY
    if tracer_provider is None:
        ensure_tracing(settings)
    chain: list[Any] = [
        CallerTraceContextMiddleware,
        KafkaTelemetryMiddleware(tracer_provider=tracer_provider),
        KafkaPrometheusMiddleware(
            registry=reg,
            app_name=settings.service_name,
            metrics_prefix=metric_name(settings.service_name, "").rstrip("_"),
        ),
        *middlewares,
    ]
    dlq: DeadLetterMiddleware | None = None
    if dead_letter:
        dlq = DeadLetterMiddleware(
            settings.service_name,
            retry_policy or RetryPolicy.from_settings(settings),
            registry=reg,
        )
        chain.append(dlq)
    options: dict[str, Any] = {
        "bootstrap_servers": [s.strip() for s in settings.kafka_bootstrap_servers.split(",")],
        "acks": "all",
        "enable_idempotence": False,
        "client_id": f"{settings.service_name}-{settings.instance_id}",
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "middlewares": chain,
        "graceful_timeout": 15.0,
        # A plain stdlib logger: records propagate to the root handler that
        # clarion_kit.logging.configure_logging installs (JSON with trace ids).
        "logger": logging.getLogger(KAFKA_LOGGER),
        # One "Received"/"Processed" line per record is noise at any real volume:
        # keep it for CLARION_LOG_LEVEL=DEBUG; metrics and traces cover the rest.
        "log_level": logging.DEBUG,
    }
    options.update(overrides)
    broker = _ClarionKafkaBroker(**options)
    broker.clarion_commit_interval_ms = settings.kafka_commit_interval_ms
    broker.clarion_consumer_guard = ConsumerGuard.from_settings(settings, registry=reg)
    if dlq is not None:
        dlq.bind(broker)
    broker.clarion_dlq = dlq  # type: ignore[attr-defined]
    return broker


@dataclass(frozen=True, slots=True)
class OutgoingRecord:
    """One record for :func:`send_batches`: topic, key, value and headers (bytes)."""

    topic: str
    key: bytes | None
    value: bytes
    headers: Sequence[tuple[str, bytes]] = ()


def raw_producer(broker: KafkaBroker) -> Any | None:
    """The connected aiokafka producer behind a FastStream broker, or ``None``.

    FastStream 0.7 keeps it at ``broker.config.producer._producer.producer``;
    :class:`faststream.kafka.TestKafkaBroker` has none (publish through the broker then).
    """
    fast = getattr(getattr(broker, "config", None), "producer", None)
    inner = getattr(getattr(fast, "_producer", None), "producer", None)
    return inner if inner is not None and hasattr(inner, "send_batch") else None


_PARTITIONER = DefaultPartitioner()


class IntervalCommitConsumer(ContinuityConsumer):
    """An aiokafka consumer whose ``commit()`` reaches the broker at most once per interval.

    A :class:`clarion_kit.continuity.ContinuityConsumer`: records come without offset
    gaps and broker data loss is detected (``guard`` keyword argument).

    ``commit()`` without arguments (what FastStream calls after each handled batch,
    and the gateway after each appended one) snapshots the consumed positions, which
    at that moment are exactly the processed records: the next ``getmany`` has not
    returned yet. The snapshot is committed at once when the last commit is
    ``commit_interval_ms`` old, otherwise by a timer at the end of the interval, and
    on :meth:`stop` (graceful shutdown commits what was finished). An explicit
    ``commit(offsets)`` and ``commit_interval_ms=0`` commit immediately, as aiokafka does.

    Every commit is an OffsetCommit round trip and broker work; at one commit per
    small batch, that was a large share of what a busy consumer and the broker spent.
    The cost: a crash, or a rebalance that moves a partition before the timer fired,
    redelivers at most one interval of records (at-least-once, which every Clarion
    consumer absorbs by deduplication or versioned upserts). Positions taken before a
    rebalance are dropped, never committed, so a stale snapshot cannot move another
    member's committed offset backwards.

    Raises (from ``commit``): what ``AIOKafkaConsumer.commit`` raises when this call
    commits; a timer commit that fails is logged and retried with the next one.
    """

    def __init__(self, *topics: str, commit_interval_ms: int = 0, **kwargs: Any) -> None:
        super().__init__(*topics, **kwargs)
        self._commit_interval = commit_interval_ms / 1000
        self._pending: dict[Any, Any] = {}
        self._pending_assignment: Any = None
        self._last_commit = 0.0
        self._commit_lock = asyncio.Lock()
        self._timer: asyncio.Task[None] | None = None

    async def commit(self, offsets: Any = None) -> None:
        """Commit ``offsets`` now, or the consumed positions within the interval."""
        if offsets is not None or self._commit_interval <= 0:
            await super().commit(offsets)
            return
        # The same snapshot AIOKafkaConsumer.commit() takes when given no offsets.
        assignment = self._assignment()
        if assignment is None:
            return
        if assignment is not self._pending_assignment:
            self._pending = {}
            self._pending_assignment = assignment
        self._pending.update(assignment.all_consumed_offsets())
        due = self._last_commit + self._commit_interval - time.monotonic()
        if due <= 0:
            await self._flush()
        elif self._timer is None:
            self._timer = asyncio.create_task(self._flush_later(due))

    async def _flush(self) -> None:
        async with self._commit_lock:
            offsets, self._pending = self._pending, {}
            if self._assignment() is not self._pending_assignment:
                # A rebalance since these positions were taken: the partitions' owners
                # now resume from the last commit (at-least-once), never from ours.
                return
            self._last_commit = time.monotonic()
            if not offsets:
                return
            try:
                await super().commit(offsets)
            except BaseException:
                # Keep them for the next commit unless newer positions arrived meanwhile.
                self._pending = {**offsets, **self._pending}
                raise

    async def _flush_later(self, delay: float) -> None:
        await asyncio.sleep(delay)
        # Cleared before flushing: a commit() arriving meanwhile schedules the next one.
        self._timer = None
        try:
            await self._flush()
        except (KafkaError, OSError) as exc:
            _log.warning("offset_commit_failed", error=str(exc))

    async def stop(self) -> None:
        """Commit what is pending (best effort), then stop the consumer."""
        timer, self._timer = self._timer, None
        if timer is not None:
            timer.cancel()
            await asyncio.gather(timer, return_exceptions=True)
        if self._pending and self._group_id is not None:
            try:
                await self._flush()
            except (KafkaError, OSError) as exc:
                _log.warning("offset_commit_failed", error=str(exc), at="stop")
        await super().stop()


class _ClarionKafkaBroker(KafkaBroker):
    """A ``KafkaBroker`` whose subscribers use :class:`IntervalCommitConsumer`."""

    clarion_commit_interval_ms: int = 0
    clarion_consumer_guard: ConsumerGuard | None = None

    async def _connect(self) -> Any:
        # FastStream rebuilds its consumer factory on connect; swap the class after it.
        builder = await super()._connect()
        keywords = getattr(builder, "keywords", None)  # partial(AIOKafkaConsumer, ...)
        if keywords is None:
            return builder
        config = self.config.broker_config
        config.builder = partial(
            IntervalCommitConsumer,
            commit_interval_ms=self.clarion_commit_interval_ms,
            guard=self.clarion_consumer_guard,
            **keywords,
        )
        return config.builder


COALESCE_MAX_RECORDS = 16
"""Up to this many records for one partition, :func:`send_batches` appends them to the
producer's open batch (``send``) instead of sending a batch of their own."""


async def send_batches(producer: Any, records: Iterable[OutgoingRecord]) -> list[Awaitable[Any]]:
    """Hand ``records`` to an aiokafka producer as record batches; returns their futures.

    Each record goes to the partition aiokafka's ``send`` would choose (the Java
    client's murmur2 of the key; a random available partition without a key), in
    order within each partition, so per-key order holds. The caller awaits every
    returned future (``asyncio.gather``) to know the broker acknowledged everything
    (``acks`` as the producer was configured).

    Many records for one partition make one batch of their own, with one future:
    FastStream's per-message publish (a span and metrics per record) and aiokafka's
    per-record futures cost more than building the records. A few records (at most
    :data:`COALESCE_MAX_RECORDS`) join the producer's open batch of the partition
    instead: aiokafka keeps one produce request in flight per broker and a batch of
    its own waits until the partition's pending batch left, so concurrent callers
    publishing one record each (ingest-api's ``POST /v1/events``) would otherwise cost
    one broker round trip each, one after the other.

    Raises:
        aiokafka.errors.KafkaError: from the producer (metadata, or a record larger
            than the broker accepts), directly or through a returned future.
    """
    by_partition: dict[tuple[str, int], list[OutgoingRecord]] = {}
    partitions: dict[str, list[int]] = {}
    for rec in records:
        parts = partitions.get(rec.topic)
        if parts is None:
            parts = partitions[rec.topic] = list(await producer.partitions_for(rec.topic))
        partition = _PARTITIONER(rec.key, parts, parts)
        by_partition.setdefault((rec.topic, partition), []).append(rec)
    pending: list[Awaitable[Any]] = []
    for (topic, partition), items in by_partition.items():
        if len(items) <= COALESCE_MAX_RECORDS:
            pending.extend([await _send_one(producer, partition, rec) for rec in items])
            continue
        batch = producer.create_batch()
        for rec in items:
            headers = list(rec.headers)
            if batch.append(key=rec.key, value=rec.value, timestamp=None, headers=headers) is None:
                if batch.record_count():
                    pending.append(await producer.send_batch(batch, topic, partition=partition))
                    batch = producer.create_batch()
                appended = batch.append(
                    key=rec.key, value=rec.value, timestamp=None, headers=headers
                )
                if appended is None:
                    # Larger than a whole batch: send() raises the broker's size error.
                    pending.append(await _send_one(producer, partition, rec))
        if batch.record_count():
            pending.append(await producer.send_batch(batch, topic, partition=partition))
    return pending


async def _send_one(producer: Any, partition: int, rec: OutgoingRecord) -> Awaitable[Any]:
    """Append one record to the producer's open batch of ``partition``; its future."""
    future: Awaitable[Any] = await producer.send(
        rec.topic, rec.value, key=rec.key, partition=partition, headers=list(rec.headers)
    )
    return future


async def raw_records(message: Any) -> list[Any]:
    """FastStream decoder handing a handler its records as aiokafka ``ConsumerRecord``s.

    ``broker.subscriber(topic, batch=True, decoder=raw_records)`` then
    ``async def handle(records: list[Any])``: the handler gets the batch (or the one
    record, as a list) undecoded, so it parses each value itself (one malformed value
    does not fail the batch) and reads keys, headers and offsets. Taking the records
    as the body also spares a ``KafkaMessage`` context parameter, which FastStream's
    dependency injection resolves in a worker thread for every message.
    """
    raw = message.raw_message
    return list(raw) if isinstance(raw, list | tuple) else [raw]


def subscriber_options(
    settings: ServiceSettings,
    *,
    group_id: str | None = None,
    background: bool = False,
    **overrides: Any,
) -> dict[str, Any]:
    """Keyword arguments for ``broker.subscriber(topic, **subscriber_options(settings))``.

    * ``group_id``: the consumer group, default ``settings.service_name`` (one group per
      service: partitions are shared among its replicas), prefixed with
      ``settings.topic_prefix`` like the topics, so two deployments sharing a cluster
      under different prefixes never share (or rebalance) a group;
    * ``auto_offset_reset="earliest"``: a new group reads the topic from the start;
    * ``fetch_max_wait_ms`` = ``settings.kafka_fetch_max_wait_ms``, or
      ``settings.kafka_background_fetch_max_wait_ms`` when ``background`` (a consumer
      off the live path: an idle consumer then costs the broker 5 fetches/s, not 200);
    * ``session_timeout_ms`` = ``settings.kafka_session_timeout_ms``, heartbeats at a third
      of it (at most 3 s);
    * ``ack_policy=NACK_ON_ERROR``: commit after the handler returned (or the record was
      dead-lettered), seek back when it raised. Pass ``ack_policy=AckPolicy.MANUAL`` to
      commit yourself with ``await message.ack()``.

    ``overrides`` replace any of these or add other ``subscriber`` arguments.
    """
    session = settings.kafka_session_timeout_ms
    options: dict[str, Any] = {
        "group_id": settings.topic_prefix + (group_id or settings.service_name),
        "auto_offset_reset": "earliest",
        "fetch_max_wait_ms": (
            settings.kafka_background_fetch_max_wait_ms
            if background
            else settings.kafka_fetch_max_wait_ms
        ),
        "ack_policy": AckPolicy.NACK_ON_ERROR,
        "session_timeout_ms": session,
        # Kafka wants heartbeats at no more than a third of the session timeout.
        "heartbeat_interval_ms": min(3000, session // 3),
    }
    options.update(overrides)
    return options


def _new_topics(
    settings: ServiceSettings, specs: Iterable[TopicSpec], include_dlq: bool
) -> list[NewTopic]:
    topics: list[NewTopic] = []
    for spec in specs:
        partitions = settings.partitions_for(spec)
        topics.append(
            NewTopic(
                settings.topic(spec),
                partitions,
                settings.kafka_replication_factor,
                topic_configs=spec.config(),
            )
        )
        if include_dlq:
            topics.append(
                NewTopic(
                    settings.dlq(spec),
                    partitions,
                    settings.kafka_replication_factor,
                    topic_configs=spec.dlq_config(),
                )
            )
    return topics


async def ensure_topics(
    settings: ServiceSettings,
    specs: Iterable[TopicSpec] = TOPICS,
    *,
    include_dlq: bool = True,
    timeout: float = 30.0,
) -> list[str]:
    """Create the topics of ``specs`` (and their ``.dlq`` twins) if missing; wait for them.

    Names come from ``settings.topic`` / ``settings.dlq``; partitions from the spec
    unless ``kafka_partitions_override`` is set; configuration from ``spec.config()``
    (``cleanup.policy``, ``retention.ms``...) and ``spec.dlq_config()``. Topics that
    already exist are left as they are (Kafka CreateTopics error 36 is ignored).
    Returns once cluster metadata lists every topic with its partitions.

    Args:
        settings: service settings.
        specs: topic specs from :mod:`clarion_contracts.registry`.
        include_dlq: also create each ``<topic>.dlq``.
        timeout: seconds to wait for the broker and metadata.

    Returns:
        The names of the topics this call created (empty if all existed).

    Raises:
        RuntimeError: the broker answered another CreateTopics error, or metadata did not
            show the topics within ``timeout``.
        aiokafka.errors.KafkaConnectionError: the broker is unreachable.
    """
    wanted = _new_topics(settings, specs, include_dlq)
    if not wanted:
        return []
    admin = AIOKafkaAdminClient(
        bootstrap_servers=[s.strip() for s in settings.kafka_bootstrap_servers.split(",")],
        client_id=f"{settings.service_name}-admin",
        request_timeout_ms=int(timeout * 1000),
    )
    await asyncio.wait_for(admin.start(), timeout)
    try:
        created = await _create(admin, wanted, timeout)
        await _wait_for_metadata(admin, {t.name: t.num_partitions for t in wanted}, timeout)
    finally:
        await admin.close()
    if created:
        _log.info("topics created", topics=created)
    return created


async def _create(admin: AIOKafkaAdminClient, wanted: list[NewTopic], timeout: float) -> list[str]:
    existing = set(await admin.list_topics())
    missing = [t for t in wanted if t.name not in existing]
    if not missing:
        return []
    response = await admin.create_topics(missing, timeout_ms=int(timeout * 1000))
    created: list[str] = []
    errors: list[str] = []
    for entry in response.topic_errors:
        name, code = entry[0], entry[1]
        message = entry[2] if len(entry) > 2 else None
        if code == 0:
            created.append(name)
        elif code != TOPIC_ALREADY_EXISTS:
            errors.append(f"{name}: error {code} {message or ''}".strip())
    if errors:
        raise RuntimeError("CreateTopics failed: " + "; ".join(errors))
    return created


async def _wait_for_metadata(
    admin: AIOKafkaAdminClient, partitions: dict[str, int], timeout: float
) -> None:
    deadline = time.monotonic() + timeout
    names = list(partitions)
    while True:
        described = await admin.describe_topics(names)
        ready = {
            t["topic"]
            for t in described
            if t.get("error_code", 0) == 0 and len(t.get("partitions", ())) >= 1
        }
        if ready.issuperset(names):
            return
        if time.monotonic() > deadline:
            raise RuntimeError(
                f"topics not in metadata after {timeout}s: {sorted(set(names) - ready)}"
            )
        await asyncio.sleep(0.1)


async def ping(broker: KafkaBroker, timeout: float = 2.0) -> None:
    """Readiness check: the broker's connection answers within ``timeout`` seconds, and
    none of the broker's subscribers saw broker data loss (:mod:`clarion_kit.continuity`).

    Raises:
        RuntimeError: the broker is not connected or did not answer.
        clarion_kit.continuity.BrokerDataLossError: a subscriber detected data loss
            (until the process restarts or ``broker.clarion_consumer_guard.monitor.clear()``).
    """
    guard = getattr(broker, "clarion_consumer_guard", None)
    if guard is not None:
        await guard.monitor.check()
    if not await broker.ping(timeout):
        raise RuntimeError("Kafka broker unreachable")
