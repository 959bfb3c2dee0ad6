"""Unit tests of the Docker-backed stack's configuration (Docker itself is not needed)."""

from __future__ import annotations

import sys

import pytest

from clarion_devstack.containers import ContainerStack, kafka_environment
from clarion_devstack.stack import StackError


def test_kafka_environment_advertises_the_published_host_port() -> None:
    env = kafka_environment("docker.local", 19092)
    assert env["KAFKA_LISTENERS"].startswith("PLAINTEXT://0.0.0.0:19092,")
    assert env["KAFKA_ADVERTISED_LISTENERS"] == "PLAINTEXT://docker.local:19092"
    assert env["KAFKA_PROCESS_ROLES"] == "broker,controller"
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == "1@localhost:9093"
    assert env["KAFKA_AUTO_CREATE_TOPICS_ENABLE"] == "false"
    # A single broker cannot hold three replicas of the internal topics.
    assert env["KAFKA_OFFSETS_TOPIC_REPLICATION_FACTOR"] == "1"
    assert env["KAFKA_TRANSACTION_STATE_LOG_REPLICATION_FACTOR"] == "1"


def test_without_testcontainers_start_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "testcontainers", None)  # import now raises ImportError
    stack = ContainerStack()
    with pytest.raises(StackError, match=r"clarion-devstack\[docker\]"):
        stack.start()
    with pytest.raises(StackError, match="not running"):
        _ = stack.info
