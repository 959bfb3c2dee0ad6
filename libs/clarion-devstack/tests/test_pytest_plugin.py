"""Tests of the pytest fixtures, and round trips through the real embedded servers."""

from __future__ import annotations

import asyncio
import re
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

import pytest
from sqlmodel import Field, SQLModel, select

from clarion_devstack.databases import database_name, list_databases
from clarion_devstack.probes import asyncpg_dsn
from clarion_devstack.pytest_plugin import ENV_DOCKER, TEST_SESSION_TIMEOUT_MS, docker_requested
from clarion_devstack.stack import StackInfo

# --- unit -----------------------------------------------------------------------------


def test_the_plugin_is_loaded_through_its_entry_point(pytestconfig: pytest.Config) -> None:
    plugin = pytestconfig.pluginmanager.get_plugin("clarion_devstack")
    assert plugin is not None
    assert plugin.__name__ == "clarion_devstack.pytest_plugin"


def test_importing_the_plugin_loads_no_stack_or_client_module() -> None:
    code = (
        "import sys, clarion_devstack.pytest_plugin\n"
        "heavy = ['clarion_devstack.stack', 'aiokafka', 'asyncpg', 'redis', 'sqlalchemy']\n"
        "print([m for m in heavy if m in sys.modules])"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


def test_prefixes_are_unique_per_test_and_well_formed(topic_prefix: str, redis_prefix: str) -> None:
    assert re.fullmatch(r"t[0-9a-f]{8}\.", topic_prefix)
    assert re.fullmatch(r"t[0-9a-f]{8}:", redis_prefix)
    _seen.update({topic_prefix, redis_prefix})


_seen: set[str] = set()


def test_prefixes_differ_from_the_previous_test(topic_prefix: str, redis_prefix: str) -> None:
    assert _seen, "runs after test_prefixes_are_unique_per_test_and_well_formed"
    assert topic_prefix not in _seen
    assert redis_prefix not in _seen


@pytest.mark.parametrize(
    ("value", "option", "expected"),
    [
        ("", False, False),
        ("1", False, True),
        ("YES", False, True),
        ("0", False, False),
        ("", True, True),
    ],
)
def test_docker_switch(
    pytestconfig: pytest.Config,
    monkeypatch: pytest.MonkeyPatch,
    value: str,
    option: bool,
    expected: bool,
) -> None:
    monkeypatch.setenv(ENV_DOCKER, value)
    monkeypatch.setattr(pytestconfig.option, "docker", option)
    assert docker_requested(pytestconfig) is expected


# --- integration: fixtures ------------------------------------------------------------


@pytest.mark.integration
def test_stack_env_carries_servers_prefixes_and_environment(
    stack_env: dict[str, str], devstack: StackInfo, topic_prefix: str, redis_prefix: str
) -> None:
    assert stack_env == {
        **devstack.env(),
        "CLARION_TOPIC_PREFIX": topic_prefix,
        "CLARION_REDIS_PREFIX": redis_prefix,
        "CLARION_ENVIRONMENT": "test",
    }


@pytest.mark.integration
def test_stack_settings_carry_servers_prefixes_and_test_tuning(
    stack_settings: dict[str, Any], devstack: StackInfo, topic_prefix: str, redis_prefix: str
) -> None:
    assert stack_settings == {
        "kafka_bootstrap_servers": devstack.kafka_bootstrap_servers,
        "redis_url": devstack.redis_url,
        "database_url": devstack.database_url,
        "topic_prefix": topic_prefix,
        "redis_prefix": redis_prefix,
        "environment": "test",
        "kafka_session_timeout_ms": TEST_SESSION_TIMEOUT_MS,
        "http_port": 0,
    }


def test_wait_until_is_the_eventually_poller(wait_until: Any) -> None:
    from clarion_devstack.testing import eventually

    assert wait_until is eventually


async def _tables(url: str) -> list[str]:
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(url))
    try:
        rows = await conn.fetch("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        return [row["tablename"] for row in rows]
    finally:
        await conn.close()


@pytest.mark.integration
async def test_fresh_database_url_is_a_new_empty_database(
    fresh_database_url: str, devstack: StackInfo
) -> None:
    assert fresh_database_url.startswith("postgresql+asyncpg://")
    name = database_name(fresh_database_url)
    assert name != database_name(devstack.database_url)
    assert name in list_databases(devstack.database_url)
    assert await _tables(fresh_database_url) == []
    _fresh_names.append(name)


_fresh_names: list[str] = []


@pytest.mark.integration
async def test_fresh_database_is_dropped_after_its_test(devstack: StackInfo) -> None:
    assert _fresh_names, "runs after test_fresh_database_url_is_a_new_empty_database"
    assert _fresh_names[0] not in list_databases(devstack.database_url)


# --- integration: round trips through the servers -------------------------------------


class DevstackItem(SQLModel, table=True):
    """A row type used only to check SQLModel + asyncpg against the stack."""

    __tablename__ = "devstack_item"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(index=True)
    quantity: int


@pytest.mark.integration
async def test_postgres_round_trip_through_sqlmodel(fresh_database_url: str) -> None:
    from sqlalchemy.ext.asyncio import create_async_engine
    from sqlmodel.ext.asyncio.session import AsyncSession

    engine = create_async_engine(fresh_database_url)
    try:
        async with engine.begin() as conn:
            await conn.run_sync(
                lambda sync: SQLModel.metadata.create_all(sync, tables=[DevstackItem.__table__])  # type: ignore[list-item]
            )
        async with AsyncSession(engine) as session:
            session.add_all(
                [DevstackItem(name="bell", quantity=3), DevstackItem(name="mail", quantity=5)]
            )
            await session.commit()
        async with AsyncSession(engine) as session:
            rows = (await session.exec(select(DevstackItem).order_by(DevstackItem.name))).all()
        assert [(row.name, row.quantity) for row in rows] == [("bell", 3), ("mail", 5)]
        assert all(row.id is not None for row in rows)
    finally:
        await engine.dispose()


@pytest.mark.integration
async def test_redis_pub_sub_round_trip(devstack: StackInfo, redis_prefix: str) -> None:
    from redis.asyncio import Redis

    channel = f"{redis_prefix}notifications"
    subscriber = Redis.from_url(devstack.redis_url)
    publisher = Redis.from_url(devstack.redis_url)
    pubsub = subscriber.pubsub()
    try:
        await pubsub.subscribe(channel)
        confirmation = await pubsub.get_message(timeout=5)
        assert confirmation is not None
        assert confirmation["type"] == "subscribe"
        assert await publisher.publish(channel, b"alice liked your post") == 1
        message = await pubsub.get_message(ignore_subscribe_messages=True, timeout=5)
        assert message is not None
        assert message["channel"] == channel.encode()
        assert message["data"] == b"alice liked your post"
    finally:
        await pubsub.aclose()
        await subscriber.aclose()
        await publisher.aclose()


PARTITIONS = 4


def _consumer(bootstrap: str, topic: str, group: str) -> Any:
    from aiokafka import AIOKafkaConsumer

    return AIOKafkaConsumer(
        topic,
        bootstrap_servers=bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        # Tansu answers an empty fetch only after fetch_max_wait_ms: keep it small.
        fetch_max_wait_ms=5,
        heartbeat_interval_ms=200,
        # Tansu completes a group join only after about one session timeout: keep it short.
        session_timeout_ms=3000,
    )


async def _poll(consumers: Iterable[Any], received: dict[int, list[bytes]]) -> None:
    for index, consumer in enumerate(consumers):
        batches = await consumer.getmany(timeout_ms=50)
        for records in batches.values():
            received.setdefault(index, []).extend(record.value for record in records)


async def _until(
    condition: Callable[[], bool],
    poll: Callable[[], Awaitable[None]],
    what: str,
    seconds: float = 30,
) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await poll()


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_kafka_consumer_group_of_two_members_resumes_from_committed_offsets(
    devstack: StackInfo, topic_prefix: str
) -> None:
    from aiokafka import AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = devstack.kafka_bootstrap_servers
    topic = f"{topic_prefix}domain-events"
    group = f"{topic_prefix}aggregator"
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=False)
    await producer.start()
    first = _consumer(bootstrap, topic, group)
    second = _consumer(bootstrap, topic, group)
    try:
        await admin.create_topics(
            [NewTopic(topic, num_partitions=PARTITIONS, replication_factor=1)]
        )
        # Joining together lets the group form in one rebalance.
        await asyncio.gather(first.start(), second.start())
        members = (first, second)
        received: dict[int, list[bytes]] = {}

        def assigned() -> list[set[int]]:
            return [{tp.partition for tp in c.assignment()} for c in members]

        await _until(
            lambda: all(assigned()) and set.union(*assigned()) == set(range(PARTITIONS)),
            lambda: _poll(members, received),
            "both members to own partitions",
        )
        a, b = assigned()
        assert not a & b, "a partition is owned by two members"
        assert received == {}, "nothing was produced yet"

        batch_one = [f"one-{i}".encode() for i in range(40)]
        for i, value in enumerate(batch_one):
            await producer.send_and_wait(
                topic, value, key=str(i).encode(), partition=i % PARTITIONS
            )
        await _until(
            lambda: sum(map(len, received.values())) >= len(batch_one),
            lambda: _poll(members, received),
            "the first batch",
        )
        assert sorted(received[0] + received[1]) == sorted(batch_one)
        assert received[0], "the first member consumed its partitions"
        assert received[1], "the second member consumed its partitions"
        for consumer in members:
            await consumer.commit()
        committed = {p: await first.committed(TopicPartition(topic, p)) for p in range(PARTITIONS)}
        assert committed == dict.fromkeys(range(PARTITIONS), len(batch_one) // PARTITIONS)
    finally:
        await asyncio.gather(first.stop(), second.stop())

    # A new member of the group resumes after the committed offsets.
    batch_two = [f"two-{i}".encode() for i in range(20)]
    for i, value in enumerate(batch_two):
        await producer.send_and_wait(topic, value, partition=i % PARTITIONS)
    third = _consumer(bootstrap, topic, group)
    await third.start()
    try:
        resumed: dict[int, list[bytes]] = {}
        await _until(
            lambda: len(resumed.get(0, [])) >= len(batch_two),
            lambda: _poll([third], resumed),
            "the second batch",
        )
        for _ in range(5):  # give any re-delivered record the chance to show up
            await _poll([third], resumed)
        assert sorted(resumed[0]) == sorted(batch_two), "re-read or lost records"
    finally:
        await third.stop()
        await producer.stop()
        await admin.delete_topics([topic])
        await admin.close()
