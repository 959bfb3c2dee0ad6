"""Creating and dropping throw-away PostgreSQL databases on a stack's server."""

from __future__ import annotations

import re
from urllib.parse import urlsplit

from clarion_devstack.probes import asyncpg_dsn, with_database
from clarion_devstack.stack import run_coroutine

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


def _check_name(name: str) -> str:
    if not _NAME.match(name):
        raise ValueError(
            f"database name {name!r} must be 1-63 lowercase letters, digits or '_' "
            "and not start with a digit"
        )
    return name


def database_name(database_url: str) -> str:
    """Return the database name in the path of a PostgreSQL URL (``""`` when none)."""
    return urlsplit(database_url).path.lstrip("/")


def create_database(server_url: str, name: str) -> str:
    """Create an empty database ``name`` on the server of ``server_url``.

    Connects to the server's ``postgres`` maintenance database with the credentials
    of ``server_url`` (which need the ``CREATEDB`` privilege).

    Args:
        server_url: URL of any database on the server (SQLAlchemy or libpq form).
        name: new database name; lowercase identifier of at most 63 characters.

    Returns:
        ``server_url`` with its database replaced by ``name`` (same scheme/driver).

    Raises:
        ValueError: when ``name`` is not a plain lowercase identifier.
        asyncpg.DuplicateDatabaseError: when it already exists.
        Exception: connection errors of asyncpg.
    """
    _check_name(name)

    async def create() -> None:
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(with_database(server_url, "postgres")))
        try:
            await conn.execute(f'CREATE DATABASE "{name}"')
        finally:
            await conn.close()

    run_coroutine(create)
    return with_database(server_url, name)


def list_databases(server_url: str) -> set[str]:
    """Return the names of every database on the server of ``server_url``.

    Connects to the server's ``postgres`` maintenance database with the credentials of
    ``server_url``.

    Args:
        server_url: URL of any database on the server (SQLAlchemy or libpq form).

    Returns:
        The ``datname`` of every row of ``pg_database`` (templates included).

    Raises:
        Exception: connection errors of asyncpg.
    """

    async def fetch() -> set[str]:
        import asyncpg

        conn = await asyncpg.connect(asyncpg_dsn(with_database(server_url, "postgres")))
        try:
            return {row["datname"] for row in await conn.fetch("SELECT datname FROM pg_database")}
        finally:
            await conn.close()

    return run_coroutine(fetch)


def drop_database(database_url: str) -> bool:
    """Drop the database named in ``database_url``, disconnecting its sessions.

    Uses ``DROP DATABASE ... WITH (FORCE)`` (PostgreSQL 13+), so connections a test
    left open do not block it. Best-effort cleanup: server errors are not raised.

    Args:
        database_url: URL whose path names the database to drop.

    Returns:
        ``True`` when dropped; ``False`` when it did not exist or the server refused or
        could not be reached.

    Raises:
        ValueError: when the URL names no valid database or names ``postgres``.
    """
    name = _check_name(database_name(database_url))
    if name == "postgres":
        raise ValueError("refusing to drop the maintenance database")

    async def drop() -> bool:
        import asyncpg

        conn = await asyncpg.connect(
            asyncpg_dsn(with_database(database_url, "postgres")), timeout=10
        )
        try:
            exists = await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", name)
            if exists:
                await conn.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
            return bool(exists)
        finally:
            await conn.close()

    try:
        return run_coroutine(drop)
    except Exception:  # cleanup must not turn a passing test into an error
        return False
