"""Tests of throw-away database creation and removal."""

from __future__ import annotations

import uuid

import pytest

from clarion_devstack.databases import (
    create_database,
    database_name,
    drop_database,
    list_databases,
)
from clarion_devstack.probes import asyncpg_dsn, with_database
from clarion_devstack.stack import StackInfo


def test_database_name_reads_the_url_path() -> None:
    assert database_name("postgresql+asyncpg://u:p@h:1/clarion") == "clarion"
    assert database_name("postgresql://u:p@h:1") == ""


@pytest.mark.parametrize("name", ["Bad-Name", "1abc", "", "x" * 64, 'a"; DROP'])
def test_invalid_names_are_refused_before_any_connection(name: str) -> None:
    # Port 9 (discard) on loopback: nothing is contacted because validation comes first.
    with pytest.raises(ValueError, match="lowercase"):
        create_database("postgresql+asyncpg://u:p@127.0.0.1:9/db", name)


def test_the_maintenance_database_is_never_dropped() -> None:
    with pytest.raises(ValueError, match="maintenance"):
        drop_database("postgresql+asyncpg://u:p@127.0.0.1:9/postgres")


def test_drop_is_best_effort_when_the_server_is_unreachable() -> None:
    assert drop_database("postgresql+asyncpg://u:p@127.0.0.1:9/t_gone") is False


@pytest.mark.integration
async def test_create_then_drop_a_database(devstack: StackInfo) -> None:
    name = f"t_{uuid.uuid4().hex[:8]}"
    url = create_database(devstack.database_url, name)
    assert url == with_database(devstack.database_url, name)
    assert name in list_databases(url)

    import asyncpg

    # An open session must not block the drop (DROP DATABASE ... WITH (FORCE)).
    lingering = await asyncpg.connect(asyncpg_dsn(url))
    try:
        assert drop_database(url) is True
    finally:
        await lingering.close()
    assert name not in list_databases(devstack.database_url)
    assert drop_database(url) is False
