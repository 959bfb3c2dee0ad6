"""Kafka clients of the gateway (aiokafka): the consumer-group member and the producer.

Tansu and other brokers without idempotent producers are supported: the producer
uses ``acks="all"`` without idempotence, and consumers deduplicate (the history
script). ``fetch_max_wait_ms`` is the live-path ``kafka_fetch_max_wait_ms`` (5 ms), so
live frames are not held back by the broker's long-poll.
"""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from clarion_gateway.settings import GatewaySettings
from clarion_kit.continuity import ConsumerGuard
from clarion_kit.kafka import IntervalCommitConsumer


def create_consumer(
    settings: GatewaySettings, topics: Sequence[str], guard: ConsumerGuard | None = None
) -> AIOKafkaConsumer:
    """A consumer in group ``topic_prefix + consumer_group`` with manual commits (at-least-once).

    The group carries the topic prefix so deployments sharing a cluster under different
    prefixes never share a group. Commits reach the broker at most once per
    ``kafka_commit_interval_ms`` (:class:`clarion_kit.kafka.IntervalCommitConsumer`).
    Records come without offset gaps and broker data loss is counted and flagged on
    ``guard`` (:mod:`clarion_kit.continuity`; by default a guard from ``settings``).
    """
    return IntervalCommitConsumer(
        *topics,
        guard=guard if guard is not None else ConsumerGuard.from_settings(settings),
        commit_interval_ms=settings.kafka_commit_interval_ms,
        bootstrap_servers=settings.kafka_bootstrap_servers,
        group_id=settings.topic_prefix + settings.consumer_group,
        client_id=f"{settings.service_name}-{settings.instance_id}",
        enable_auto_commit=False,
        auto_offset_reset=settings.kafka_auto_offset_reset,
        fetch_max_wait_ms=settings.kafka_fetch_max_wait_ms,
        max_poll_records=settings.kafka_max_batch,
        session_timeout_ms=settings.kafka_session_timeout_ms,
        heartbeat_interval_ms=min(1_000, settings.kafka_session_timeout_ms // 3),
        metadata_max_age_ms=5_000,
    )


def create_producer(settings: GatewaySettings) -> AIOKafkaProducer:
    """A producer with ``acks="all"`` and no idempotence (see the module docstring)."""
    return AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers,
        client_id=f"{settings.service_name}-{settings.instance_id}",
        acks="all",
        enable_idempotence=False,
        linger_ms=5,
    )
