"""PostgreSQL access: SQLAlchemy async engine (asyncpg) for SQLModel, and Alembic upgrades.

Each database-owning service keeps its own Alembic directory and its own schema or
table names. A migrations ``env.py`` uses the sync-to-async pattern::

    from clarion_kit.db import run_migrations_online
    run_migrations_online(target_metadata=SQLModel.metadata, version_table_schema="ingest")

and :func:`upgrade` runs it programmatically at start-up or in tests.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import pool, text
from sqlalchemy.ext.asyncio import AsyncEngine, async_sessionmaker, create_async_engine
from sqlmodel.ext.asyncio.session import AsyncSession as SQLModelSession

if TYPE_CHECKING:
    from sqlalchemy import Connection, MetaData

    from clarion_kit.settings import ServiceSettings


def create_engine(settings: ServiceSettings | str, **overrides: Any) -> AsyncEngine:
    """Return an async engine for ``settings.database_url`` (``postgresql+asyncpg://``).

    No connection is opened until first use; dispose it with ``await engine.dispose()``.
    ``pool_pre_ping`` is on so connections dropped by the server are replaced.

    Every connection runs with ``synchronous_commit = on`` whatever the server's or
    database's default: consumers commit their Kafka offsets once a transaction
    returned, and with asynchronous commit a PostgreSQL crash loses the last
    acknowledged transactions (up to three ``wal_writer_delay``), so those records
    would be lost for good. A ``connect_args`` override keeps this setting unless it
    names ``server_settings`` itself.

    Args:
        settings: service settings, or a database URL.
        **overrides: keyword arguments for ``sqlalchemy.ext.asyncio.create_async_engine``.
    """
    url = settings if isinstance(settings, str) else settings.database_url
    options: dict[str, Any] = {"pool_pre_ping": True, "pool_size": 5, "max_overflow": 10}
    connect_args = dict(overrides.pop("connect_args", {}))
    connect_args.setdefault("server_settings", {"synchronous_commit": "on"})
    options.update(overrides)
    return create_async_engine(url, connect_args=connect_args, **options)


def session_maker(engine: AsyncEngine) -> async_sessionmaker[SQLModelSession]:
    """A factory of SQLModel async sessions bound to ``engine``.

    Sessions are ``sqlmodel.ext.asyncio.session.AsyncSession`` (a SQLAlchemy
    ``AsyncSession`` with ``exec()`` for ``select(Model)``); objects stay usable after
    commit (``expire_on_commit=False``). Usage::

        async with sessions() as session, session.begin():
            session.add(row)
    """
    return async_sessionmaker(engine, class_=SQLModelSession, expire_on_commit=False)


async def ping(engine: AsyncEngine) -> None:
    """Readiness check: run ``SELECT 1``.

    Raises:
        sqlalchemy.exc.SQLAlchemyError / OSError: the database is unreachable.
    """
    async with engine.connect() as conn:
        await conn.execute(text("SELECT 1"))


def _alembic_config(database_url: str, migrations_dir: str | Path) -> Any:
    from alembic.config import Config

    cfg = Config()
    cfg.set_main_option("script_location", str(migrations_dir))
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def upgrade_sync(database_url: str, migrations_dir: str | Path, revision: str = "head") -> None:
    """Run ``alembic upgrade <revision>`` in this thread (no event loop may be running).

    Raises:
        alembic.util.exc.CommandError: unknown revision or broken migration scripts.
        sqlalchemy.exc.SQLAlchemyError: a migration failed (it is rolled back).
    """
    from alembic import command

    command.upgrade(_alembic_config(database_url, migrations_dir), revision)


async def upgrade(database_url: str, migrations_dir: str | Path, revision: str = "head") -> None:
    """Run the Alembic migrations in ``migrations_dir`` up to ``revision``.

    The ``env.py`` there calls :func:`run_migrations_online`, which needs its own
    event loop, so the upgrade runs in a worker thread and this coroutine awaits it.

    Args:
        database_url: ``postgresql+asyncpg://...``.
        migrations_dir: the Alembic script directory (holding ``env.py`` and ``versions/``).
        revision: target revision, default ``head``.

    Raises:
        alembic.util.exc.CommandError / sqlalchemy.exc.SQLAlchemyError: as :func:`upgrade_sync`.
    """
    await asyncio.to_thread(upgrade_sync, database_url, migrations_dir, revision)


def run_migrations_online(
    target_metadata: MetaData | None = None,
    *,
    version_table_schema: str | None = None,
    include_schemas: bool = False,
    **configure: Any,
) -> None:
    """Body of an Alembic ``env.py``: run migrations over an asyncpg connection.

    Reads the URL from the Alembic config (``sqlalchemy.url``, set by :func:`upgrade`).
    When ``version_table_schema`` is given, that schema is created first and holds
    ``alembic_version``, so several services can share one database.
    Offline (``--sql``) mode is supported too.
    """
    from alembic import context

    config = context.config
    url = config.get_main_option("sqlalchemy.url")
    if url is None:
        raise RuntimeError("sqlalchemy.url is not set in the Alembic config")

    def configure_ctx(**kwargs: Any) -> None:
        context.configure(
            target_metadata=target_metadata,
            version_table_schema=version_table_schema,
            include_schemas=include_schemas,
            **configure,
            **kwargs,
        )

    if context.is_offline_mode():
        configure_ctx(url=url, literal_binds=True)
        with context.begin_transaction():
            context.run_migrations()
        return

    def do_run(connection: Connection) -> None:
        if version_table_schema:
            connection.execute(text(f'CREATE SCHEMA IF NOT EXISTS "{version_table_schema}"'))
        configure_ctx(connection=connection)
        with context.begin_transaction():
            context.run_migrations()

    async def run_async() -> None:
        engine = create_async_engine(url, poolclass=pool.NullPool)
        try:
            async with engine.begin() as conn:
                await conn.run_sync(do_run)
        finally:
            await engine.dispose()

    asyncio.run(run_async())
