"""Readiness probes: does a Kafka-protocol broker, Redis or PostgreSQL server really answer?

A TCP connect is not enough (Tansu accepts connections before it serves metadata,
PostgreSQL accepts them while it still replays WAL), so every probe performs a real
request of the server's own protocol. Each probe makes one attempt and raises on
failure; :func:`wait_until` repeats one until it succeeds or a deadline passes.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable
from urllib.parse import urlsplit, urlunsplit

#: Topic created and deleted again by :func:`probe_kafka` when ``create_topic`` is set.
PROBE_TOPIC_PREFIX = "clarion.devstack.probe."


class ProbeError(RuntimeError):
    """A server did not answer its readiness probe before the deadline."""


def asyncpg_dsn(database_url: str) -> str:
    """Turn a SQLAlchemy URL (``postgresql+asyncpg://...``) into a libpq DSN for asyncpg.

    Args:
        database_url: ``postgresql+asyncpg://user:pw@host:port/db`` or an already
            plain ``postgresql://`` / ``postgres://`` URL.

    Returns:
        The same URL with the ``+driver`` suffix removed from its scheme.
    """
    parts = urlsplit(database_url)
    scheme = parts.scheme.split("+", 1)[0]
    return urlunsplit((scheme, parts.netloc, parts.path, parts.query, parts.fragment))


def with_database(database_url: str, database: str) -> str:
    """Return ``database_url`` pointing at another database of the same server.

    Args:
        database_url: any PostgreSQL URL (SQLAlchemy or libpq form).
        database: the database name to put in the path.

    Returns:
        The URL with its path replaced by ``/<database>``, everything else kept.
    """
    parts = urlsplit(database_url)
    return urlunsplit((parts.scheme, parts.netloc, f"/{database}", parts.query, parts.fragment))


async def probe_kafka(bootstrap_servers: str, *, create_topic: bool, timeout: float = 5.0) -> None:
    """Check a Kafka-protocol broker serves metadata and, optionally, creates topics.

    Sends a Metadata request (DescribeCluster) through an aiokafka admin client; with
    ``create_topic`` it also creates a uniquely named one-partition topic and deletes it
    again, which proves the broker's storage engine accepts writes (Kafka protocol
    CreateTopics / DeleteTopics, API keys 19 and 20).

    Args:
        bootstrap_servers: ``"host:port[,host:port...]"``.
        create_topic: also round-trip a probe topic.
        timeout: seconds allowed for each request.

    Raises:
        Exception: whatever aiokafka raises when the broker does not answer
            (``KafkaConnectionError``, ``KafkaTimeoutError``...) or refuses the topic.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers,
        request_timeout_ms=int(timeout * 1000),
        client_id="clarion-devstack-probe",
    )
    try:
        await asyncio.wait_for(admin.start(), timeout)
        cluster = await asyncio.wait_for(admin.describe_cluster(), timeout)
        if not cluster.get("brokers"):
            raise ProbeError(f"Kafka at {bootstrap_servers} reports no brokers")
        if create_topic:
            topic = f"{PROBE_TOPIC_PREFIX}{uuid.uuid4().hex[:12]}"
            response = await asyncio.wait_for(
                admin.create_topics([NewTopic(topic, num_partitions=1, replication_factor=1)]),
                timeout,
            )
            errors = [err for _, err, *_ in response.topic_errors if err != 0]
            if errors:
                raise ProbeError(f"Kafka at {bootstrap_servers} refused a topic: {errors}")
            await asyncio.wait_for(admin.delete_topics([topic]), timeout)
    finally:
        await admin.close()


async def probe_redis(redis_url: str, *, timeout: float = 5.0) -> None:
    """Check a Redis server answers ``PING`` with ``PONG``.

    Args:
        redis_url: ``redis://host:port/db``.
        timeout: seconds allowed for connecting and for the command.

    Raises:
        Exception: ``redis.exceptions.ConnectionError`` / ``TimeoutError`` when it
            does not answer, :class:`ProbeError` on an unexpected reply.
    """
    from redis.asyncio import Redis

    client = Redis.from_url(redis_url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        if not await client.ping():
            raise ProbeError(f"Redis at {redis_url} did not answer PONG")
    finally:
        await client.aclose()


async def probe_postgres(database_url: str, *, timeout: float = 5.0) -> None:
    """Check a PostgreSQL server accepts a login and runs ``SELECT 1``.

    Args:
        database_url: SQLAlchemy (``postgresql+asyncpg://``) or libpq URL.
        timeout: seconds allowed for connecting and for the query.

    Raises:
        Exception: ``OSError`` / ``asyncpg`` errors (``CannotConnectNowError`` while the
            server starts up, ``InvalidPasswordError``...) when it does not answer.
    """
    import asyncpg

    conn = await asyncpg.connect(asyncpg_dsn(database_url), timeout=timeout)
    try:
        if await conn.fetchval("SELECT 1", timeout=timeout) != 1:
            raise ProbeError(f"PostgreSQL at {database_url} answered SELECT 1 wrongly")
    finally:
        await conn.close(timeout=timeout)


async def wait_until(
    probe: Callable[[], Awaitable[None]],
    *,
    name: str,
    deadline: float,
    alive: Callable[[], str | None] = lambda: None,
    interval: float = 0.05,
) -> None:
    """Repeat ``probe`` until it succeeds, the server dies or ``deadline`` passes.

    Args:
        probe: one attempt; returns on success, raises otherwise.
        name: server name used in the error message (``"kafka"``...).
        deadline: ``time.monotonic()`` value after which to give up.
        alive: returns ``None`` while the server process runs, else a description of
            why it stopped (checked between attempts so a crashed server fails fast).
        interval: seconds between attempts; doubled up to 0.5 s while it keeps failing.

    Raises:
        ProbeError: on timeout or when ``alive`` reports the server gone; the last
            probe error is chained.
    """
    last: BaseException | None = None
    while True:
        stopped = alive()
        if stopped is not None:
            raise ProbeError(f"{name} stopped while starting: {stopped}") from last
        try:
            await probe()
            return
        except Exception as exc:  # each failed attempt is retried until the deadline
            last = exc
        if time.monotonic() >= deadline:
            raise ProbeError(f"{name} did not become ready in time: {last!r}") from last
        await asyncio.sleep(interval)
        interval = min(interval * 2, 0.5)
