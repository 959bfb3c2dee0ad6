"""Latency samples taken from messages, and their histogram keys.

Stages (all in milliseconds):

- ``event_to_notification``: the domain event happened (``last_occurred_at``) ->
  the notification version carrying it was emitted (``created_at`` for version 1,
  ``updated_at`` after). Includes producer and ingest delays.
- ``ingest_to_notification``: ingest-api accepted the event (``ingested_at``) ->
  the version was emitted; Clarion's own pipeline latency.
- ``notification_to_delivery`` (per channel): the version was emitted -> a
  channel reported it ``delivered``.

Each sample is filed under the UTC minute it completed in (the later timestamp).
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from datetime import datetime

from clarion_analytics.domain.counters import ANY
from clarion_analytics.domain.latency import bucket_index
from clarion_analytics.domain.timebuckets import floor_minute
from clarion_contracts.v1 import Notification

EVENT_TO_NOTIFICATION = "event_to_notification"
INGEST_TO_NOTIFICATION = "ingest_to_notification"
NOTIFICATION_TO_DELIVERY = "notification_to_delivery"
STAGES = (EVENT_TO_NOTIFICATION, INGEST_TO_NOTIFICATION, NOTIFICATION_TO_DELIVERY)


@dataclass(frozen=True)
class LatencySample:
    """One measured latency: stage, channel (or ``*``), notification type, end time, ms."""

    stage: str
    channel: str
    type: str
    ended_at: datetime
    latency_ms: float


@dataclass(frozen=True, order=True)
class BucketKey:
    """A latency histogram row: ``(minute, stage, channel, type, bucket)``."""

    minute: datetime
    stage: str
    channel: str
    type: str
    bucket: int


def emitted_at(notification: Notification) -> datetime:
    """When this version was emitted: ``created_at`` for version 1, else ``updated_at``."""
    return notification.created_at if notification.version == 1 else notification.updated_at


def millis(start: datetime, end: datetime) -> float:
    """``end - start`` in milliseconds (negative under clock skew)."""
    return (end - start).total_seconds() * 1000.0


def notification_samples(notification: Notification) -> list[LatencySample]:
    """The event -> notification (and ingest -> notification) samples of one version."""
    end = emitted_at(notification)
    samples = [
        LatencySample(
            EVENT_TO_NOTIFICATION,
            ANY,
            notification.type,
            end,
            millis(notification.last_occurred_at, end),
        )
    ]
    if notification.ingested_at is not None:
        samples.append(
            LatencySample(
                INGEST_TO_NOTIFICATION,
                ANY,
                notification.type,
                end,
                millis(notification.ingested_at, end),
            )
        )
    return samples


def delivery_sample(
    type_: str, channel: str, version_emitted_at: datetime, delivered_at: datetime
) -> LatencySample:
    """The notification -> delivery sample of one delivered status."""
    return LatencySample(
        NOTIFICATION_TO_DELIVERY,
        channel,
        type_,
        delivered_at,
        millis(version_emitted_at, delivered_at),
    )


def bucket_counts(samples: list[LatencySample]) -> list[tuple[BucketKey, int]]:
    """Histogram increments of ``samples``, sorted by key (stable lock order)."""
    counts: Counter[BucketKey] = Counter(
        BucketKey(floor_minute(s.ended_at), s.stage, s.channel, s.type, bucket_index(s.latency_ms))
        for s in samples
    )
    return sorted(counts.items())
