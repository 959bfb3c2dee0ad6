"""Tests of the readiness probes: URL helpers (unit) and probes against real servers."""

from __future__ import annotations

import time

import pytest

from clarion_devstack.ports import find_free_port
from clarion_devstack.probes import (
    ProbeError,
    asyncpg_dsn,
    probe_kafka,
    probe_postgres,
    probe_redis,
    wait_until,
    with_database,
)
from clarion_devstack.stack import StackInfo


def test_asyncpg_dsn_drops_the_sqlalchemy_driver() -> None:
    url = "postgresql+asyncpg://u:p@127.0.0.1:5432/db?sslmode=disable"
    assert asyncpg_dsn(url) == "postgresql://u:p@127.0.0.1:5432/db?sslmode=disable"
    assert asyncpg_dsn("postgres://h/db") == "postgres://h/db"


def test_with_database_replaces_only_the_path() -> None:
    url = "postgresql+asyncpg://u:p@127.0.0.1:5432/clarion"
    assert with_database(url, "t_1") == "postgresql+asyncpg://u:p@127.0.0.1:5432/t_1"


async def test_wait_until_retries_until_the_probe_succeeds() -> None:
    calls = 0

    async def flaky() -> None:
        nonlocal calls
        calls += 1
        if calls < 3:
            raise ConnectionError("not yet")

    await wait_until(flaky, name="flaky", deadline=time.monotonic() + 10, interval=0.001)
    assert calls == 3


async def test_wait_until_gives_up_at_the_deadline_with_the_last_error() -> None:
    async def never() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ProbeError, match="refused") as caught:
        await wait_until(never, name="never", deadline=time.monotonic() + 0.05, interval=0.01)
    assert isinstance(caught.value.__cause__, ConnectionError)


async def test_wait_until_fails_fast_when_the_process_died() -> None:
    async def never() -> None:
        raise ConnectionError("refused")

    with pytest.raises(ProbeError, match="stopped while starting: exit status 1"):
        await wait_until(
            never, name="dead", deadline=time.monotonic() + 60, alive=lambda: "exit status 1"
        )


@pytest.mark.integration
async def test_probes_succeed_against_the_running_stack(devstack: StackInfo) -> None:
    await probe_kafka(devstack.kafka_bootstrap_servers, create_topic=True)
    await probe_redis(devstack.redis_url)
    await probe_postgres(devstack.database_url)


@pytest.mark.integration
async def test_probes_fail_against_a_closed_port() -> None:
    from aiokafka.errors import KafkaConnectionError
    from redis.exceptions import ConnectionError as RedisConnectionError

    port = find_free_port()
    with pytest.raises(RedisConnectionError):
        await probe_redis(f"redis://127.0.0.1:{port}/0", timeout=1)
    with pytest.raises(OSError, match=r"[Cc]onnect"):
        await probe_postgres(f"postgresql+asyncpg://u:p@127.0.0.1:{port}/db", timeout=1)
    with pytest.raises(KafkaConnectionError):
        await probe_kafka(f"127.0.0.1:{port}", create_topic=False, timeout=1)
