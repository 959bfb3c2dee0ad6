"""The frame shared by Clarion's channel workers (push-worker, email-worker).

A channel worker is a FastStream application that

* materialises compacted state topics (subscriptions, profiles...) into Redis
  (:func:`materialise`: an empty value deletes the key's entry);
* handles delivery requests, deferring the ones that must wait into a Redis
  schedule run by a :class:`~clarion_kit.scheduling.SchedulePoller`;
* publishes delivery statuses and dead-letters requests whose retries ran out
  (:class:`DeliveryEvents`);
* serves ``/healthz``, ``/readyz`` (checks ``redis`` and ``kafka``) and
  ``/metrics`` on ``settings.http_host:settings.http_port``.

:class:`ChannelWorker` holds that life cycle; a service subclasses it with what
is its own (the dispatcher, its clients, its poller) and wires its handlers::

    worker = EmailWorker(settings, create_broker(settings))
    worker.subscribe(USER_PROFILES, worker.on_profile, group_suffix="profiles")
    worker.subscribe(EMAIL_REQUESTS, worker.on_request)
    app = worker.application("email_worker")
"""

from __future__ import annotations

import asyncio
from abc import ABC, abstractmethod
from collections.abc import Awaitable, Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar, Generic, Protocol, TypeVar

import redis.asyncio as aioredis
from faststream import FastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.message import KafkaMessage

from clarion_contracts.registry import DELIVERY_STATUS, TopicSpec
from clarion_contracts.v1 import DeliveryStatus, utc_now
from clarion_kit.health import HealthChecks, HealthServer, health_app
from clarion_kit.kafka import (
    OutgoingRecord,
    ensure_topics,
    ping,
    raw_producer,
    raw_records,
    send_batches,
    subscriber_options,
)
from clarion_kit.redis import create_redis
from clarion_kit.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_FAILED_AT,
    HEADER_ORIGINAL_TOPIC,
)
from clarion_kit.scheduling import SchedulePoller
from clarion_kit.settings import ServiceSettings

SettingsT = TypeVar("SettingsT", bound=ServiceSettings)

_JSON_HEADERS: tuple[tuple[str, bytes], ...] = (("content-type", b"application/json"),)

MAX_DEAD_LETTER_ERROR_CHARS = 1000
"""Longest ``x-clarion-error`` text :meth:`DeliveryEvents.publish_dead_letter` writes."""


async def materialise(
    msg: KafkaMessage,
    apply: Callable[[bytes], Awaitable[object]],
    delete: Callable[[str], Awaitable[object]],
) -> None:
    """Apply one record of a compacted state topic to the worker's copy of that state.

    A record with an empty value is a tombstone: ``delete(key)`` forgets the entry
    of the record's key (UTF-8 text); a tombstone without a key changes nothing.
    Any other record goes to ``apply(value)``, which parses and stores it.

    Raises:
        TypeError: ``msg`` is a batch (a subscriber with ``batch=True``), not one record.
        Exception: whatever ``apply`` or ``delete`` raise, e.g.
            ``pydantic.ValidationError`` for a value that is not the topic's contract
            (the kit's DLQ middleware dead-letters that record at once).
    """
    raw = msg.raw_message
    if isinstance(raw, tuple):
        raise TypeError("materialise takes one record, not a batch")
    if not msg.body:
        if raw.key:
            await delete(raw.key.decode())
        return
    await apply(msg.body)


class DeadLetterable(Protocol):
    """A request :meth:`DeliveryEvents.publish_dead_letter` can publish."""

    @property
    def recipient_id(self) -> str:
        """The record key on the requests topic and its DLQ."""

    def to_bytes(self) -> bytes:
        """The record value (the contract's JSON)."""


class DeliveryEvents:
    """Publishes what a channel worker reports: delivery statuses and dead letters.

    Records go through the FastStream broker (``acks="all"``) with
    ``content-type: application/json``. Statuses go to ``clarion.delivery-status.v1``
    keyed by ``notification_id``; requests whose retries ran out go to the DLQ of
    the requests topic, keyed by ``recipient_id``, with the DLQ headers of
    :mod:`clarion_kit.retry`.

    Args:
        broker: the worker's broker.
        settings: gives the topic names (``topic_prefix``).
        requests: the spec of the worker's requests topic.
    """

    def __init__(self, broker: KafkaBroker, settings: ServiceSettings, requests: TopicSpec) -> None:
        self._broker = broker
        self._status_topic = settings.topic(DELIVERY_STATUS)
        self._requests_topic = settings.topic(requests)
        self._dlq = settings.dlq(requests)

    async def publish(self, value: bytes, *, topic: str, key: str) -> None:
        """Publish one JSON record ``value`` to ``topic`` under ``key`` (UTF-8 encoded).

        Raises:
            aiokafka.errors.KafkaError: the broker did not take the record.
        """
        await self._broker.publish(
            value, topic=topic, key=key.encode(), headers={"content-type": "application/json"}
        )

    async def status(self, status: DeliveryStatus) -> None:
        """Publish one delivery outcome to ``clarion.delivery-status.v1``.

        Raises:
            aiokafka.errors.KafkaError: the broker did not take the record.
        """
        await self.publish(status.to_bytes(), topic=self._status_topic, key=status.notification_id)

    async def statuses(self, statuses: Sequence[DeliveryStatus]) -> None:
        """Publish many delivery outcomes at once; return once the broker acknowledged all.

        The records go out as record batches through the broker's producer
        (:func:`clarion_kit.kafka.send_batches`), keyed by ``notification_id``: a
        worker reporting a whole consumer batch of outcomes pays one produce round
        trip, not one per record.

        Raises:
            aiokafka.errors.KafkaError: the broker did not take a record.
        """
        producer = raw_producer(self._broker)
        if producer is None:  # FastStream's TestKafkaBroker has no producer of its own
            for status in statuses:
                await self.status(status)
            return
        records = [
            OutgoingRecord(
                self._status_topic,
                status.notification_id.encode(),
                status.to_bytes(),
                _JSON_HEADERS,
            )
            for status in statuses
        ]
        await asyncio.gather(*await send_batches(producer, records))

    async def publish_dead_letter(
        self,
        request: DeadLetterable,
        *,
        error: str,
        error_type: str,
        attempts: int,
        extra_headers: Mapping[str, str] | None = None,
    ) -> None:
        """Publish ``request`` unchanged to ``<requests topic>.dlq``.

        Headers: ``x-clarion-error`` (``error``, cut to
        :data:`MAX_DEAD_LETTER_ERROR_CHARS`), ``x-clarion-error-type``,
        ``x-clarion-original-topic`` (the requests topic), ``x-clarion-attempts``
        (decimal), ``x-clarion-failed-at`` (RFC 3339 UTC, now), then ``extra_headers``.

        Raises:
            aiokafka.errors.KafkaError: the broker did not take the record.
        """
        headers = {
            "content-type": "application/json",
            HEADER_ERROR: error[:MAX_DEAD_LETTER_ERROR_CHARS],
            HEADER_ERROR_TYPE: error_type,
            HEADER_ORIGINAL_TOPIC: self._requests_topic,
            HEADER_ATTEMPTS: str(attempts),
            HEADER_FAILED_AT: datetime.now(UTC).isoformat(),
        }
        headers.update(extra_headers or {})
        await self._broker.publish(
            request.to_bytes(),
            topic=self._dlq,
            key=request.recipient_id.encode(),
            headers=headers,
        )


class ChannelWorker(ABC, Generic[SettingsT]):
    """The life cycle of a channel worker, hooked into FastStream by :meth:`application`.

    * ``on_startup``: connect Redis, :meth:`build` the service's parts, register the
      ``redis`` and ``kafka`` readiness checks, create :attr:`topics` (and DLQs);
    * ``after_startup``: start the :meth:`poller` and the health/metrics server;
    * ``on_shutdown`` (before the broker stops, so running jobs can still publish):
      report not ready, ask the poller to stop, :meth:`drain`, then wait up to
      :attr:`shutdown_timeout` seconds for the poller, cancelling it after that
      (:meth:`poller_overran`); a job cut short is claimed again after its lease;
    * ``after_shutdown``: stop the health server, :meth:`close`, close Redis.

    Args:
        settings: the service settings.
        broker: the Kafka broker the subscribers are registered on.
        clock: the current aware time; tests inject one to move time.
        serve_http: serve the health/metrics endpoints (tests may turn it off).
    """

    topics: ClassVar[tuple[TopicSpec, ...]] = ()
    """Topics the worker reads or writes, created at start-up with their ``.dlq`` twins."""

    def __init__(
        self,
        settings: SettingsT,
        broker: KafkaBroker,
        clock: Callable[[], datetime] = utc_now,
        serve_http: bool = True,
    ) -> None:
        self.settings = settings
        self.broker = broker
        self.clock = clock
        self.serve_http = serve_http
        self.checks = HealthChecks()
        self.redis: aioredis.Redis | None = None
        self.health_server: HealthServer | None = None
        self.schedule_poller: SchedulePoller | None = None

    @abstractmethod
    def build(self, redis: aioredis.Redis) -> None:
        """Create the service's parts on the new Redis client (at start-up).

        Raises:
            Exception: the service cannot run with its settings; start-up fails.
        """

    @abstractmethod
    def poller(self) -> SchedulePoller:
        """The (not yet started) poller of the service's schedule, made after :meth:`build`."""

    @property
    @abstractmethod
    def shutdown_timeout(self) -> float:
        """Seconds :meth:`on_shutdown` waits for the poller's current round (and :meth:`drain`)."""

    async def drain(self) -> None:
        """Wait for work started outside the poller to finish (nothing by default)."""

    async def close(self) -> None:
        """Close the service's own clients at shutdown, before Redis (nothing by default)."""

    def poller_overran(self) -> None:
        """Called when the poller outlived :attr:`shutdown_timeout` and was cancelled.

        Nothing by default; a service raising here fails its shutdown instead.
        """

    def subscribe(
        self,
        spec: TopicSpec,
        handler: Callable[..., Awaitable[Any]],
        *,
        group_suffix: str | None = None,
        batch_max_records: int | None = None,
    ) -> None:
        """Register ``handler`` on ``spec``'s topic, as a consumer off the live path.

        Args:
            spec: the topic.
            handler: the FastStream handler.
            group_suffix: consume in the group ``<service_name>-<group_suffix>``
                instead of the service's own group.
            batch_max_records: hand the handler whole fetches of up to this many
                records, as aiokafka ``ConsumerRecord`` lists (:func:`raw_records`);
                the handler then parses and dead-letters each record itself (the
                kit's DLQ middleware handles single records only).
        """
        group = None if group_suffix is None else f"{self.settings.service_name}-{group_suffix}"
        options = subscriber_options(self.settings, group_id=group, background=True)
        if batch_max_records is not None:
            options.update(batch=True, max_records=batch_max_records, decoder=raw_records)
        self.broker.subscriber(self.settings.topic(spec), **options)(handler)

    def application(self, context_name: str) -> FastStream:
        """A FastStream app over :attr:`broker` running this worker's hooks.

        The worker is the app's context global ``context_name`` (tests read it there).
        """
        app = FastStream(self.broker)
        app.on_startup(self.on_startup)
        app.after_startup(self.after_startup)
        app.on_shutdown(self.on_shutdown)
        app.after_shutdown(self.after_shutdown)
        app.context.set_global(context_name, self)
        return app

    async def on_startup(self) -> None:
        """Connect Redis, build the service's parts, register the checks, create the topics."""
        self.redis = redis = create_redis(self.settings)
        self.build(redis)
        self.checks.add("redis", lambda: redis.ping(), timeout=1.0)
        self.checks.add("kafka", lambda: ping(self.broker), timeout=2.5)
        await ensure_topics(self.settings, specs=self.topics)

    async def after_startup(self) -> None:
        """Start the schedule poller and the health/metrics server."""
        self.schedule_poller = self.poller()
        self.schedule_poller.start()
        if self.serve_http:
            self.health_server = HealthServer(
                health_app(self.checks), self.settings.http_host, self.settings.http_port
            )
            await self.health_server.start()

    async def on_shutdown(self) -> None:
        """Stop polling (the current round may finish) before the broker stops."""
        self.checks.set_ready(False)
        poller = self.schedule_poller
        if poller is not None:
            poller.request_stop()
        await self.drain()
        if poller is not None and not await poller.join(self.shutdown_timeout):
            self.poller_overran()

    async def after_shutdown(self) -> None:
        """Close the health server, the service's clients and Redis."""
        if self.health_server is not None:
            await self.health_server.stop()
        await self.close()
        if self.redis is not None:
            await self.redis.aclose()
