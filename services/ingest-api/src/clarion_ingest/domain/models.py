"""Request and response bodies of the ingest-api HTTP API (pydantic, no I/O).

Request bodies refuse unknown top-level fields (``extra="forbid"``) so a typo is
a 422, never silently ignored. Time zones are IANA names checked with
:mod:`zoneinfo`. Every text follows the contracts' text policy
(:mod:`clarion_contracts.text`: no U+0000, noncharacters or lone surrogates) and
every URL is http(s), so what the API accepts can always be stored and rendered.
"""

from __future__ import annotations

import hashlib
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import (
    AfterValidator,
    AwareDatetime,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    model_validator,
)

from clarion_contracts.base import Actor, EventObject, Priority, ShortText, UserId
from clarion_contracts.text import Text, TextKey, WebUrl, check_text, web_link
from clarion_contracts.v1 import (
    Audience,
    ChannelPreference,
    DomainEvent,
    Preferences,
    PushKeys,
    QuietHours,
)

ANNOUNCEMENT_TYPE = "clarion.announcement"
"""Domain event type of admin announcements."""


def check_timezone(name: str) -> str:
    """Return ``name`` if it is an IANA time zone known to :mod:`zoneinfo`.

    Raises:
        ValueError: unknown zone name (e.g. ``Mars/Olympus``) or a path-like name.
    """
    if not name or len(name) > 64 or name.startswith("/") or ".." in name:
        raise ValueError("not an IANA time zone name")
    try:
        ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ValueError(f"unknown IANA time zone: {name!r}") from exc
    return name


Timezone = Annotated[Text, AfterValidator(check_timezone)]
Segment = Annotated[Text, StringConstraints(min_length=1, max_length=128)]
Category = Annotated[Text, StringConstraints(min_length=1, max_length=64)]
"""A notification category (path, query and preference keys)."""
NotificationId = Annotated[Text, StringConstraints(min_length=1, max_length=256)]
"""A notification id as the inbox API takes it."""
Email = Annotated[
    str,
    StringConstraints(max_length=320, pattern=r"^[^@\s]+@[^@\s]+$"),
    AfterValidator(check_text),
]
_BCP47 = r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"
"""A BCP 47 language tag, loosely: language then subtags (``en``, ``pt-BR``, ``zh-Hant-TW``)."""


_USER_ID = TypeAdapter(UserId)


def is_user_id(value: str) -> bool:
    """True if ``value`` is a valid :data:`~clarion_contracts.base.UserId` (a token subject)."""
    try:
        _USER_ID.validate_python(value)
    except ValidationError:
        return False
    return True


class StrictBody(BaseModel):
    """Base of request bodies: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ProfileIn(StrictBody):
    """Body of ``PUT /v1/users/{user_id}``: who the user is, for rendering and email."""

    name: ShortText
    email: Email | None = None
    locale: Annotated[
        str,
        StringConstraints(
            min_length=2, max_length=35, pattern=r"^[A-Za-z]{2,8}(-[A-Za-z0-9]{1,8})*$"
        ),
    ] = "en"
    timezone: Timezone = "UTC"
    segments: Annotated[list[Segment], Field(max_length=100)] = Field(default_factory=list)
    tenant_id: Annotated[Text, StringConstraints(max_length=128)] | None = None


class PreferencesIn(StrictBody):
    """Body of ``PUT /v1/me/preferences``: the contract's Preferences minus user and time."""

    categories: dict[
        Annotated[TextKey, StringConstraints(min_length=1, max_length=64)], ChannelPreference
    ] = Field(default_factory=dict, max_length=200)
    muted_objects: Annotated[
        list[Annotated[Text, StringConstraints(min_length=3, max_length=330)]],
        Field(max_length=1000),
    ] = Field(default_factory=list)
    email_digest: Literal["off", "hourly", "daily"] = "daily"
    digest_hour: int = Field(default=9, ge=0, le=23)
    quiet_hours: QuietHours | None = None
    timezone: Timezone | None = None

    def to_contract(self, user_id: str, updated_at: datetime) -> Preferences:
        """The :class:`Preferences` record of ``user_id`` holding this document."""
        return Preferences(user_id=user_id, updated_at=updated_at, **self.model_dump())


class PreferencesOut(BaseModel):
    """A user's preferences as the API returns them (``updated_at`` null until first saved)."""

    categories: dict[str, ChannelPreference] = Field(default_factory=dict)
    muted_objects: list[str] = Field(default_factory=list)
    email_digest: Literal["off", "hourly", "daily"] = "daily"
    digest_hour: int = 9
    quiet_hours: QuietHours | None = None
    timezone: str | None = None
    updated_at: AwareDatetime | None = None

    @classmethod
    def from_contract(cls, prefs: Preferences | None) -> PreferencesOut:
        """Build from a stored record; ``None`` gives the defaults."""
        if prefs is None:
            return cls()
        return cls.model_validate(prefs.model_dump(exclude={"user_id", "schema_version"}))


def default_preferences(user_id: str, now: datetime) -> Preferences:
    """The preferences a user has before saving any (every category on its default)."""
    return Preferences(user_id=user_id, updated_at=now)


def with_email_off(prefs: Preferences, category: str, now: datetime) -> Preferences:
    """``prefs`` with email turned off for ``category`` (RFC 8058 one-click unsubscribe).

    Other channel switches of the category are kept.
    """
    current = prefs.categories.get(category, ChannelPreference())
    categories = {**prefs.categories, category: current.model_copy(update={"email": False})}
    return prefs.model_copy(update={"categories": categories, "updated_at": now})


class PushSubscriptionIn(StrictBody):
    """Body of ``POST /v1/me/push-subscriptions``: a browser's ``PushSubscription.toJSON()``."""

    endpoint: WebUrl
    keys: PushKeys
    user_agent: Annotated[Text, StringConstraints(max_length=512)] | None = None
    expirationTime: int | None = Field(
        default=None, description="Accepted and ignored (the browser's PushSubscription JSON)"
    )

    @model_validator(mode="after")
    def _endpoint_scheme(self) -> Self:
        if self.endpoint.scheme not in ("https", "http"):
            raise ValueError("endpoint must be an http(s) URL")
        return self


def subscription_id(endpoint: str) -> str:
    """The id of a push subscription: lowercase hex SHA-256 of its endpoint URL."""
    return hashlib.sha256(endpoint.encode()).hexdigest()


class SubscriptionOut(BaseModel):
    """A stored push subscription."""

    subscription_id: str
    endpoint: str
    active: bool
    updated_at: AwareDatetime


class AnnouncementIn(StrictBody):
    """Body of ``POST /v1/admin/announcements``.

    Exactly one target: ``recipients`` (1..1000 user ids), ``all: true`` or ``segment``.
    """

    title: ShortText
    body: Annotated[Text, StringConstraints(min_length=1, max_length=5000)]
    url: WebUrl | None = None
    priority: Priority = Priority.NORMAL
    recipients: Annotated[list[UserId], Field(min_length=1, max_length=1000)] | None = None
    all: bool = False
    segment: Segment | None = None

    @model_validator(mode="after")
    def _one_target(self) -> Self:
        targets = (self.recipients is not None) + self.all + (self.segment is not None)
        if targets != 1:
            raise ValueError("set exactly one of recipients, all=true or segment")
        return self


def build_announcement(
    body: AnnouncementIn, admin_id: str, event_id: UUID, now: datetime
) -> DomainEvent:
    """The ``clarion.announcement`` domain event of an admin announcement.

    The admin is the actor; the object is the announcement itself, so the
    aggregator never merges two announcements into one notification.
    """
    audience: Audience | None = None
    if body.all:
        audience = Audience(all=True)
    elif body.segment is not None:
        audience = Audience(segment=body.segment)
    return DomainEvent(
        event_id=event_id,
        type=ANNOUNCEMENT_TYPE,
        occurred_at=now,
        ingested_at=now,
        actor=Actor(id=admin_id, name=admin_id[:300]),
        recipients=body.recipients,
        audience=audience,
        object=EventObject(type="announcement", id=str(event_id), title=body.title, url=body.url),
        data={"title": body.title, "body": body.body, "url": str(body.url) if body.url else None},
        priority=body.priority,
    )


class AcceptedOut(BaseModel):
    """Answer of an accepted write: the ids stored in the outbox (relayed to Kafka after)."""

    accepted: list[str]


def _link_or_none(value: Any) -> str | None:
    # Stored before URLs were restricted to http(s): a non-web link is never returned.
    return web_link(value)


def _with_web_links(value: Any) -> Any:
    if isinstance(value, list):
        return [_with_web_links(item) for item in value]
    if isinstance(value, dict):
        return {
            key: web_link(item) if key in ("url", "avatar_url") and item is not None else item
            for key, item in value.items()
        }
    return value


class NotificationOut(BaseModel):
    """One notification in a user's inbox (``url`` and ``object.url`` only http(s), or null)."""

    id: str
    version: int
    type: str
    category: str
    title: str
    body: str
    body_html: str
    url: Annotated[str | None, BeforeValidator(_link_or_none)] = None
    priority: Priority
    actors: Annotated[list[Actor], BeforeValidator(_with_web_links)]
    actor_count: int
    object: Annotated[EventObject, BeforeValidator(_with_web_links)]
    data: dict[str, Any] = Field(default_factory=dict)
    read: bool
    read_at: AwareDatetime | None = None
    created_at: AwareDatetime
    updated_at: AwareDatetime
    deliveries: dict[str, str] = Field(
        default_factory=dict, description="Latest delivery status per channel"
    )


class NotificationPage(BaseModel):
    """One page of the inbox, newest first; ``next_cursor`` is null on the last page."""

    items: list[NotificationOut]
    next_cursor: str | None = None


class CategoryCounts(BaseModel):
    """Unread and total notifications of one category."""

    unread: int
    total: int


class CountsOut(BaseModel):
    """A user's inbox counts (deleted notifications excluded)."""

    unread: int
    total: int
    categories: dict[str, CategoryCounts] = Field(default_factory=dict)


class ReadAllOut(BaseModel):
    """Answer of ``:read-all``: how many became read, and the unread count after."""

    updated: int
    unread_count: int


class BatchDeleteIn(StrictBody):
    """Body of ``POST /v1/me/notifications:batch-delete``."""

    ids: Annotated[
        list[NotificationId],
        Field(min_length=1, max_length=10_000),
    ]


class BatchDeleteOut(BaseModel):
    """The ids that were deleted (ids not in the caller's inbox are ignored) and the count."""

    deleted: list[str]
    unread_count: int


class VapidKeyOut(BaseModel):
    """The VAPID public key browsers pass to ``pushManager.subscribe``."""

    public_key: str


class ConfigOut(BaseModel):
    """Configuration the demo inbox page needs."""

    gateway_url: str
    vapid_public_key: str | None = None
