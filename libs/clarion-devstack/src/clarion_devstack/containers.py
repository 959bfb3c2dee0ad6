"""The same three servers as Docker containers, through testcontainers.

Used by the pytest fixtures when ``CLARION_TEST_DOCKER=1`` or ``--docker`` is given,
to run the integration tests against the production engines: Apache Kafka in KRaft
mode (image ``apache/kafka``), Redis 7 and PostgreSQL 16. Needs Docker and the
optional ``docker`` extra (``pip install 'clarion-devstack[docker]'``).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

from clarion_devstack.ports import find_free_port
from clarion_devstack.stack import StackError, StackInfo, run_coroutine

KAFKA_IMAGE = "apache/kafka:3.9.1"
REDIS_IMAGE = "redis:7"
POSTGRES_IMAGE = "postgres:16"


def _require_testcontainers() -> None:
    try:
        import testcontainers  # noqa: F401
    except ImportError as exc:
        raise StackError(
            "the Docker-backed stack needs testcontainers: pip install 'clarion-devstack[docker]'"
        ) from exc


def kafka_environment(advertised_host: str, port: int) -> dict[str, str]:
    """Environment of a single-node KRaft ``apache/kafka`` container.

    The client listener binds container port ``port`` and advertises
    ``advertised_host:port``; the container is published on the same host port, so
    the address the broker puts in Metadata responses works from the host (Kafka
    clients reconnect to advertised addresses, not to the bootstrap one).

    Args:
        advertised_host: address of the Docker host as seen from the tests.
        port: host and container port of the client listener.

    Returns:
        ``KAFKA_*`` variables understood by the image's configuration script.
    """
    return {
        "KAFKA_NODE_ID": "1",
        "KAFKA_PROCESS_ROLES": "broker,controller",
        "KAFKA_LISTENERS": f"PLAINTEXT://0.0.0.0:{port},CONTROLLER://localhost:9093",
        "KAFKA_ADVERTISED_LISTENERS": f"PLAINTEXT://{advertised_host}:{port}",
        "KAFKA_LISTENER_SECURITY_PROTOCOL_MAP": "CONTROLLER:PLAINTEXT,PLAINTEXT:PLAINTEXT",
        "KAFKA_CONTROLLER_LISTENER_NAMES": "CONTROLLER",
        "KAFKA_CONTROLLER_QUORUM_VOTERS": "1@localhost:9093",
        "KAFKA_INTER_BROKER_LISTENER_NAME": "PLAINTEXT",
        "KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR": "1",
        "KAFKA_TRANSACTION_STATE_LOG_MIN_ISR": "1",
        "KAFKA_GROUP_INITIAL_REBALANCE_DELAY_MS": "0",
        # Same contract as the embedded broker: topics are created explicitly.
        "KAFKA_AUTO_CREATE_TOPICS_ENABLE": "false",
    }


@dataclass
class ContainerStack:
    """Apache Kafka, Redis and PostgreSQL containers started as one unit.

    Attributes:
        startup_timeout: seconds allowed for every container to answer.
    """

    startup_timeout: float = 180.0
    _containers: list[Any] = field(default_factory=list)
    _info: StackInfo | None = None

    @property
    def info(self) -> StackInfo:
        """Connection settings; raises :class:`StackError` when not started."""
        if self._info is None:
            raise StackError("the container stack is not running")
        return self._info

    def start(self) -> StackInfo:
        """Pull (if needed) and start the three containers; wait until each answers.

        Returns:
            The connection settings (database URL in ``postgresql+asyncpg`` form).

        Raises:
            StackError: when testcontainers is missing or a container does not answer.
            docker.errors.DockerException: when Docker is unreachable.
        """
        _require_testcontainers()
        from testcontainers.core.container import DockerContainer
        from testcontainers.postgres import PostgresContainer
        from testcontainers.redis import RedisContainer

        try:
            from testcontainers.core.docker_client import DockerClient

            docker_host = DockerClient().host()
        except Exception:  # an unusual Docker setup: fall back to the local daemon
            docker_host = "localhost"

        try:
            kafka_port = find_free_port()
            kafka = DockerContainer(KAFKA_IMAGE)
            for key, value in kafka_environment(docker_host, kafka_port).items():
                kafka.with_env(key, value)
            kafka.with_bind_ports(kafka_port, kafka_port)
            self._containers.append(kafka.start())

            redis = RedisContainer(REDIS_IMAGE)
            self._containers.append(redis.start())

            postgres = PostgresContainer(
                POSTGRES_IMAGE,
                username="clarion",
                password="clarion",
                dbname="clarion",
                driver="asyncpg",
            )
            self._containers.append(postgres.start())

            info = StackInfo(
                kafka_bootstrap_servers=f"{docker_host}:{kafka_port}",
                redis_url=(
                    f"redis://{redis.get_container_host_ip()}:{redis.get_exposed_port(6379)}/0"
                ),
                database_url=postgres.get_connection_url(),
            )
            self._wait(info)
        except BaseException:
            self.stop()
            raise
        self._info = info
        return info

    def _wait(self, info: StackInfo) -> None:
        from clarion_devstack.probes import (
            probe_kafka,
            probe_postgres,
            probe_redis,
            wait_until,
        )

        deadline = time.monotonic() + self.startup_timeout

        async def wait_all() -> None:
            await wait_until(
                lambda: probe_kafka(info.kafka_bootstrap_servers, create_topic=True),
                name="kafka",
                deadline=deadline,
            )
            await wait_until(lambda: probe_redis(info.redis_url), name="redis", deadline=deadline)
            await wait_until(
                lambda: probe_postgres(info.database_url), name="postgres", deadline=deadline
            )

        run_coroutine(wait_all)

    def stop(self) -> None:
        """Stop and remove every container started; safe to call repeatedly."""
        while self._containers:
            container = self._containers.pop()
            try:
                container.stop()
            except Exception:  # keep stopping the others; Ryuk reaps what is left
                continue
        self._info = None
