"""PostgreSQL tables of ingest-api (SQLModel), all in the ``ingest`` schema.

ingest-api owns these tables; no other service reads them. The schema is created
and changed only by the alembic migrations in ``clarion_ingest/migrations``.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import UUID

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    DateTime,
    Identity,
    Index,
    Integer,
    LargeBinary,
    Text,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.dialects.postgresql import UUID as PgUUID
from sqlmodel import Field, SQLModel

SCHEMA = "ingest"
"""The PostgreSQL schema holding every ingest-api table (and its alembic version table)."""

metadata = SQLModel.metadata


def _tz(nullable: bool = False, **kw: Any) -> Any:
    return Field(sa_column=Column(DateTime(timezone=True), nullable=nullable, **kw))


def _json(default: str) -> Any:
    return Field(
        sa_column=Column(JSONB, nullable=False, server_default=text(f"'{default}'::jsonb"))
    )


class InboxRow(SQLModel, table=True):
    """One notification in one user's inbox: the latest version plus the user's read state.

    ``read_at`` null means unread; ``deleted_at`` set hides the row for good
    (a later version of a deleted notification stays deleted).
    """

    __tablename__ = "inbox"
    __table_args__: ClassVar[Any] = (
        Index(
            "ix_inbox_user_order",
            "user_id",
            text("updated_at DESC"),
            text("notification_id DESC"),
            postgresql_where=text("deleted_at IS NULL"),
        ),
        Index(
            "ix_inbox_user_unread",
            "user_id",
            "category",
            postgresql_where=text("read_at IS NULL AND deleted_at IS NULL"),
        ),
        {"schema": SCHEMA},
    )

    notification_id: str = Field(sa_column=Column(Text, primary_key=True))
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    version: int = Field(sa_column=Column(Integer, nullable=False))
    type: str = Field(sa_column=Column(Text, nullable=False))
    category: str = Field(sa_column=Column(Text, nullable=False))
    group_key: str = Field(sa_column=Column(Text, nullable=False))
    title: str = Field(sa_column=Column(Text, nullable=False))
    body: str = Field(sa_column=Column(Text, nullable=False))
    body_html: str = Field(sa_column=Column(Text, nullable=False))
    url: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    priority: str = Field(sa_column=Column(Text, nullable=False))
    actors: list[dict[str, Any]] = _json("[]")
    actor_count: int = Field(sa_column=Column(Integer, nullable=False))
    object: dict[str, Any] = _json("{}")
    data: dict[str, Any] = _json("{}")
    channels: list[str] = _json("[]")
    deliveries: dict[str, Any] = _json("{}")
    created_at: datetime = _tz()
    updated_at: datetime = _tz()
    read_at: datetime | None = _tz(nullable=True)
    deleted_at: datetime | None = _tz(nullable=True)


class PreferencesRow(SQLModel, table=True):
    """A user's preferences document (the contract's Preferences as JSON)."""

    __tablename__ = "preferences"
    __table_args__: ClassVar[Any] = {"schema": SCHEMA}

    user_id: str = Field(sa_column=Column(Text, primary_key=True))
    document: dict[str, Any] = _json("{}")
    updated_at: datetime = _tz()


class ProfileRow(SQLModel, table=True):
    """A user profile as producers last sent it."""

    __tablename__ = "profiles"
    __table_args__: ClassVar[Any] = {"schema": SCHEMA}

    user_id: str = Field(sa_column=Column(Text, primary_key=True))
    document: dict[str, Any] = _json("{}")
    updated_at: datetime = _tz()


class PushSubscriptionRow(SQLModel, table=True):
    """A browser's Web Push subscription; ``subscription_id`` is SHA-256 of the endpoint."""

    __tablename__ = "push_subscriptions"
    __table_args__: ClassVar[Any] = (
        Index("ix_push_subscriptions_user", "user_id"),
        {"schema": SCHEMA},
    )

    subscription_id: str = Field(sa_column=Column(Text, primary_key=True))
    user_id: str = Field(sa_column=Column(Text, nullable=False))
    endpoint: str = Field(sa_column=Column(Text, nullable=False))
    p256dh: str = Field(sa_column=Column(Text, nullable=False))
    auth: str = Field(sa_column=Column(Text, nullable=False))
    user_agent: str | None = Field(default=None, sa_column=Column(Text, nullable=True))
    active: bool = Field(sa_column=Column(Boolean, nullable=False))
    updated_at: datetime = _tz()


class OutboxRow(SQLModel, table=True):
    """One record waiting to be produced to Kafka (the transactional outbox).

    Written in the same transaction as the change it announces; the relay produces
    pending rows (``relayed_at`` null) in ``id`` order and then sets ``relayed_at``.
    Relayed rows are kept for ``outbox_retention_seconds`` so a domain event's
    ``event_id`` (unique with the record key) stays an idempotency key that long.
    ``headers`` holds the record's string headers (W3C trace context).
    """

    __tablename__ = "outbox"
    __table_args__: ClassVar[Any] = (
        Index("ix_outbox_pending", "id", postgresql_where=text("relayed_at IS NULL")),
        Index(
            "ux_outbox_event_key",
            "event_id",
            "key",
            unique=True,
            postgresql_where=text("event_id IS NOT NULL"),
        ),
        {"schema": SCHEMA},
    )

    id: int | None = Field(
        default=None,
        sa_column=Column(BigInteger, Identity(always=True), primary_key=True),
    )
    topic: str = Field(sa_column=Column(Text, nullable=False))
    key: bytes | None = Field(default=None, sa_column=Column(LargeBinary, nullable=True))
    value: bytes = Field(sa_column=Column(LargeBinary, nullable=False))
    headers: dict[str, str] = _json("{}")
    event_id: UUID | None = Field(
        default=None, sa_column=Column(PgUUID(as_uuid=True), nullable=True)
    )
    created_at: datetime = Field(
        sa_column=Column(DateTime(timezone=True), nullable=False, server_default=func.now())
    )
    relayed_at: datetime | None = _tz(nullable=True)
