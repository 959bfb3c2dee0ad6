"""Alembic environment of ingest-api: migrates the ``ingest`` PostgreSQL schema.

The version table lives in the ``ingest`` schema so ingest-api's migration
history never mixes with another service's in a shared database.
"""

from __future__ import annotations

from clarion_ingest.adapters.tables import SCHEMA, metadata
from clarion_kit.db import run_migrations_online

run_migrations_online(metadata, version_table_schema=SCHEMA, include_schemas=True)
