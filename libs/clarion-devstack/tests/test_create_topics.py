"""``clarion deploy create-topics`` against the embedded Kafka-protocol broker."""

from __future__ import annotations

from typing import Any

import pytest
from aiokafka.admin import AIOKafkaAdminClient
from typer.testing import CliRunner

from clarion_contracts.registry import TOPICS
from clarion_devstack import topics
from clarion_devstack.commands import deploy

pytestmark = pytest.mark.integration


async def _partitions(bootstrap: str, names: list[str]) -> dict[str, int]:
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap, request_timeout_ms=10_000)
    await admin.start()
    try:
        described = await admin.describe_topics(names)
    finally:
        await admin.close()
    return {t["topic"]: len(t["partitions"]) for t in described if t["error_code"] == 0}


async def test_creates_every_topic_and_dlq_once(devstack: Any, topic_prefix: str) -> None:
    bootstrap = devstack.kafka_bootstrap_servers
    first = await topics.create_topics(bootstrap, topic_prefix=topic_prefix)
    expected = [topic_prefix + p.name for p in topics.topic_plans()]
    assert sorted(first.created) == sorted(expected)
    assert first.existing == []

    again = await topics.create_topics(bootstrap, topic_prefix=topic_prefix)
    assert again.created == []
    assert sorted(again.existing) == sorted(expected)

    partitions = await _partitions(bootstrap, expected)
    for spec in TOPICS:
        assert partitions[topic_prefix + spec.name] == spec.partitions
        assert partitions[topic_prefix + spec.dlq] == spec.partitions


async def test_partition_override(devstack: Any, topic_prefix: str) -> None:
    report = await topics.create_topics(
        devstack.kafka_bootstrap_servers,
        topic_prefix=topic_prefix,
        partitions_override=2,
        specs=TOPICS[:1],
    )
    assert report.created == [topic_prefix + TOPICS[0].name, topic_prefix + TOPICS[0].dlq]
    partitions = await _partitions(devstack.kafka_bootstrap_servers, report.created)
    assert set(partitions.values()) == {2}


def test_command_reports_and_fails_on_unreachable_broker(devstack: Any, topic_prefix: str) -> None:
    runner = CliRunner()
    ok = runner.invoke(
        deploy.app,
        [
            "create-topics",
            "--bootstrap-servers",
            devstack.kafka_bootstrap_servers,
            "--topic-prefix",
            topic_prefix,
        ],
    )
    assert ok.exit_code == 0, ok.output
    assert f"created {topic_prefix}{TOPICS[0].name}" in ok.output
    down = runner.invoke(
        deploy.app,
        ["create-topics", "--bootstrap-servers", "127.0.0.1:1", "--timeout", "2"],
    )
    assert down.exit_code == 1
    assert "failed" in down.output
