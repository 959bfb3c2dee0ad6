"""Records email-worker writes to Kafka: delivery status and dead letters."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from faststream.kafka import KafkaBroker

from clarion_contracts.registry import DELIVERY_STATUS, EMAIL_REQUESTS
from clarion_contracts.v1 import DeliveryStatus, EmailRequest
from clarion_email.settings import EmailSettings
from clarion_kit.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_FAILED_AT,
    HEADER_ORIGINAL_TOPIC,
)


class EventSink(Protocol):
    """Where outcomes go (Kafka in production, a list in unit tests)."""

    async def status(self, status: DeliveryStatus) -> None:
        """Publish one delivery outcome."""

    async def dead_letter(
        self, request: EmailRequest, *, error: str, error_type: str, attempts: int
    ) -> None:
        """Publish a request whose retries ran out to the email-requests DLQ."""


class KafkaEventSink:
    """:class:`EventSink` over a FastStream broker (acks=all, keys per the registry)."""

    def __init__(self, broker: KafkaBroker, settings: EmailSettings) -> None:
        self._broker = broker
        self._status_topic = settings.topic(DELIVERY_STATUS)
        self._requests_topic = settings.topic(EMAIL_REQUESTS)
        self._dlq = settings.dlq(EMAIL_REQUESTS)

    async def status(self, status: DeliveryStatus) -> None:
        """Publish to ``clarion.delivery-status.v1`` keyed by ``notification_id``."""
        await self._broker.publish(
            status.to_bytes(),
            topic=self._status_topic,
            key=status.notification_id.encode(),
            headers={"content-type": "application/json"},
        )

    async def dead_letter(
        self, request: EmailRequest, *, error: str, error_type: str, attempts: int
    ) -> None:
        """Publish to ``clarion.email-requests.v1.dlq`` with the kit's DLQ headers."""
        await self._broker.publish(
            request.to_bytes(),
            topic=self._dlq,
            key=request.recipient_id.encode(),
            headers={
                "content-type": "application/json",
                HEADER_ERROR: error[:1000],
                HEADER_ERROR_TYPE: error_type,
                HEADER_ORIGINAL_TOPIC: self._requests_topic,
                HEADER_ATTEMPTS: str(attempts),
                HEADER_FAILED_AT: datetime.now(UTC).isoformat(),
            },
        )
