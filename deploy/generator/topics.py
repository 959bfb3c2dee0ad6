"""Topic resources from the contracts registry: Strimzi ``KafkaTopic`` objects for
Kubernetes and the docker-compose topic job's script.

Each registry topic comes with its DLQ twin, as planned by
:func:`clarion_devstack.topics.topic_plans` (the plan ``clarion deploy create-topics``
applies to a running cluster).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import yaml

from clarion_contracts.registry import TOPICS, TopicSpec
from clarion_devstack.topics import topic_plans
from generator.paths import HEADER, KAFKA_CLUSTER


def kafka_topic_resources(
    specs: Iterable[TopicSpec] = TOPICS, cluster: str = KAFKA_CLUSTER
) -> list[dict[str, Any]]:
    """Strimzi ``KafkaTopic`` resources (``kafka.strimzi.io/v1``) for ``specs`` and DLQs.

    ``spec.replicas`` is left out on purpose: the topic then takes the cluster's
    ``default.replication.factor``, set per overlay on the ``Kafka`` resource (1 in
    dev, 3 in production), so one generated file serves every environment.
    """
    resources: list[dict[str, Any]] = []
    for plan in topic_plans(specs):
        resources.append(
            {
                "apiVersion": "kafka.strimzi.io/v1",
                "kind": "KafkaTopic",
                "metadata": {
                    "name": plan.name,
                    "labels": {
                        "strimzi.io/cluster": cluster,
                        "app.kubernetes.io/part-of": "clarion",
                        "clarion.io/topic-role": "dlq" if plan.dlq else "topic",
                        "clarion.io/contract-version": f"v{plan.spec.version}",
                    },
                    "annotations": {
                        "clarion.io/description": (
                            f"Dead letters of {plan.spec.name}"
                            if plan.dlq
                            else plan.spec.description
                        ),
                        "clarion.io/key": plan.spec.key,
                    },
                },
                "spec": {
                    "topicName": plan.name,
                    "partitions": plan.partitions,
                    "config": dict(plan.config),
                },
            }
        )
    return resources


def render_k8s_topics(specs: Iterable[TopicSpec] = TOPICS) -> str:
    """The text of ``k8s/base/kafka/topics.yaml``: a header and one YAML document per topic."""
    header = "".join(f"# {line}\n" for line in HEADER.splitlines())
    docs = [
        yaml.safe_dump(resource, sort_keys=False, default_flow_style=False, width=100)
        for resource in kafka_topic_resources(specs)
    ]
    return header + "---\n" + "---\n".join(docs)


def _shell_quote(value: str) -> str:
    if value and all(c.isalnum() or c in "._-=:/,@+" for c in value):
        return value
    return "'" + value.replace("'", "'\"'\"'") + "'"


def render_compose_script(specs: Iterable[TopicSpec] = TOPICS) -> str:
    """The text of ``deploy/compose/create-topics.sh`` (POSIX sh, runs in apache/kafka).

    Environment of the script: ``KAFKA_BOOTSTRAP_SERVERS`` (default ``kafka:9092``),
    ``REPLICATION_FACTOR`` (default 1), ``TOPIC_PREFIX`` (default empty).
    """
    lines = [
        "#!/bin/sh",
        *(f"# {line}" for line in HEADER.splitlines()),
        "#",
        "# Creates every Clarion topic and its DLQ (idempotent: --if-not-exists).",
        "set -eu",
        'BOOTSTRAP="${KAFKA_BOOTSTRAP_SERVERS:-kafka:9092}"',
        'REPLICATION="${REPLICATION_FACTOR:-1}"',
        'PREFIX="${TOPIC_PREFIX:-}"',
        'KAFKA_TOPICS="${KAFKA_TOPICS_BIN:-/opt/kafka/bin/kafka-topics.sh}"',
        "",
        "create() {",
        '  name="${PREFIX}$1"',
        '  partitions="$2"',
        "  shift 2",
        '  "$KAFKA_TOPICS" --bootstrap-server "$BOOTSTRAP" --create --if-not-exists \\',
        '    --topic "$name" --partitions "$partitions" --replication-factor "$REPLICATION" "$@"',
        '  echo "topic ready: $name"',
        "}",
        "",
    ]
    for plan in topic_plans(specs):
        configs = " ".join(
            f"--config {_shell_quote(f'{key}={value}')}" for key, value in plan.config.items()
        )
        lines.append(f"create {plan.name} {plan.partitions} {configs}")
    lines.append("")
    return "\n".join(lines)
