"""pytest plugin of Clarion: fixtures backed by the embedded development stack.

Loaded automatically through the ``pytest11`` entry point of ``clarion-devstack``.
Importing it is cheap: the stack modules are imported only when a test asks for a
stack fixture, so unit-only runs never start (or import) anything.

Fixtures:

``devstack`` (session)
    :class:`~clarion_devstack.stack.StackInfo` of a stack started on first request and
    stopped at session end: ``.kafka_bootstrap_servers``, ``.redis_url``,
    ``.database_url`` (``postgresql+asyncpg://...``) and ``.env()``. Servers named by
    ``CLARION_KAFKA_BOOTSTRAP_SERVERS`` / ``CLARION_REDIS_URL`` / ``CLARION_DATABASE_URL``
    are used instead of being started. With ``--docker`` or ``CLARION_TEST_DOCKER=1``
    the servers are Docker containers (Apache Kafka, Redis 7, PostgreSQL 16).
``topic_prefix`` (function)
    A prefix unique to the test, ``"t<8 hex>."``; put it before every topic name
    (``CLARION_TOPIC_PREFIX``) so tests sharing the broker never see each other's
    records. The broker is the same for the whole session: create the topics a test
    needs (auto-creation is not relied upon).
``redis_prefix`` (function)
    A key prefix unique to the test, ``"t<8 hex>:"`` (``CLARION_REDIS_PREFIX``).
``fresh_database_url`` (function)
    URL (``postgresql+asyncpg://...``) of a new, empty database on the stack's
    PostgreSQL server, dropped after the test (best effort).
``stack_env`` (function)
    ``dict[str, str]`` to launch service processes with: the three server URLs plus
    ``CLARION_TOPIC_PREFIX``, ``CLARION_REDIS_PREFIX`` (this test's prefixes) and
    ``CLARION_ENVIRONMENT=test``. Merge it into ``os.environ`` for a subprocess.
``stack_settings`` (function)
    The same as keyword arguments of a service's settings class, for a service run
    in-process (``EmailSettings(**stack_settings, smtp_port=...)``), plus
    ``kafka_session_timeout_ms=2000`` so its consumers join their groups quickly and
    ``http_port=0`` so it serves HTTP on a free port, beside any running stack.
``wait_until`` (function)
    :func:`clarion_devstack.testing.eventually`: ``await wait_until(predicate,
    timeout=20.0)`` polls until ``predicate`` (sync or async) returns something truthy.

Mark tests using the stack with ``@pytest.mark.integration``.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from clarion_devstack.stack import StackInfo

#: Environment variable switching the fixtures to Docker containers when set to 1/true/yes.
ENV_DOCKER = "CLARION_TEST_DOCKER"
#: Name prefix of the temporary data directories of session stacks.
DATA_DIR_PREFIX = "clarion-devstack-"
#: Consumer session timeout (ms) of services tests run: the embedded broker lets a new
#: group member join after about half of it, so a short one starts consuming sooner.
TEST_SESSION_TIMEOUT_MS = 2000


def pytest_addoption(parser: pytest.Parser) -> None:
    """Add ``--docker``: back the stack fixtures with testcontainers instead."""
    group = parser.getgroup("clarion", "Clarion development stack")
    group.addoption(
        "--docker",
        action="store_true",
        default=False,
        help=(
            "run the devstack fixtures on Docker containers (apache/kafka, redis:7, "
            f"postgres:16) instead of the embedded servers; same as {ENV_DOCKER}=1"
        ),
    )


def pytest_configure(config: pytest.Config) -> None:
    """Register the ``integration`` marker (also declared in the workspace config)."""
    config.addinivalue_line(
        "markers", "integration: needs the embedded Kafka/Redis/PostgreSQL stack"
    )


def docker_requested(config: pytest.Config) -> bool:
    """Tell whether the fixtures should use Docker containers.

    True with the ``--docker`` option or ``CLARION_TEST_DOCKER`` set to ``1``, ``true``
    or ``yes`` (case-insensitive).
    """
    if config.getoption("docker", default=False):
        return True
    return os.environ.get(ENV_DOCKER, "").strip().lower() in {"1", "true", "yes"}


def _unique(prefix: str = "t") -> str:
    return f"{prefix}{uuid.uuid4().hex[:8]}"


@pytest.fixture(scope="session")
def devstack(request: pytest.FixtureRequest) -> Iterator[StackInfo]:
    """The session's Kafka-protocol broker, Redis and PostgreSQL (see module docstring)."""
    if docker_requested(request.config):
        from clarion_devstack.containers import ContainerStack

        containers = ContainerStack()
        try:
            yield containers.start()
        finally:
            containers.stop()
        return

    from clarion_devstack.stack import Stack, StackConfig, remove_stale_data_dirs

    # A private directory outside pytest's basetemp: as root, PostgreSQL runs under
    # another account that must traverse it, and pytest keeps its own temp root 0700.
    temp_root = Path(tempfile.gettempdir())
    remove_stale_data_dirs(temp_root, DATA_DIR_PREFIX)
    data_dir = Path(tempfile.mkdtemp(prefix=DATA_DIR_PREFIX, dir=temp_root))
    data_dir.chmod(0o755)  # lets PostgreSQL's account (see above) reach its cluster here
    stack = Stack(StackConfig(data_dir=data_dir))
    try:
        yield stack.start()
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


@pytest.fixture
def topic_prefix() -> str:
    """Topic name prefix unique to this test: ``"t"`` + 8 hex digits + ``"."``."""
    return _unique() + "."


@pytest.fixture
def redis_prefix() -> str:
    """Redis key prefix unique to this test: ``"t"`` + 8 hex digits + ``":"``."""
    return _unique() + ":"


@pytest.fixture
def fresh_database_url(devstack: StackInfo) -> Iterator[str]:
    """A new empty database on the stack's PostgreSQL server; dropped after the test."""
    from clarion_devstack.databases import create_database, drop_database

    url = create_database(devstack.database_url, _unique("t_"))
    try:
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def stack_env(devstack: StackInfo, topic_prefix: str, redis_prefix: str) -> dict[str, str]:
    """Environment for service processes: server URLs, this test's prefixes, ``test`` env."""
    env = devstack.env()
    env.update(
        CLARION_TOPIC_PREFIX=topic_prefix,
        CLARION_REDIS_PREFIX=redis_prefix,
        CLARION_ENVIRONMENT="test",
    )
    return env


@pytest.fixture
def stack_settings(devstack: StackInfo, topic_prefix: str, redis_prefix: str) -> dict[str, Any]:
    """Settings keyword arguments for an in-process service (see the module docstring)."""
    return {
        **devstack.to_dict(),
        "topic_prefix": topic_prefix,
        "redis_prefix": redis_prefix,
        "environment": "test",
        "kafka_session_timeout_ms": TEST_SESSION_TIMEOUT_MS,
        "http_port": 0,
    }


@pytest.fixture
def wait_until() -> Callable[..., Awaitable[Any]]:
    """:func:`clarion_devstack.testing.eventually`, the poller of test conditions."""
    from clarion_devstack.testing import eventually

    return eventually
