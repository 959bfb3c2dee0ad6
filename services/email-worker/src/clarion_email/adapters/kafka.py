"""Records email-worker writes to Kafka: delivery status and dead letters."""

from __future__ import annotations

from typing import Protocol

from faststream.kafka import KafkaBroker

from clarion_contracts.registry import EMAIL_REQUESTS
from clarion_contracts.v1 import DeliveryStatus, EmailRequest
from clarion_email.settings import EmailSettings
from clarion_kit.worker import DeliveryEvents


class EventSink(Protocol):
    """Where outcomes go (Kafka in production, a list in unit tests)."""

    async def status(self, status: DeliveryStatus) -> None:
        """Publish one delivery outcome."""

    async def dead_letter(
        self, request: EmailRequest, *, error: str, error_type: str, attempts: int
    ) -> None:
        """Publish a request whose retries ran out to the email-requests DLQ."""


class KafkaEventSink(DeliveryEvents):
    """:class:`EventSink` over a FastStream broker (acks=all, keys per the registry).

    Statuses go to ``clarion.delivery-status.v1`` keyed by ``notification_id``.
    """

    def __init__(self, broker: KafkaBroker, settings: EmailSettings) -> None:
        super().__init__(broker, settings, EMAIL_REQUESTS)

    async def dead_letter(
        self, request: EmailRequest, *, error: str, error_type: str, attempts: int
    ) -> None:
        """Publish to ``clarion.email-requests.v1.dlq`` with the kit's DLQ headers."""
        await self.publish_dead_letter(
            request, error=error, error_type=error_type, attempts=attempts
        )
