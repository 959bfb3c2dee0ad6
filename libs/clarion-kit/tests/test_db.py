"""Async engine and programmatic Alembic upgrades against the devstack's PostgreSQL."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from sqlalchemy import Column, Integer, MetaData, String, Table, insert, select, text

from clarion_kit.db import create_engine, ping, session_maker, upgrade

pytestmark = pytest.mark.integration


# Own MetaData, not SQLModel.metadata: other packages' tests share this process.
things = Table(
    "things",
    MetaData(),
    Column("id", Integer, primary_key=True),
    Column("name", String(50), nullable=False),
    schema="kit",
)


ENV_PY = """
from sqlalchemy import MetaData
from clarion_kit.db import run_migrations_online

run_migrations_online(MetaData(), version_table_schema="kit")
"""

REVISION = '''
"""create kit.things"""
from alembic import op
import sqlalchemy as sa

revision = "0001"
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.create_table(
        "things",
        sa.Column("id", sa.Integer, primary_key=True),
        sa.Column("name", sa.String(50), nullable=False),
        schema="kit",
    )


def downgrade() -> None:
    op.drop_table("things", schema="kit")
'''

SCRIPT_MAKO = '''"""${message}"""
revision = ${repr(up_revision)}
down_revision = ${repr(down_revision)}
'''


@pytest.fixture
def migrations(tmp_path: Path) -> Path:
    root = tmp_path / "migrations"
    (root / "versions").mkdir(parents=True)
    (root / "env.py").write_text(textwrap.dedent(ENV_PY))
    (root / "script.py.mako").write_text(SCRIPT_MAKO)
    (root / "versions" / "0001_things.py").write_text(textwrap.dedent(REVISION))
    return root


async def test_upgrade_then_use(fresh_database_url: str, migrations: Path) -> None:
    await upgrade(fresh_database_url, migrations)
    await upgrade(fresh_database_url, migrations)  # at head already: a no-op

    engine = create_engine(fresh_database_url)
    try:
        await ping(engine)
        sessions = session_maker(engine)
        async with sessions() as session, session.begin():
            await session.exec(insert(things).values([{"name": "a"}, {"name": "b"}]))
        async with sessions() as session:
            names = sorted((await session.exec(select(things.c.name))).scalars())
            query = text("SELECT version_num FROM kit.alembic_version")
            version = (await session.exec(query)).scalar()
    finally:
        await engine.dispose()
    assert names == ["a", "b"]
    assert version == "0001"


async def test_ping_fails_for_unreachable_database() -> None:
    engine = create_engine("postgresql+asyncpg://nobody:x@127.0.0.1:1/none", pool_pre_ping=False)
    try:
        with pytest.raises(ConnectionRefusedError):
            await ping(engine)
    finally:
        await engine.dispose()


async def test_commits_are_synchronous_whatever_the_database_default(
    fresh_database_url: str,
) -> None:
    # A database whose default would let a crash lose acknowledged commits.
    database = fresh_database_url.rsplit("/", 1)[1]
    admin = create_engine(fresh_database_url, pool_pre_ping=False)
    try:
        async with admin.connect() as conn:
            await conn.execute(text(f'ALTER DATABASE "{database}" SET synchronous_commit = off'))
            await conn.commit()
    finally:
        await admin.dispose()
    plain = create_engine(fresh_database_url, connect_args={"server_settings": {}})
    engine = create_engine(fresh_database_url)
    try:
        async with plain.connect() as conn:
            assert (await conn.execute(text("SHOW synchronous_commit"))).scalar() == "off"
        async with engine.connect() as conn:
            assert (await conn.execute(text("SHOW synchronous_commit"))).scalar() == "on"
    finally:
        await plain.dispose()
        await engine.dispose()
