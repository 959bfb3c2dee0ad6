"""The ``in_app`` delivery status of a notification version written to a session (pure)."""

from __future__ import annotations

from datetime import UTC, datetime
from urllib.parse import unquote

from clarion_contracts.base import Channel
from clarion_contracts.v1 import DeliveryState, DeliveryStatus
from clarion_gateway.protocol import WireMessage


def status_id(notification_id: str, version: int) -> str:
    """Dedup key of the status: ``<notification_id>:<version>:in_app:delivered``."""
    return f"{notification_id}:{version}:in_app:delivered"


def delivered_status(user_id: str, msg: WireMessage, written_at: datetime) -> DeliveryStatus:
    """The ``DeliveryStatus`` of a notification frame first written to one of the user's sessions.

    ``notification_created_at`` is the version's ``updated_at`` (when it was made),
    taken from the wire header.
    """
    nid = unquote(msg.notification_id)
    return DeliveryStatus(
        status_id=status_id(nid, msg.version),
        notification_id=nid,
        version=msg.version,
        recipient_id=user_id,
        channel=Channel.IN_APP,
        status=DeliveryState.DELIVERED,
        notification_created_at=datetime.fromtimestamp(msg.ts_ms / 1000, UTC),
        occurred_at=written_at,
    )
