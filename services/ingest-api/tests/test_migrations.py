"""The alembic migrations build exactly the tables the SQLModel models describe."""

from __future__ import annotations

from typing import Any

import pytest
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import Connection, text

from clarion_ingest.adapters.tables import SCHEMA, metadata
from clarion_ingest.app import MIGRATIONS_DIR
from clarion_kit.db import create_engine, upgrade

pytestmark = pytest.mark.integration


def _only_ingest(name: str | None, type_: str, parent_names: Any) -> bool:
    if type_ == "schema":
        return name == SCHEMA
    return True


def _diff(connection: Connection) -> list[Any]:
    context = MigrationContext.configure(
        connection,
        opts={
            "include_schemas": True,
            "include_name": _only_ingest,
            "version_table_schema": SCHEMA,
            "compare_server_default": False,
        },
    )
    ingest_tables = {t for t in metadata.tables.values() if t.schema == SCHEMA}
    diffs = compare_metadata(context, metadata)

    # Other packages may register SQLModel tables (and their indexes) in the same
    # metadata when their tests run in this process: ignore theirs.
    def foreign(diff: Any) -> bool:
        if not isinstance(diff, tuple):
            return False
        if diff[0] == "add_table":
            return diff[1] not in ingest_tables
        if diff[0] == "add_index":
            return diff[1].table not in ingest_tables
        return False

    return [d for d in diffs if not foreign(d)]


async def test_migrations_match_models_and_are_repeatable(fresh_database_url: str) -> None:
    await upgrade(fresh_database_url, MIGRATIONS_DIR)
    await upgrade(fresh_database_url, MIGRATIONS_DIR)  # a second run is a no-op
    engine = create_engine(fresh_database_url)
    try:
        async with engine.connect() as conn:
            version = await conn.execute(text(f"SELECT version_num FROM {SCHEMA}.alembic_version"))
            assert version.scalar_one() == "0002_outbox"
            assert await conn.run_sync(_diff) == []
    finally:
        await engine.dispose()
