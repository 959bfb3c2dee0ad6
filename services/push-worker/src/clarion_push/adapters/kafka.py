"""Records push-worker writes to Kafka: delivery status, subscription tombstones, DLQ."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Protocol

from faststream.kafka import KafkaBroker

from clarion_contracts.registry import DELIVERY_STATUS, PUSH_REQUESTS, PUSH_SUBSCRIPTIONS
from clarion_contracts.v1 import DeliveryStatus, PushRequest, PushSubscription
from clarion_kit.retry import (
    HEADER_ATTEMPTS,
    HEADER_ERROR,
    HEADER_ERROR_TYPE,
    HEADER_FAILED_AT,
    HEADER_ORIGINAL_TOPIC,
)
from clarion_push.settings import PushSettings


class EventSink(Protocol):
    """Where the dispatcher reports outcomes (Kafka in production, a list in unit tests)."""

    async def status(self, status: DeliveryStatus) -> None:
        """Publish one delivery outcome."""

    async def tombstone(self, subscription: PushSubscription) -> None:
        """Publish ``subscription`` with ``active=False``: it is gone."""

    async def dead_letter(
        self, request: PushRequest, *, error: str, error_type: str, attempts: int, extra: str
    ) -> None:
        """Publish a request that kept failing to the DLQ of the push-requests topic."""


class KafkaEventSink:
    """:class:`EventSink` over a FastStream Kafka broker.

    Status records are keyed by ``notification_id``, tombstones by
    ``subscription_id`` (the keys in the topic registry). DLQ records carry the
    original request and the DLQ headers of :mod:`clarion_kit.retry`
    (``x-clarion-error``, ``x-clarion-error-type``, ``x-clarion-original-topic``,
    ``x-clarion-attempts``, ``x-clarion-failed-at``) plus ``x-clarion-subscription-id``:
    the subscription whose retries ran out (a replayed request skips the others,
    already marked delivered).
    """

    def __init__(self, broker: KafkaBroker, settings: PushSettings) -> None:
        self._broker = broker
        self._status_topic = settings.topic(DELIVERY_STATUS)
        self._subs_topic = settings.topic(PUSH_SUBSCRIPTIONS)
        self._requests_topic = settings.topic(PUSH_REQUESTS)
        self._dlq = settings.dlq(PUSH_REQUESTS)

    async def status(self, status: DeliveryStatus) -> None:
        """Publish to ``clarion.delivery-status.v1`` (acks=all)."""
        await self._broker.publish(
            status.to_bytes(),
            topic=self._status_topic,
            key=status.notification_id.encode(),
            headers={"content-type": "application/json"},
        )

    async def tombstone(self, subscription: PushSubscription) -> None:
        """Publish the inactive subscription to ``clarion.push-subscriptions.v1``."""
        await self._broker.publish(
            subscription.to_bytes(),
            topic=self._subs_topic,
            key=subscription.subscription_id.encode(),
            headers={"content-type": "application/json"},
        )

    async def dead_letter(
        self, request: PushRequest, *, error: str, error_type: str, attempts: int, extra: str
    ) -> None:
        """Publish ``request`` to ``clarion.push-requests.v1.dlq``."""
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
                "x-clarion-subscription-id": extra,
            },
        )
