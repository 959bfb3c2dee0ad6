"""Inbox, preferences, profiles and push subscriptions of ingest-api.

Revision ID: 0001_initial
Revises:
Create Date: 2026-11-24
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB

revision = "0001_initial"
down_revision = None
branch_labels = None
depends_on = None

SCHEMA = "ingest"


def _tz(name: str, nullable: bool = False) -> sa.Column[object]:
    return sa.Column(name, sa.DateTime(timezone=True), nullable=nullable)


def _json(name: str, default: str) -> sa.Column[object]:
    return sa.Column(name, JSONB, nullable=False, server_default=sa.text(f"'{default}'::jsonb"))


def upgrade() -> None:
    """Create the ingest schema's tables and indexes."""
    op.execute(f'CREATE SCHEMA IF NOT EXISTS "{SCHEMA}"')
    op.create_table(
        "inbox",
        sa.Column("notification_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("version", sa.Integer, nullable=False),
        sa.Column("type", sa.Text, nullable=False),
        sa.Column("category", sa.Text, nullable=False),
        sa.Column("group_key", sa.Text, nullable=False),
        sa.Column("title", sa.Text, nullable=False),
        sa.Column("body", sa.Text, nullable=False),
        sa.Column("body_html", sa.Text, nullable=False),
        sa.Column("url", sa.Text, nullable=True),
        sa.Column("priority", sa.Text, nullable=False),
        _json("actors", "[]"),
        sa.Column("actor_count", sa.Integer, nullable=False),
        _json("object", "{}"),
        _json("data", "{}"),
        _json("channels", "[]"),
        _json("deliveries", "{}"),
        _tz("created_at"),
        _tz("updated_at"),
        _tz("read_at", nullable=True),
        _tz("deleted_at", nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_inbox_user_order",
        "inbox",
        ["user_id", sa.text("updated_at DESC"), sa.text("notification_id DESC")],
        schema=SCHEMA,
        postgresql_where=sa.text("deleted_at IS NULL"),
    )
    op.create_index(
        "ix_inbox_user_unread",
        "inbox",
        ["user_id", "category"],
        schema=SCHEMA,
        postgresql_where=sa.text("read_at IS NULL AND deleted_at IS NULL"),
    )
    for table in ("preferences", "profiles"):
        op.create_table(
            table,
            sa.Column("user_id", sa.Text, primary_key=True),
            _json("document", "{}"),
            _tz("updated_at"),
            schema=SCHEMA,
        )
    op.create_table(
        "push_subscriptions",
        sa.Column("subscription_id", sa.Text, primary_key=True),
        sa.Column("user_id", sa.Text, nullable=False),
        sa.Column("endpoint", sa.Text, nullable=False),
        sa.Column("p256dh", sa.Text, nullable=False),
        sa.Column("auth", sa.Text, nullable=False),
        sa.Column("user_agent", sa.Text, nullable=True),
        sa.Column("active", sa.Boolean, nullable=False),
        _tz("updated_at"),
        schema=SCHEMA,
    )
    op.create_index("ix_push_subscriptions_user", "push_subscriptions", ["user_id"], schema=SCHEMA)


def downgrade() -> None:
    """Drop every ingest-api table."""
    op.drop_table("push_subscriptions", schema=SCHEMA)
    op.drop_table("profiles", schema=SCHEMA)
    op.drop_table("preferences", schema=SCHEMA)
    op.drop_table("inbox", schema=SCHEMA)
