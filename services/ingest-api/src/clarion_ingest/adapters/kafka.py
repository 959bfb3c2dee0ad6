"""Kafka side of ingest-api: acknowledged publishing and the broker connection.

The outbox relay (:mod:`clarion_ingest.adapters.relay`) produces through
:class:`EventPublisher` and counts a record as relayed only once the broker
acknowledged it (``acks=all``, set by the kit's broker factory); anything else (not
connected, a send error, no acknowledgement within ``send_timeout_seconds``)
raises :class:`BrokerUnavailableError` and the relay retries.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any
from uuid import UUID

from faststream.kafka import KafkaBroker

from clarion_kit.kafka import OutgoingRecord, ping, raw_producer, send_batches
from clarion_kit.logging import get_logger

_log = get_logger(__name__)


def _headers(carrier: Mapping[str, str]) -> list[tuple[str, bytes]]:
    return [("content-type", b"application/json"), *((k, v.encode()) for k, v in carrier.items())]


class BrokerUnavailableError(Exception):
    """The broker did not acknowledge the records in time (or is not connected)."""


@dataclass(frozen=True)
class Record:
    """One Kafka record to produce: topic, key and value (UTF-8 JSON bytes).

    ``headers`` are string headers sent with it (the W3C trace context captured
    when the record was stored); ``event_id`` is set for domain events and makes
    the record idempotent in the outbox (unique with ``key``).
    """

    topic: str
    key: bytes | None
    value: bytes
    headers: Mapping[str, str] = field(default_factory=dict)
    event_id: UUID | None = None


class BrokerConnection:
    """Keeps a FastStream broker connected: first attempt at start-up, then retries.

    Once the producer is connected (``connected``) the consumers are started in
    the background (``consuming`` once they joined their groups).

    The service starts even when Kafka is down (it answers 503 for writes and
    ``/readyz`` reports it); a background task keeps trying with capped
    exponential backoff until the broker is connected.

    Args:
        broker: the broker (subscribers already registered).
        attempt_timeout: seconds one connection attempt may take.
        max_backoff: longest pause between attempts, in seconds.
        before_start: awaited before each attempt (topic creation).
    """

    def __init__(
        self,
        broker: KafkaBroker,
        attempt_timeout: float = 10.0,
        max_backoff: float = 5.0,
        before_start: Callable[[], Awaitable[object]] | None = None,
    ) -> None:
        self.broker = broker
        self.before_start = before_start
        self.attempt_timeout = attempt_timeout
        self.max_backoff = max_backoff
        self.connected = False
        self.consuming = False
        self._task: asyncio.Task[None] | None = None
        self._consumers: asyncio.Task[None] | None = None

    async def _attempt(self) -> bool:
        try:
            async with asyncio.timeout(self.attempt_timeout):
                if self.before_start is not None:
                    await self.before_start()
                await self.broker.connect()
        except Exception as exc:
            _log.warning("kafka connection failed", error=f"{type(exc).__name__}: {exc}")
            with contextlib.suppress(Exception):
                await self.broker.stop()
            return False
        self.connected = True
        _log.info("kafka connected")
        # Joining consumer groups takes seconds; the producer is usable meanwhile.
        self._consumers = asyncio.create_task(self._start_consumers(), name="kafka-consumers")
        return True

    async def _start_consumers(self) -> None:
        try:
            await self.broker.start()
        except Exception as exc:
            _log.error("kafka consumers failed to start", error=f"{type(exc).__name__}: {exc}")
            raise
        self.consuming = True

    async def _retry_loop(self) -> None:
        delay = 0.25
        while not await self._attempt():
            await asyncio.sleep(delay)
            delay = min(delay * 2, self.max_backoff)

    async def start(self) -> None:
        """Try to connect once now; on failure keep trying in the background."""
        if not await self._attempt():
            self._task = asyncio.create_task(self._retry_loop(), name="kafka-connect")

    async def check(self) -> None:
        """Readiness check: connected, the cluster answers, no broker data loss seen.

        Raises:
            RuntimeError: not connected (yet) or the broker did not answer.
            clarion_kit.continuity.BrokerDataLossError: a consumer detected broker data
                loss (:func:`clarion_kit.kafka.ping`).
        """
        if not self.connected:
            raise RuntimeError("not connected to Kafka")
        if not self.consuming:
            raise RuntimeError("Kafka consumers are not running yet")
        await ping(self.broker, 2.0)

    async def stop(self) -> None:
        """Stop retrying and close the broker (consumers commit what they finished)."""
        for task in (self._task, self._consumers):
            if task is not None and not task.done():
                task.cancel()
            if task is not None:
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task
        self._task = self._consumers = None
        with contextlib.suppress(Exception):
            await self.broker.stop()
        self.connected = False
        self.consuming = False


class EventPublisher:
    """Produces records and waits for the broker's acknowledgement of every one.

    Args:
        broker: a broker created by ``clarion_kit.kafka.create_broker`` (``acks=all``).
        connection: tells whether the broker is connected.
        timeout: seconds to wait for all acknowledgements (bounded send).
    """

    def __init__(self, broker: KafkaBroker, connection: BrokerConnection, timeout: float) -> None:
        self.broker = broker
        self.connection = connection
        self.timeout = timeout

    async def send(self, records: Sequence[Record]) -> None:
        """Produce ``records`` concurrently and return once all are acknowledged.

        Records go to the aiokafka producer as record batches
        (:func:`clarion_kit.kafka.send_batches`), each with its stored headers plus
        ``content-type``; records with the same key keep their order (same partition,
        one producer). On failure some records may have been written: the relay sends
        them again and consumers deduplicate (event ids and versions).

        Raises:
            BrokerUnavailableError: not connected, a send failed, or no acknowledgement
                within ``timeout`` seconds.
        """
        if not records:
            return
        if not self.connection.connected:
            raise BrokerUnavailableError("the broker is not connected")
        futures: list[Any] = []
        producer = raw_producer(self.broker)
        try:
            async with asyncio.timeout(self.timeout):
                if producer is not None:
                    futures = await send_batches(
                        producer,
                        (
                            OutgoingRecord(r.topic, r.key, r.value, _headers(r.headers))
                            for r in records
                        ),
                    )
                else:
                    for record in records:
                        futures.append(
                            await self.broker.publish(
                                record.value,
                                record.topic,
                                key=record.key,
                                headers={"content-type": "application/json", **record.headers},
                                no_confirm=True,
                            )
                        )
                await asyncio.gather(*futures)
        except TimeoutError as exc:
            for future in futures:
                if isinstance(future, asyncio.Future):
                    future.cancel()
            raise BrokerUnavailableError(
                f"no acknowledgement from the broker within {self.timeout}s"
            ) from exc
        except Exception as exc:
            raise BrokerUnavailableError(f"{type(exc).__name__}: {exc}") from exc
