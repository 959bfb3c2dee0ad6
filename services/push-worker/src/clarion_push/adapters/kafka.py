"""Records push-worker writes to Kafka: delivery status, subscription tombstones, DLQ."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol

from faststream.kafka import KafkaBroker

from clarion_contracts.registry import PUSH_REQUESTS, PUSH_SUBSCRIPTIONS
from clarion_contracts.v1 import DeliveryStatus, PushRequest, PushSubscription
from clarion_kit.worker import DeliveryEvents
from clarion_push.settings import PushSettings

SUBSCRIPTION_HEADER = "x-clarion-subscription-id"
"""DLQ header naming the subscription whose retries ran out."""


class EventSink(Protocol):
    """Where the dispatcher reports outcomes (Kafka in production, a list in unit tests)."""

    async def status(self, status: DeliveryStatus) -> None:
        """Publish one delivery outcome."""

    async def statuses(self, statuses: Sequence[DeliveryStatus]) -> None:
        """Publish many delivery outcomes; return once all were acknowledged."""

    async def tombstone(self, subscription: PushSubscription) -> None:
        """Publish ``subscription`` with ``active=False``: it is gone."""

    async def dead_letter(
        self, request: PushRequest, *, error: str, error_type: str, attempts: int, extra: str
    ) -> None:
        """Publish a request that kept failing to the DLQ of the push-requests topic."""


class KafkaEventSink(DeliveryEvents):
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
        super().__init__(broker, settings, PUSH_REQUESTS)
        self._subs_topic = settings.topic(PUSH_SUBSCRIPTIONS)

    async def tombstone(self, subscription: PushSubscription) -> None:
        """Publish the inactive subscription to ``clarion.push-subscriptions.v1``."""
        await self.publish(
            subscription.to_bytes(), topic=self._subs_topic, key=subscription.subscription_id
        )

    async def dead_letter(
        self, request: PushRequest, *, error: str, error_type: str, attempts: int, extra: str
    ) -> None:
        """Publish ``request`` to ``clarion.push-requests.v1.dlq``."""
        await self.publish_dead_letter(
            request,
            error=error,
            error_type=error_type,
            attempts=attempts,
            extra_headers={SUBSCRIPTION_HEADER: extra},
        )
