"""Alembic environment of analytics: every table lives in the ``analytics`` schema."""

from sqlmodel import SQLModel

from clarion_analytics.adapters import tables
from clarion_kit.db import run_migrations_online

run_migrations_online(
    target_metadata=SQLModel.metadata,
    version_table_schema=tables.SCHEMA,
    include_schemas=True,
)
