"""The topic registry: every Clarion topic, its contract, key and configuration.

Services create topics from it at start-up, deploy files (Strimzi ``KafkaTopic``
resources, the docker-compose topic job) are generated from it, and the
AsyncAPI document is built from it. Names follow ``clarion.<what>.v<major>``;
each topic has a dead-letter twin ``<topic>.dlq`` with the same key.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

from clarion_contracts.base import ContractModel
from clarion_contracts.v1 import (
    DeliveryStatus,
    DomainEvent,
    EmailRequest,
    InboxEvent,
    Notification,
    Preferences,
    PresenceEvent,
    PushRequest,
    PushSubscription,
    UserProfile,
)

DAY_MS = 24 * 3600 * 1000
DLQ_SUFFIX = ".dlq"


@dataclass(frozen=True)
class TopicSpec:
    """One Kafka topic and the contract of its records.

    Attributes:
        name: the topic name, e.g. ``clarion.notifications.v1``.
        model: the pydantic model of every record value.
        key: what the record key is (documentation; keys give per-key ordering).
        partitions: partition count in production.
        retention_ms: retention in milliseconds (-1: forever, for compacted topics).
        cleanup_policy: ``delete`` or ``compact`` (Kafka ``cleanup.policy``).
        producers / consumers: the services that write / read it.
        description: one line for people and the AsyncAPI document.
        dlq_retention_ms: retention of the ``.dlq`` twin.
    """

    name: str
    model: type[ContractModel]
    key: str
    partitions: int
    retention_ms: int
    cleanup_policy: Literal["delete", "compact"]
    producers: tuple[str, ...]
    consumers: tuple[str, ...]
    description: str
    dlq_retention_ms: int = 14 * DAY_MS
    extra_config: dict[str, str] = field(default_factory=dict)

    @property
    def dlq(self) -> str:
        """Name of the dead-letter topic: ``<name>.dlq``."""
        return self.name + DLQ_SUFFIX

    @property
    def version(self) -> int:
        """The contract's major version, read from the name's ``.vN`` suffix."""
        return int(self.name.rsplit(".v", 1)[1])

    def config(self) -> dict[str, str]:
        """Kafka topic configuration entries (``cleanup.policy``, ``retention.ms``...)."""
        cfg = {"cleanup.policy": self.cleanup_policy, "retention.ms": str(self.retention_ms)}
        if self.cleanup_policy == "compact":
            cfg["min.cleanable.dirty.ratio"] = "0.1"
        cfg.update(self.extra_config)
        return cfg

    def dlq_config(self) -> dict[str, str]:
        """Kafka topic configuration of the dead-letter twin (always ``delete``)."""
        return {"cleanup.policy": "delete", "retention.ms": str(self.dlq_retention_ms)}


DOMAIN_EVENTS = TopicSpec(
    name="clarion.domain-events.v1",
    model=DomainEvent,
    key="the single recipient, else event_id",
    partitions=12,
    retention_ms=7 * DAY_MS,
    cleanup_policy="delete",
    producers=("producers", "ingest-api"),
    consumers=("aggregator",),
    description='Domain events published by products ("alice liked your post").',
)
NOTIFICATIONS = TopicSpec(
    name="clarion.notifications.v1",
    model=Notification,
    key="recipient_id",
    partitions=12,
    retention_ms=7 * DAY_MS,
    cleanup_policy="delete",
    producers=("aggregator",),
    consumers=("ingest-api", "realtime-gateway", "analytics"),
    description="Per-user notifications, created or updated in place (versioned).",
)
INBOX_EVENTS = TopicSpec(
    name="clarion.inbox-events.v1",
    model=InboxEvent,
    key="recipient_id",
    partitions=12,
    retention_ms=7 * DAY_MS,
    cleanup_policy="delete",
    producers=("ingest-api",),
    consumers=("realtime-gateway", "analytics"),
    description="Read, unread, deleted and all-read changes with the new unread count.",
)
PUSH_REQUESTS = TopicSpec(
    name="clarion.push-requests.v1",
    model=PushRequest,
    key="recipient_id",
    partitions=6,
    retention_ms=2 * DAY_MS,
    cleanup_policy="delete",
    producers=("aggregator",),
    consumers=("push-worker",),
    description="Web Push deliveries to make for one notification version.",
)
EMAIL_REQUESTS = TopicSpec(
    name="clarion.email-requests.v1",
    model=EmailRequest,
    key="recipient_id",
    partitions=6,
    retention_ms=3 * DAY_MS,
    cleanup_policy="delete",
    producers=("aggregator",),
    consumers=("email-worker",),
    description="Immediate emails and digests to send.",
)
DELIVERY_STATUS = TopicSpec(
    name="clarion.delivery-status.v1",
    model=DeliveryStatus,
    key="notification_id",
    partitions=6,
    retention_ms=7 * DAY_MS,
    cleanup_policy="delete",
    producers=("realtime-gateway", "push-worker", "email-worker"),
    consumers=("analytics", "ingest-api"),
    description="Delivery outcomes per notification version and channel.",
)
PREFERENCES = TopicSpec(
    name="clarion.preferences.v1",
    model=Preferences,
    key="user_id",
    partitions=6,
    retention_ms=-1,
    cleanup_policy="compact",
    producers=("ingest-api",),
    consumers=("aggregator", "email-worker"),
    description="Users' notification preferences (compacted: the latest per user).",
)
USER_PROFILES = TopicSpec(
    name="clarion.user-profiles.v1",
    model=UserProfile,
    key="user_id",
    partitions=6,
    retention_ms=-1,
    cleanup_policy="compact",
    producers=("ingest-api",),
    consumers=("aggregator", "email-worker"),
    description="User profiles: name, email, locale, timezone (compacted).",
)
PUSH_SUBSCRIPTIONS = TopicSpec(
    name="clarion.push-subscriptions.v1",
    model=PushSubscription,
    key="subscription_id",
    partitions=6,
    retention_ms=-1,
    cleanup_policy="compact",
    producers=("ingest-api", "push-worker"),
    consumers=("push-worker",),
    description="Web Push subscriptions; active=false removes one (compacted).",
)
PRESENCE = TopicSpec(
    name="clarion.presence.v1",
    model=PresenceEvent,
    key="user_id",
    partitions=6,
    retention_ms=1 * DAY_MS,
    cleanup_policy="delete",
    producers=("realtime-gateway",),
    consumers=("aggregator", "analytics"),
    description="Users going online and offline (debounced).",
)

TOPICS: tuple[TopicSpec, ...] = (
    DOMAIN_EVENTS,
    NOTIFICATIONS,
    INBOX_EVENTS,
    PUSH_REQUESTS,
    EMAIL_REQUESTS,
    DELIVERY_STATUS,
    PREFERENCES,
    USER_PROFILES,
    PUSH_SUBSCRIPTIONS,
    PRESENCE,
)
"""Every v1 topic, in pipeline order."""


def by_name(name: str) -> TopicSpec:
    """Return the spec of topic ``name`` (a DLQ name resolves to its source topic).

    Raises:
        KeyError: no such topic in the registry.
    """
    base = name.removesuffix(DLQ_SUFFIX)
    for spec in TOPICS:
        if spec.name == base:
            return spec
    raise KeyError(name)


def all_topic_names(*, include_dlq: bool = True) -> list[str]:
    """Every topic name in the registry, with each DLQ twin after its topic when asked."""
    names: list[str] = []
    for spec in TOPICS:
        names.append(spec.name)
        if include_dlq:
            names.append(spec.dlq)
    return names
