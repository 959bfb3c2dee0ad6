"""Bounded retries with exponential backoff, then the dead-letter topic (DLQ).

A record whose handler keeps failing is not dropped and does not block its
partition forever: it is retried ``max_attempts`` times in place (exponential
backoff with jitter, tenacity), then the ORIGINAL record (value bytes, key and
headers) is produced to ``<topic>.dlq`` with these headers added:

=============================== ================================================
``x-clarion-error``             exception text, truncated to 1000 characters
``x-clarion-error-type``        exception class name, e.g. ``ValidationError``
``x-clarion-original-topic``    the topic the record was consumed from
``x-clarion-original-partition`` its partition (decimal)
``x-clarion-original-offset``   its offset (decimal)
``x-clarion-attempts``          how many times the handler ran (decimal)
``x-clarion-failed-at``         RFC 3339 UTC time of the last failure
=============================== ================================================

Only then is the offset committed: the broker acknowledged the DLQ record, so
nothing is lost (at-least-once). Processing then ends with FastStream's
``AckMessage``, so a ``@broker.publisher`` on the handler publishes nothing.
If the DLQ produce itself fails the error propagates, the offset is not
committed and the record is consumed again.

A poison record, one that cannot be parsed into the handler's contract
(``pydantic.ValidationError``, invalid JSON or UTF-8) or whose handler raises
:class:`PermanentError`, goes to the DLQ at once: retrying cannot fix it.

An outage of the service's own infrastructure (:func:`is_outage`: Redis,
PostgreSQL or the Kafka broker unreachable, restarting or still loading) says
nothing about the record: it is retried with capped backoff for as long as the
outage lasts, does not use up ``max_attempts`` and never sends the record to the
DLQ. The partition waits meanwhile, and readiness (which checks the same servers)
is false, so the record is handled once the server is back.

Every DLQ'd record increments ``clarion_<service>_dlq_messages_total{topic,
error_type}``; every retry increments ``clarion_<service>_handler_retries_total
{topic,error_type}``.

Usage (done for you by :func:`clarion_kit.kafka.create_broker`)::

    dlq = DeadLetterMiddleware(service="aggregator", policy=RetryPolicy(max_attempts=3))
    broker = KafkaBroker(servers, middlewares=[dlq], ack_policy=AckPolicy.NACK_ON_ERROR)
    dlq.bind(broker)

    @broker.subscriber("clarion.domain-events.v1", group_id="aggregator")
    async def handle(event: DomainEvent) -> None:
        ...  # raise to retry; raise PermanentError to dead-letter at once

Code consuming with aiokafka directly can use :func:`retry_call` and
:func:`dead_letter` for the same behaviour.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from faststream._internal.middlewares import BaseMiddleware
from faststream.exceptions import AckMessage, HandlerException
from pydantic import ValidationError
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    wait_exponential_jitter,
)

from clarion_contracts.registry import DLQ_SUFFIX
from clarion_kit.logging import get_logger
from clarion_kit.metrics import get_or_create_counter, metric_name

if TYPE_CHECKING:
    from types import TracebackType

    from faststream._internal.context.repository import ContextRepo
    from faststream.message import StreamMessage
    from prometheus_client import CollectorRegistry

    from clarion_kit.settings import ServiceSettings

T = TypeVar("T")

HEADER_ERROR = "x-clarion-error"
HEADER_ERROR_TYPE = "x-clarion-error-type"
HEADER_ORIGINAL_TOPIC = "x-clarion-original-topic"
HEADER_ORIGINAL_PARTITION = "x-clarion-original-partition"
HEADER_ORIGINAL_OFFSET = "x-clarion-original-offset"
HEADER_ATTEMPTS = "x-clarion-attempts"
HEADER_FAILED_AT = "x-clarion-failed-at"
DLQ_HEADERS = (
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_ORIGINAL_TOPIC,
    HEADER_ORIGINAL_PARTITION,
    HEADER_ORIGINAL_OFFSET,
    HEADER_ATTEMPTS,
    HEADER_FAILED_AT,
)
MAX_ERROR_CHARS = 1000

_log = get_logger(__name__)


class PermanentError(Exception):
    """Raise from a handler when retrying cannot help: the record is dead-lettered at once."""


class RecordLike(Protocol):
    """The parts of a Kafka record (aiokafka ``ConsumerRecord``) a DLQ entry needs."""

    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how patiently a handler is retried before dead-lettering.

    Attributes:
        max_attempts: total handler runs including the first (>= 1).
        initial_backoff_seconds: wait before the 2nd attempt; doubles each time.
        max_backoff_seconds: cap of one wait.
        jitter_seconds: random extra wait in [0, jitter) so replicas do not retry in step.
    """

    max_attempts: int = 3
    initial_backoff_seconds: float = 0.1
    max_backoff_seconds: float = 5.0
    jitter_seconds: float = 0.05

    def __post_init__(self) -> None:
        if self.max_attempts < 1:
            raise ValueError("max_attempts must be >= 1")

    @classmethod
    def from_settings(cls, settings: ServiceSettings) -> RetryPolicy:
        """The policy given by ``retry_max_attempts`` and ``retry_*_backoff_seconds``."""
        return cls(
            max_attempts=settings.retry_max_attempts,
            initial_backoff_seconds=settings.retry_initial_backoff_seconds,
            max_backoff_seconds=settings.retry_max_backoff_seconds,
        )


def is_poison(exc: BaseException) -> bool:
    """True if ``exc`` means the record itself is bad, so retrying is pointless."""
    return isinstance(
        exc, ValidationError | json.JSONDecodeError | UnicodeDecodeError | PermanentError
    )


def _outage_types() -> tuple[type[BaseException], ...]:
    from aiokafka.errors import KafkaConnectionError, KafkaTimeoutError, NodeNotReadyError
    from asyncpg.exceptions import CannotConnectNowError, PostgresConnectionError
    from redis.exceptions import BusyLoadingError, TryAgainError
    from redis.exceptions import ConnectionError as RedisConnectionError
    from redis.exceptions import TimeoutError as RedisTimeoutError

    return (
        RedisConnectionError,
        RedisTimeoutError,
        BusyLoadingError,
        TryAgainError,
        PostgresConnectionError,
        CannotConnectNowError,
        KafkaConnectionError,
        KafkaTimeoutError,
        NodeNotReadyError,
        ConnectionError,
    )


_OUTAGE_TYPES: tuple[type[BaseException], ...] | None = None


def is_outage(exc: BaseException) -> bool:
    """True if ``exc`` means a server the handler depends on is unreachable, not that
    the record is bad: connection refused or reset, a server still loading its data
    after a restart (Redis ``LOADING``), a PostgreSQL connection lost or refused
    (also when wrapped by SQLAlchemy, whose ``connection_invalidated`` flag says so),
    the Kafka broker unreachable or timing out.
    """
    global _OUTAGE_TYPES
    if _OUTAGE_TYPES is None:
        _OUTAGE_TYPES = _outage_types()
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, _OUTAGE_TYPES):
            return True
        if getattr(current, "connection_invalidated", False):
            return True
        orig = getattr(current, "orig", None)  # SQLAlchemy's DBAPIError wraps the driver's
        current = orig if isinstance(orig, BaseException) else current.__cause__
    return False


def _retryable(exc: BaseException) -> bool:
    return (
        isinstance(exc, Exception) and not isinstance(exc, HandlerException) and not is_poison(exc)
    )


class AttemptCounter:
    """How many times :func:`retry_call` has run its function so far (``count``)."""

    def __init__(self) -> None:
        self.count = 0


async def retry_call(
    func: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    *,
    on_retry: Callable[[BaseException, int], None] | None = None,
    attempts: AttemptCounter | None = None,
) -> T:
    """Run ``func`` up to ``policy.max_attempts`` times with exponential backoff.

    Poison errors (:func:`is_poison`), FastStream ack/nack control exceptions and
    cancellation are not retried. Failures that are outages (:func:`is_outage`) are
    retried until the server is back and do not count towards ``max_attempts``.
    ``on_retry(exc, attempt)`` runs before each wait; ``attempts``, when given, holds
    the number of runs afterwards (also on failure).

    Raises:
        The last exception of ``func`` once attempts are exhausted (or at once if
        not retryable).
    """
    counter = attempts or AttemptCounter()

    def before_sleep(state: RetryCallState) -> None:
        if on_retry is not None and state.outcome is not None:
            exc = state.outcome.exception()
            if exc is not None:
                on_retry(exc, state.attempt_number)

    failures = 0

    def stop(state: RetryCallState) -> bool:
        nonlocal failures
        exc = state.outcome.exception() if state.outcome is not None else None
        if exc is not None and is_outage(exc):
            return False
        failures += 1
        return failures >= policy.max_attempts

    retrying = AsyncRetrying(
        stop=stop,
        wait=wait_exponential_jitter(
            multiplier=policy.initial_backoff_seconds,
            max=policy.max_backoff_seconds,
            jitter=policy.jitter_seconds,
        ),
        retry=retry_if_exception(_retryable),
        before_sleep=before_sleep,
        reraise=True,
    )
    async for attempt in retrying:
        with attempt:
            counter.count = attempt.retry_state.attempt_number
            return await func()
    raise AssertionError("unreachable: tenacity reraises the last error")  # pragma: no cover


def _header_items(headers: Any) -> Iterable[tuple[str, Any]]:
    if not headers:
        return ()
    if isinstance(headers, Mapping):
        return headers.items()
    return list(headers)


def dlq_headers(
    record: RecordLike, error: BaseException, attempts: int, *, failed_at: datetime | None = None
) -> dict[str, str]:
    """The ``x-clarion-*`` headers describing why ``record`` was dead-lettered."""
    text = str(error) or type(error).__name__
    if len(text) > MAX_ERROR_CHARS:
        text = text[: MAX_ERROR_CHARS - 1] + "…"
    return {
        HEADER_ERROR: text,
        HEADER_ERROR_TYPE: type(error).__name__,
        HEADER_ORIGINAL_TOPIC: record.topic,
        HEADER_ORIGINAL_PARTITION: str(record.partition),
        HEADER_ORIGINAL_OFFSET: str(record.offset),
        HEADER_ATTEMPTS: str(attempts),
        HEADER_FAILED_AT: (failed_at or datetime.now(UTC)).isoformat(),
    }


def dead_letter_headers(
    record: RecordLike, error: BaseException, attempts: int
) -> list[tuple[str, bytes]]:
    """The DLQ record's headers: the original ones (minus stale ``x-clarion-*``) + new ones."""
    out: list[tuple[str, bytes]] = [
        (k, v if isinstance(v, bytes) else b"" if v is None else str(v).encode())
        for k, v in _header_items(record.headers)
        if k not in DLQ_HEADERS
    ]
    out.extend((k, v.encode()) for k, v in dlq_headers(record, error, attempts).items())
    return out


class RawProducer(Protocol):
    """What :func:`dead_letter` needs: aiokafka ``AIOKafkaProducer.send_and_wait``."""

    async def send_and_wait(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> Any:
        """Produce one record and wait for the broker's acknowledgement."""


async def dead_letter(
    producer: RawProducer, record: RecordLike, error: BaseException, attempts: int
) -> None:
    """Produce ``record`` unchanged (value, key, headers) to ``<record.topic>.dlq``.

    Returns once the broker acknowledged it (``acks`` as configured on ``producer``).

    Raises:
        aiokafka.errors.KafkaError: the DLQ record could not be produced.
    """
    await producer.send_and_wait(
        record.topic + DLQ_SUFFIX,
        value=record.value,
        key=record.key,
        headers=dead_letter_headers(record, error, attempts),
    )


class DeadLetterMiddleware:
    """FastStream middleware factory: retries each handler, then dead-letters the record.

    Register it in ``KafkaBroker(middlewares=[...])`` after the telemetry and
    Prometheus middlewares (so it runs innermost, inside the consume span) and
    :meth:`bind` it to the broker, whose producer (acks=all) writes DLQ records.
    Subscribers must not use ``AckPolicy.ACK_FIRST``: the offset has to be
    committed after the handler or the DLQ produce, which ``NACK_ON_ERROR``
    (the :func:`clarion_kit.kafka.create_broker` default) does.

    Args:
        service: service name for metric names (``clarion_<service>_dlq_messages_total``).
        policy: the retry policy.
        registry: Prometheus registry of the counters (default: the process one).
    """

    def __init__(
        self,
        service: str,
        policy: RetryPolicy | None = None,
        *,
        registry: CollectorRegistry | None = None,
    ) -> None:
        self.service = service
        self.policy = policy or RetryPolicy()
        self.dlq_total = get_or_create_counter(
            metric_name(service, "dlq_messages_total"),
            "Records sent to a dead-letter topic, by source topic and error type",
            ("topic", "error_type"),
            registry,
        )
        self.retries_total = get_or_create_counter(
            metric_name(service, "handler_retries_total"),
            "Handler retries after a failure, by topic and error type",
            ("topic", "error_type"),
            registry,
        )
        self._producer: RawProducer | None = None
        self._broker: Any = None

    def bind(self, broker: Any) -> None:
        """Use ``broker``'s Kafka producer (available once the broker is connected)."""
        self._broker = broker

    def use_producer(self, producer: RawProducer) -> None:
        """Use this aiokafka producer for DLQ records instead of the broker's."""
        self._producer = producer

    def _raw_producer(self) -> RawProducer | None:
        if self._producer is not None:
            return self._producer
        if self._broker is None:
            raise RuntimeError("DeadLetterMiddleware is not bound to a broker")
        # FastStream 0.7: broker.config.producer (AioKafkaFastProducerImpl)._producer
        # (RealProducer).producer is the connected aiokafka producer. Test brokers have none.
        fast = getattr(getattr(self._broker, "config", None), "producer", None)
        state = getattr(fast, "_producer", None)
        inner = getattr(state, "producer", None)
        if inner is not None and hasattr(inner, "send_and_wait"):
            result: RawProducer = inner
            return result
        return None

    async def send(self, record: RecordLike, error: BaseException, attempts: int) -> None:
        """Dead-letter ``record`` and count it.

        Raises:
            aiokafka.errors.KafkaError / RuntimeError: the DLQ record was not produced.
        """
        producer = self._raw_producer()
        if producer is not None:
            await dead_letter(producer, record, error, attempts)
        else:
            # No raw producer (FastStream's TestKafkaBroker): publish through the broker,
            # which keeps value and key bytes but re-encodes headers as text.
            headers = {
                k: v.decode(errors="replace")
                for k, v in dead_letter_headers(record, error, attempts)
            }
            await self._broker.publish(
                record.value, record.topic + DLQ_SUFFIX, key=record.key, headers=headers
            )
        error_type = type(error).__name__
        self.dlq_total.labels(record.topic, error_type).inc()
        _log.error(
            "record dead-lettered",
            topic=record.topic,
            partition=record.partition,
            offset=record.offset,
            attempts=attempts,
            error_type=error_type,
            error=str(error)[:MAX_ERROR_CHARS],
        )

    def __call__(self, msg: Any, /, *, context: ContextRepo) -> _DeadLetterScope:
        return _DeadLetterScope(msg, context=context, owner=self)


class _DeadLetterScope(BaseMiddleware[Any, Any]):
    def __init__(self, msg: Any, /, *, context: ContextRepo, owner: DeadLetterMiddleware) -> None:
        super().__init__(msg, context=context)
        self.owner = owner
        self.handled = False

    def _record(self) -> RecordLike | None:
        raw = self.msg
        if isinstance(raw, tuple):  # batch subscribers: not dead-lettered per record
            return None
        return raw if hasattr(raw, "topic") and hasattr(raw, "offset") else None

    async def consume_scope(self, call_next: Any, msg: StreamMessage[Any]) -> Any:
        record = self._record()
        if record is None:
            return await call_next(msg)
        self.handled = True
        attempts = AttemptCounter()

        def on_retry(exc: BaseException, attempt: int) -> None:
            self.owner.retries_total.labels(record.topic, type(exc).__name__).inc()
            _log.warning(
                "handler failed, retrying",
                topic=record.topic,
                partition=record.partition,
                offset=record.offset,
                attempt=attempt,
                error_type=type(exc).__name__,
                error=str(exc)[:200],
            )

        try:
            return await retry_call(
                lambda: call_next(msg), self.owner.policy, on_retry=on_retry, attempts=attempts
            )
        except (HandlerException, asyncio.CancelledError):
            raise
        except Exception as exc:
            await self.owner.send(record, exc, attempts.count)
            # Commit now (also under AckPolicy.MANUAL) and end processing the FastStream
            # way: AckMessage stops the result from being published to @publisher
            # topics, since the handler produced no result.
            await msg.ack()
            raise AckMessage from exc

    async def after_processed(
        self,
        exc_type: type[BaseException] | None = None,
        exc_val: BaseException | None = None,
        exc_tb: TracebackType | None = None,
    ) -> bool | None:
        # An error outside consume_scope happened while parsing the raw record (before
        # any handler ran): that record is poison, dead-letter it without retrying.
        if self.handled or exc_val is None or not isinstance(exc_val, Exception):
            return False
        if isinstance(exc_val, HandlerException):
            return False
        record = self._record()
        if record is None:
            return False
        await self.owner.send(record, exc_val, 0)
        return True
