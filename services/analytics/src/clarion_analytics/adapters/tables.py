"""PostgreSQL tables of analytics (schema ``analytics``), as SQLModel models.

The Alembic migrations in ``clarion_analytics/migrations`` create exactly these
tables; the repository uses their ``__table__`` with SQLAlchemy Core statements.
"""

from __future__ import annotations

from datetime import date, datetime

from sqlalchemy import BigInteger, Column, Date, DateTime, SmallInteger, String, Text
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

SCHEMA = "analytics"
"""The PostgreSQL schema holding every analytics table and its ``alembic_version``."""


def _ts(*, nullable: bool = True, primary_key: bool = False) -> Column[datetime]:
    return Column(DateTime(timezone=True), nullable=nullable, primary_key=primary_key)


class ProcessedMessage(SQLModel, table=True):
    """Dedup keys of consumed messages (inbox ``i:<event_id>``, status ``s:<status_id>``,
    presence ``p:<event_id>``), inserted in the same transaction as the counters."""

    __tablename__ = "processed_messages"
    __table_args__ = {"schema": SCHEMA}

    key: str = Field(sa_column=Column(Text, primary_key=True))
    topic: str = Field(sa_column=Column(String(64), nullable=False))
    processed_at: datetime = Field(sa_column=_ts(nullable=False))


class NotificationVersion(SQLModel, table=True):
    """Every ``(notification_id, version)`` seen: the dedup key of notification records and
    the moment that version was emitted (base of created -> delivered latency)."""

    __tablename__ = "notification_versions"
    __table_args__ = {"schema": SCHEMA}

    notification_id: str = Field(sa_column=Column(Text, primary_key=True))
    version: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    emitted_at: datetime = Field(sa_column=_ts(nullable=False))
    type: str = Field(sa_column=Column(String(100), nullable=False))


class NotificationState(SQLModel, table=True):
    """Per-notification funnel facts; each timestamp is set once ("first time" semantics).

    ``type``/``created_day`` (the cohort) may arrive after some facts (a status or a
    read consumed before the notification); facts recorded without a cohort are
    counted at the moment the cohort becomes known.
    """

    __tablename__ = "notification_state"
    __table_args__ = {"schema": SCHEMA}

    notification_id: str = Field(sa_column=Column(Text, primary_key=True))
    type: str | None = Field(default=None, sa_column=Column(String(100), nullable=True))
    created_day: date | None = Field(default=None, sa_column=Column(Date, nullable=True))
    created_at: datetime | None = Field(default=None, sa_column=_ts())
    seen_at: datetime | None = Field(default=None, sa_column=_ts())
    delivered_in_app: datetime | None = Field(default=None, sa_column=_ts())
    delivered_push: datetime | None = Field(default=None, sa_column=_ts())
    delivered_email: datetime | None = Field(default=None, sa_column=_ts())
    read_at: datetime | None = Field(default=None, sa_column=_ts())
    clicked_at: datetime | None = Field(default=None, sa_column=_ts())
    clicked_channel: str | None = Field(default=None, sa_column=Column(String(16), nullable=True))
    pending_failures: list[list[str]] = Field(
        default_factory=list, sa_column=Column(JSONB, nullable=False, server_default="[]")
    )


class PendingDelivery(SQLModel, table=True):
    """A delivery whose notification version was not yet seen: its latency is computed
    when the version arrives."""

    __tablename__ = "pending_deliveries"
    __table_args__ = {"schema": SCHEMA}

    status_id: str = Field(sa_column=Column(Text, primary_key=True))
    notification_id: str = Field(sa_column=Column(Text, nullable=False))
    version: int = Field(sa_column=Column(BigInteger, nullable=False))
    channel: str = Field(sa_column=Column(String(16), nullable=False))
    delivered_at: datetime = Field(sa_column=_ts(nullable=False))


class DailyCount(SQLModel, table=True):
    """A counter per UTC day x type x channel x metric x reason (see ``domain.counters``)."""

    __tablename__ = "daily_counts"
    __table_args__ = {"schema": SCHEMA}

    day: date = Field(sa_column=Column(Date, primary_key=True))
    type: str = Field(sa_column=Column(String(100), primary_key=True))
    channel: str = Field(sa_column=Column(String(16), primary_key=True))
    metric: str = Field(sa_column=Column(String(32), primary_key=True))
    reason: str = Field(sa_column=Column(String(100), primary_key=True))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class LatencyBucket(SQLModel, table=True):
    """One non-empty bucket of a latency histogram per UTC minute x stage x channel x type
    (bucket layout: ``domain.latency``)."""

    __tablename__ = "latency_buckets"
    __table_args__ = {"schema": SCHEMA}

    minute: datetime = Field(sa_column=_ts(nullable=False, primary_key=True))
    stage: str = Field(sa_column=Column(String(32), primary_key=True))
    channel: str = Field(sa_column=Column(String(16), primary_key=True))
    type: str = Field(sa_column=Column(String(100), primary_key=True))
    bucket: int = Field(sa_column=Column(SmallInteger, primary_key=True, autoincrement=False))
    count: int = Field(sa_column=Column(BigInteger, nullable=False))


class PresenceSession(SQLModel, table=True):
    """Latest presence of a user on one gateway instance (newest ``occurred_at`` wins)."""

    __tablename__ = "presence_sessions"
    __table_args__ = {"schema": SCHEMA}

    user_id: str = Field(sa_column=Column(Text, primary_key=True))
    instance_id: str = Field(sa_column=Column(Text, primary_key=True))
    online: bool = Field(nullable=False)
    sessions: int = Field(nullable=False)
    updated_at: datetime = Field(sa_column=_ts(nullable=False))


class PresenceMinute(SQLModel, table=True):
    """Users online per UTC minute as a net change (``delta``) plus arrivals and departures;
    the level at a minute is the sum of the deltas up to and including it."""

    __tablename__ = "presence_minutes"
    __table_args__ = {"schema": SCHEMA}

    minute: datetime = Field(sa_column=_ts(nullable=False, primary_key=True))
    delta: int = Field(nullable=False)
    went_online: int = Field(nullable=False)
    went_offline: int = Field(nullable=False)
