"""Clarion message contracts, major version 1.

One frozen model per message. Within v1 only optional fields may be added; a
breaking change is a new ``v2`` model on a new ``.v2`` topic (the JSON Schema
snapshots in ``schemas/`` and :mod:`clarion_contracts.compat` enforce this).

Times are RFC 3339 with an offset (pydantic ``AwareDatetime``). Ids are strings.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Literal, Self
from uuid import UUID

from pydantic import AfterValidator, AwareDatetime, Field, StringConstraints, model_validator

from clarion_contracts.base import (
    Actor,
    Channel,
    ContractModel,
    EventObject,
    EventType,
    JsonObject,
    Priority,
    ShortText,
    UserId,
)
from clarion_contracts.text import Text, TextKey, WebUrl, check_text

MAX_RECIPIENTS = 1000
"""Most recipients one domain event may list; larger audiences use ``audience``."""


class Audience(ContractModel):
    """A broadcast audience: everyone (``{"all": true}``) or one named segment."""

    all: bool = False
    segment: Annotated[Text, StringConstraints(min_length=1, max_length=128)] | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        if self.all == (self.segment is not None):
            raise ValueError("audience needs exactly one of all=true or segment")
        return self


class DomainEvent(ContractModel):
    """Something that happened in a producer's product, e.g. "alice liked your post".

    Topic ``clarion.domain-events.v1``, key: the single recipient, else ``event_id``.
    It is also the body of ``POST /v1/events``. ``event_id`` is the idempotency
    key: the same id twice never makes a second notification. Exactly one of
    ``recipients`` (1..1000 user ids) or ``audience`` is set.
    """

    schema_version: Literal[1] = 1
    event_id: UUID
    type: EventType
    occurred_at: AwareDatetime
    actor: Actor
    recipients: Annotated[list[UserId], Field(min_length=1, max_length=MAX_RECIPIENTS)] | None = (
        None
    )
    audience: Audience | None = None
    object: EventObject
    data: JsonObject = Field(default_factory=dict)
    priority: Priority = Priority.NORMAL
    tenant_id: Annotated[Text, StringConstraints(max_length=128)] | None = None
    ingested_at: AwareDatetime | None = Field(
        default=None, description="When ingest-api accepted the event (set by ingest-api)"
    )

    @model_validator(mode="after")
    def _recipients_or_audience(self) -> Self:
        if (self.recipients is None) == (self.audience is None):
            raise ValueError("exactly one of recipients or audience is required")
        return self


class Notification(ContractModel):
    """One recipient's notification, created or updated in place by aggregation.

    Topic ``clarion.notifications.v1``, key ``recipient_id``. ``version`` starts
    at 1 and grows by one each time the aggregation group absorbs an event;
    consumers upsert by ``(notification_id, version)`` and ignore a version
    older than the one they hold. ``actors`` is newest first and capped;
    ``actor_count`` counts distinct actors. ``title``/``body`` are plain text,
    ``body_html`` is sanitised HTML.
    """

    schema_version: Literal[1] = 1
    notification_id: Text
    version: int = Field(ge=1)
    recipient_id: UserId
    type: EventType
    category: Text
    group_key: Text = Field(description="recipient|type|object ref|window start")
    object: EventObject
    actors: list[Actor]
    actor_count: int = Field(ge=0)
    event_ids: list[UUID] = Field(description="Events absorbed so far, newest first (capped)")
    title: Text
    body: Text
    body_html: Text
    url: WebUrl | None = None
    priority: Priority = Priority.NORMAL
    channels: list[Channel]
    created_at: AwareDatetime
    updated_at: AwareDatetime
    first_occurred_at: AwareDatetime
    last_occurred_at: AwareDatetime
    ingested_at: AwareDatetime | None = Field(
        default=None, description="When ingest-api accepted the event behind this version"
    )
    data: JsonObject = Field(default_factory=dict)
    tenant_id: Text | None = None

    @property
    def is_created(self) -> bool:
        """True for the first version of a notification (``notification.created``)."""
        return self.version == 1


class InboxAction(StrEnum):
    """What a user did to their inbox."""

    READ = "read"
    UNREAD = "unread"
    DELETED = "deleted"
    ALL_READ = "all_read"


class InboxEvent(ContractModel):
    """A change a user made to their inbox, with the unread count after it.

    Topic ``clarion.inbox-events.v1``, key ``recipient_id``. ``notification_ids``
    is empty for ``all_read``. ``event_id`` is the dedup key.
    """

    schema_version: Literal[1] = 1
    event_id: UUID
    recipient_id: UserId
    action: InboxAction
    notification_ids: list[Text] = Field(default_factory=list)
    unread_count: int = Field(ge=0)
    occurred_at: AwareDatetime


class PushRequest(ContractModel):
    """Ask push-worker to send one notification version to every subscription of a user.

    Topic ``clarion.push-requests.v1``, key ``recipient_id``. ``request_id`` is
    deterministic (``notification_id:version:push``) so a redelivery is
    recognised. ``topic`` becomes the RFC 8030 Topic header (at most 32
    URL-safe base64 characters) so a newer version replaces an older one on the
    device. ``ttl_seconds`` and ``urgency`` become the TTL and Urgency headers.
    """

    schema_version: Literal[1] = 1
    request_id: Text
    notification_id: Text
    version: int = Field(ge=1)
    recipient_id: UserId
    type: EventType
    category: Text
    title: Text
    body: Text
    url: WebUrl | None = None
    icon: WebUrl | None = None
    priority: Priority = Priority.NORMAL
    urgency: Literal["very-low", "low", "normal", "high"] = "normal"
    ttl_seconds: int = Field(default=86400, ge=0)
    topic: Annotated[str, StringConstraints(max_length=32, pattern=r"^[A-Za-z0-9_-]*$")] | None = (
        None
    )
    created_at: AwareDatetime
    not_before: AwareDatetime | None = Field(
        default=None, description="Do not send before this time (end of quiet hours)"
    )


class EmailKind(StrEnum):
    """An email for one notification, or a digest of several."""

    IMMEDIATE = "immediate"
    DIGEST = "digest"


class EmailItem(ContractModel):
    """One notification as it appears in an email."""

    notification_id: Text
    version: int = Field(ge=1)
    type: EventType
    category: Text
    title: Text
    body: Text
    body_html: Text
    url: WebUrl | None = None
    actor_count: int = Field(ge=0)
    occurred_at: AwareDatetime


class EmailRequest(ContractModel):
    """Ask email-worker to send one email (immediate) or a digest to a user.

    Topic ``clarion.email-requests.v1``, key ``recipient_id``. The address,
    name and locale come from the user's profile (``clarion.user-profiles.v1``).
    ``request_id`` is the idempotency key of the send log.
    """

    schema_version: Literal[1] = 1
    request_id: Text
    recipient_id: UserId
    kind: EmailKind
    category: Text
    items: Annotated[list[EmailItem], Field(min_length=1)]
    period_start: AwareDatetime | None = None
    period_end: AwareDatetime | None = None
    created_at: AwareDatetime
    not_before: AwareDatetime | None = Field(
        default=None, description="Do not send before this time (end of quiet hours)"
    )


class DeliveryState(StrEnum):
    """Outcome of one delivery attempt on one channel."""

    DELIVERED = "delivered"
    FAILED = "failed"
    RETRYING = "retrying"
    DEFERRED = "deferred"
    BOUNCED = "bounced"
    SKIPPED = "skipped"
    CLICKED = "clicked"


class DeliveryStatus(ContractModel):
    """What happened to a notification version on a channel.

    Topic ``clarion.delivery-status.v1``, key ``notification_id``.
    ``status_id`` is the dedup key. ``reason`` is a short machine-readable cause
    (``gone``, ``rate_limited``, ``smtp_550``...), ``detail`` free text.
    """

    schema_version: Literal[1] = 1
    status_id: Text
    notification_id: Text
    version: int = Field(ge=1)
    recipient_id: UserId
    channel: Channel
    status: DeliveryState
    type: EventType | None = None
    reason: Text | None = None
    detail: Annotated[Text, StringConstraints(max_length=2000)] | None = None
    attempt: int = Field(default=1, ge=1)
    request_id: Text | None = None
    notification_created_at: AwareDatetime | None = None
    occurred_at: AwareDatetime


class QuietHours(ContractModel):
    """A daily quiet period in the user's timezone, ``HH:MM`` to ``HH:MM`` (may wrap midnight)."""

    start: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]
    end: Annotated[str, StringConstraints(pattern=r"^([01]\d|2[0-3]):[0-5]\d$")]


class ChannelPreference(ContractModel):
    """Which channels a category may use; ``None`` means the category's default."""

    in_app: bool | None = None
    push: bool | None = None
    email: bool | None = None


class Preferences(ContractModel):
    """A user's notification preferences (the whole document, last write wins).

    Topic ``clarion.preferences.v1`` (compacted), key ``user_id``. ``categories``
    maps a category to its channel switches; ``muted_objects`` holds object
    refs (``"type:id"``); ``timezone`` is an IANA name (``None``: the profile's).
    """

    schema_version: Literal[1] = 1
    user_id: UserId
    categories: dict[TextKey, ChannelPreference] = Field(default_factory=dict)
    muted_objects: Annotated[list[Text], Field(max_length=1000)] = Field(default_factory=list)
    email_digest: Literal["off", "hourly", "daily"] = "daily"
    digest_hour: int = Field(default=9, ge=0, le=23, description="Local hour of daily digests")
    quiet_hours: QuietHours | None = None
    timezone: Text | None = None
    updated_at: AwareDatetime


class UserProfile(ContractModel):
    """Who a user is, for rendering and email.

    Topic ``clarion.user-profiles.v1`` (compacted), key ``user_id``.
    ``timezone`` is an IANA name, ``locale`` a BCP 47 tag.
    """

    schema_version: Literal[1] = 1
    user_id: UserId
    name: ShortText
    email: (
        Annotated[
            str,
            StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"),
            AfterValidator(check_text),
        ]
        | None
    ) = None
    locale: Text = "en"
    timezone: Text = "UTC"
    segments: list[Text] = Field(default_factory=list)
    tenant_id: Text | None = None
    updated_at: AwareDatetime


class PushKeys(ContractModel):
    """The browser's keys for RFC 8291 message encryption (base64url)."""

    p256dh: Text
    auth: Text


class PushSubscription(ContractModel):
    """A Web Push subscription of one browser of a user.

    Topic ``clarion.push-subscriptions.v1`` (compacted), key ``subscription_id``
    (a hash of the endpoint). ``active=False`` is the logical tombstone that
    push-worker and ingest-api publish when a subscription is removed or the
    push service answered 404/410; a null value follows it for compaction.
    """

    schema_version: Literal[1] = 1
    subscription_id: Text
    user_id: UserId
    endpoint: WebUrl
    keys: PushKeys
    user_agent: Text | None = None
    active: bool = True
    reason: Text | None = None
    updated_at: AwareDatetime


class PresenceStatus(StrEnum):
    """Whether a user has at least one live gateway session."""

    ONLINE = "online"
    OFFLINE = "offline"


class PresenceEvent(ContractModel):
    """A user went online or offline (debounced by the gateway).

    Topic ``clarion.presence.v1``, key ``user_id``. ``sessions`` is the number
    of live sessions on the reporting instance.
    """

    schema_version: Literal[1] = 1
    event_id: UUID
    user_id: UserId
    status: PresenceStatus
    sessions: int = Field(default=0, ge=0)
    instance_id: Text
    occurred_at: AwareDatetime


def utc_now() -> datetime:
    """The current time as an aware UTC datetime."""
    from datetime import UTC

    return datetime.now(UTC)


__all__ = [
    "MAX_RECIPIENTS",
    "Audience",
    "ChannelPreference",
    "DeliveryState",
    "DeliveryStatus",
    "DomainEvent",
    "EmailItem",
    "EmailKind",
    "EmailRequest",
    "InboxAction",
    "InboxEvent",
    "Notification",
    "Preferences",
    "PresenceEvent",
    "PresenceStatus",
    "PushKeys",
    "PushRequest",
    "PushSubscription",
    "QuietHours",
    "UserProfile",
    "utc_now",
]
