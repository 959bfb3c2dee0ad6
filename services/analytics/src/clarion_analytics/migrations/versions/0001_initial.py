"""Analytics aggregates: dedup keys, notification facts, counters, latency histograms, presence.

Revision ID: 0001
Revises:
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SCHEMA = "analytics"


def _ts(name: str, *, nullable: bool = True, primary_key: bool = False) -> sa.Column:  # type: ignore[type-arg]
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable, primary_key=primary_key)


def upgrade() -> None:
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    op.create_table(
        "processed_messages",
        sa.Column("key", sa.Text, primary_key=True),
        sa.Column("topic", sa.String(64), nullable=False),
        _ts("processed_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_processed_messages_processed_at",
        "processed_messages",
        ["processed_at"],
        schema=SCHEMA,
    )
    op.create_table(
        "notification_versions",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("version", sa.BigInteger, primary_key=True, autoincrement=False),
        _ts("emitted_at", nullable=False),
        sa.Column("type", sa.String(100), nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "notification_state",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("type", sa.String(100), nullable=True),
        sa.Column("created_day", sa.Date, nullable=True),
        _ts("created_at"),
        _ts("seen_at"),
        _ts("delivered_in_app"),
        _ts("delivered_push"),
        _ts("delivered_email"),
        _ts("read_at"),
        _ts("clicked_at"),
        sa.Column("clicked_channel", sa.String(16), nullable=True),
        sa.Column(
            "pending_failures",
            postgresql.JSONB,
            nullable=False,
            server_default=sa.text("'[]'::jsonb"),
        ),
        schema=SCHEMA,
    )
    op.create_table(
        "pending_deliveries",
        sa.Column("status_id", sa.Text, primary_key=True),
        sa.Column("notification_id", sa.Text, nullable=False),
        sa.Column("version", sa.BigInteger, nullable=False),
        sa.Column("channel", sa.String(16), nullable=False),
        _ts("delivered_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_analytics_pending_deliveries_notification_id",
        "pending_deliveries",
        ["notification_id"],
        schema=SCHEMA,
    )
    op.create_table(
        "daily_counts",
        sa.Column("day", sa.Date, primary_key=True),
        sa.Column("type", sa.String(100), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("metric", sa.String(32), primary_key=True),
        sa.Column("reason", sa.String(100), primary_key=True),
        sa.Column("count", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "latency_buckets",
        _ts("minute", nullable=False, primary_key=True),
        sa.Column("stage", sa.String(32), primary_key=True),
        sa.Column("channel", sa.String(16), primary_key=True),
        sa.Column("type", sa.String(100), primary_key=True),
        sa.Column("bucket", sa.SmallInteger, primary_key=True, autoincrement=False),
        sa.Column("count", sa.BigInteger, nullable=False),
        schema=SCHEMA,
    )
    op.create_table(
        "presence_sessions",
        sa.Column("user_id", sa.Text, primary_key=True),
        sa.Column("instance_id", sa.Text, primary_key=True),
        sa.Column("online", sa.Boolean, nullable=False),
        sa.Column("sessions", sa.Integer, nullable=False),
        _ts("updated_at", nullable=False),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_presence_sessions_online_user",
        "presence_sessions",
        ["user_id"],
        schema=SCHEMA,
        postgresql_where=sa.text("online"),
    )
    op.create_table(
        "presence_minutes",
        _ts("minute", nullable=False, primary_key=True),
        sa.Column("delta", sa.Integer, nullable=False),
        sa.Column("went_online", sa.Integer, nullable=False),
        sa.Column("went_offline", sa.Integer, nullable=False),
        schema=SCHEMA,
    )


def downgrade() -> None:
    for table in (
        "presence_minutes",
        "presence_sessions",
        "latency_buckets",
        "daily_counts",
        "pending_deliveries",
        "notification_state",
        "notification_versions",
        "processed_messages",
    ):
        op.drop_table(table, schema=SCHEMA)
