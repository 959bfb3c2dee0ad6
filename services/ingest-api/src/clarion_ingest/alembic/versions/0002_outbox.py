"""The transactional outbox of ingest-api.

Revision ID: 0002_outbox
Revises: 0001_initial
Create Date: 2026-12-04
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects.postgresql import JSONB, UUID

revision = "0002_outbox"
down_revision = "0001_initial"
branch_labels = None
depends_on = None

SCHEMA = "ingest"


def upgrade() -> None:
    """Create ``ingest.outbox`` with its pending-rows and idempotency-key indexes."""
    op.create_table(
        "outbox",
        sa.Column("id", sa.BigInteger, sa.Identity(always=True), primary_key=True),
        sa.Column("topic", sa.Text, nullable=False),
        sa.Column("key", sa.LargeBinary, nullable=True),
        sa.Column("value", sa.LargeBinary, nullable=False),
        sa.Column("headers", JSONB, nullable=False, server_default=sa.text("'{}'::jsonb")),
        sa.Column("event_id", UUID(as_uuid=True), nullable=True),
        sa.Column(
            "created_at", sa.DateTime(timezone=True), nullable=False, server_default=sa.func.now()
        ),
        sa.Column("relayed_at", sa.DateTime(timezone=True), nullable=True),
        schema=SCHEMA,
    )
    op.create_index(
        "ix_outbox_pending",
        "outbox",
        ["id"],
        schema=SCHEMA,
        postgresql_where=sa.text("relayed_at IS NULL"),
    )
    op.create_index(
        "ux_outbox_event_key",
        "outbox",
        ["event_id", "key"],
        unique=True,
        schema=SCHEMA,
        postgresql_where=sa.text("event_id IS NOT NULL"),
    )


def downgrade() -> None:
    """Drop the outbox (records not relayed yet are lost)."""
    op.drop_table("outbox", schema=SCHEMA)
