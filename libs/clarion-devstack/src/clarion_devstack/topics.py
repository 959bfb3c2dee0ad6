"""Clarion's topics as a creation plan, and their creation on a running cluster.

Every topic of :mod:`clarion_contracts.registry` comes with its DLQ twin. The plan
feeds ``clarion deploy create-topics`` (aiokafka's admin client, Kafka protocol
CreateTopics) and the deploy generator under ``deploy/generator`` (Strimzi
``KafkaTopic`` resources, the compose topic job).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from clarion_contracts.registry import TOPICS, TopicSpec

_TOPIC_ALREADY_EXISTS = 36  # Kafka protocol error code TOPIC_ALREADY_EXISTS


@dataclass(frozen=True)
class TopicPlan:
    """One topic to create: registry topic or its DLQ twin.

    Attributes:
        name: topic name without runtime prefix (``clarion.notifications.v1.dlq``).
        partitions: partition count.
        config: Kafka topic configuration (``cleanup.policy``, ``retention.ms``...).
        spec: the registry entry it comes from.
        dlq: True for the dead-letter twin.
    """

    name: str
    partitions: int
    config: dict[str, str]
    spec: TopicSpec
    dlq: bool


def topic_plans(specs: Iterable[TopicSpec] = TOPICS) -> list[TopicPlan]:
    """Every topic and DLQ twin of ``specs``, each DLQ right after its topic.

    A DLQ has its source's partition count (a record keeps its partition when it is
    dead-lettered, so per-key order survives) and the registry's DLQ configuration.
    """
    plans: list[TopicPlan] = []
    for spec in specs:
        plans.append(TopicPlan(spec.name, spec.partitions, spec.config(), spec, dlq=False))
        plans.append(TopicPlan(spec.dlq, spec.partitions, spec.dlq_config(), spec, dlq=True))
    return plans


@dataclass
class CreateTopicsReport:
    """Outcome of :func:`create_topics`: runtime names created and already present."""

    created: list[str] = field(default_factory=list)
    existing: list[str] = field(default_factory=list)


async def create_topics(
    bootstrap_servers: str,
    *,
    topic_prefix: str = "",
    replication_factor: int = 1,
    partitions_override: int | None = None,
    specs: Iterable[TopicSpec] = TOPICS,
    request_timeout_ms: int = 30_000,
) -> CreateTopicsReport:
    """Create every topic of ``specs`` and its DLQ that does not exist yet (idempotent).

    Args:
        bootstrap_servers: Kafka bootstrap list, ``host:port[,host:port]``.
        topic_prefix: prepended to every name (``CLARION_TOPIC_PREFIX``).
        replication_factor: replicas per partition (1 for a single broker).
        partitions_override: create every topic with this many partitions instead.
        specs: registry entries to create.
        request_timeout_ms: admin request timeout in milliseconds.

    Returns:
        which topics were created and which already existed (one created
        concurrently by another client counts as existing).

    Raises:
        RuntimeError: the broker refused a topic (error code other than
            TOPIC_ALREADY_EXISTS, Kafka protocol CreateTopics).
        aiokafka.errors.KafkaError: the cluster is unreachable.
    """
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap_servers, request_timeout_ms=request_timeout_ms
    )
    await admin.start()
    report = CreateTopicsReport()
    try:
        present = set(await admin.list_topics())
        wanted: list[NewTopic] = []
        for plan in topic_plans(specs):
            name = topic_prefix + plan.name
            if name in present:
                report.existing.append(name)
                continue
            wanted.append(
                NewTopic(
                    name=name,
                    num_partitions=partitions_override or plan.partitions,
                    replication_factor=replication_factor,
                    topic_configs=dict(plan.config),
                )
            )
        if wanted:
            response = await admin.create_topics(wanted)
            failures: list[str] = []
            for entry in response.topic_errors:
                name, code = entry[0], entry[1]
                message = entry[2] if len(entry) > 2 else ""
                if code == 0:
                    report.created.append(name)
                elif code == _TOPIC_ALREADY_EXISTS:
                    report.existing.append(name)
                else:
                    failures.append(f"{name}: error {code} {message or ''}".strip())
            if failures:
                raise RuntimeError("topics refused by the broker: " + "; ".join(failures))
    finally:
        await admin.close()
    return report
