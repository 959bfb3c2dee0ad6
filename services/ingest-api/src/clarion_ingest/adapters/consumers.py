"""Kafka consumers of ingest-api: the inbox read model and per-channel delivery status.

Notifications are consumed in group ``ingest-api`` with the kit's at-least-once defaults
(offset committed after the handler; retries then DLQ); delivery status is
consumed in group ``ingest-api-delivery-status``. Both are idempotent:
the inbox upsert ignores a version it already holds or an older one, and a
delivery status overwrites the channel's latest status.
"""

from __future__ import annotations

from faststream.kafka import KafkaBroker
from sqlalchemy.ext.asyncio import AsyncEngine

from clarion_contracts.registry import DELIVERY_STATUS, NOTIFICATIONS
from clarion_contracts.v1 import DeliveryStatus, Notification
from clarion_ingest.adapters import postgres
from clarion_ingest.adapters.redis_store import CountsCache
from clarion_ingest.settings import IngestSettings
from clarion_kit.kafka import subscriber_options
from clarion_kit.logging import get_logger
from clarion_kit.metrics import get_or_create_counter, metric_name

_log = get_logger(__name__)


class InboxProjector:
    """Applies notification versions and delivery statuses to the inbox tables.

    Args:
        engine: the PostgreSQL engine.
        counts: the counts cache, invalidated when a user's inbox changed.
        service: service name for metric names.
    """

    def __init__(self, engine: AsyncEngine, counts: CountsCache, service: str) -> None:
        self.engine = engine
        self.counts = counts
        self.applied = get_or_create_counter(
            metric_name(service, "inbox_versions_total"),
            "Notification versions consumed, by outcome (applied or stale)",
            ("outcome",),
        )

    async def apply_notification(self, notification: Notification) -> bool:
        """Upsert one version; True if it was newer than the stored one.

        Redelivered or out-of-order older versions are ignored; an applied version
        drops the user's cached counts (rebuilt on the next read).
        """
        async with self.engine.begin() as conn:
            applied = await postgres.upsert_notification(conn, notification)
        self.applied.labels("applied" if applied else "stale").inc()
        if applied:
            await self.counts.invalidate(notification.recipient_id)
        return applied

    async def apply_delivery(self, status: DeliveryStatus) -> bool:
        """Record the channel's latest status on the inbox row; False if the row is unknown."""
        async with self.engine.begin() as conn:
            return await postgres.record_delivery(conn, status)


def register_consumers(
    broker: KafkaBroker, settings: IngestSettings, projector: InboxProjector
) -> None:
    """Subscribe ``projector`` to the notifications (and delivery-status) topics."""
    options = subscriber_options(settings, group_id=settings.consumer_group)
    if settings.consume_notifications:

        async def on_notification(notification: Notification) -> None:
            await projector.apply_notification(notification)

        broker.subscriber(settings.topic(NOTIFICATIONS), **options)(on_notification)

    if settings.consume_delivery_status:
        # A group of its own: one group subscribed to different topics by different
        # members rebalances both on every change.
        delivery_options = subscriber_options(
            settings, group_id=f"{settings.consumer_group}-delivery-status"
        )

        async def on_delivery_status(status: DeliveryStatus) -> None:
            await projector.apply_delivery(status)

        broker.subscriber(settings.topic(DELIVERY_STATUS), **delivery_options)(on_delivery_status)
