"""Consumer-group lag of the pipeline, on the embedded broker."""

from __future__ import annotations

import pytest

from clarion_contracts.registry import NOTIFICATIONS
from clarion_devstack.drain import pipeline_lag
from clarion_devstack.stack import StackInfo


@pytest.mark.integration
@pytest.mark.timeout(120)
async def test_pipeline_lag_per_group_and_only_the_named_services(
    devstack: StackInfo, topic_prefix: str
) -> None:
    from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    bootstrap = devstack.kafka_bootstrap_servers
    topic = topic_prefix + NOTIFICATIONS.name
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic, 1, 1)])
    finally:
        await admin.close()
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
    await producer.start()
    try:
        for n in range(5):
            await producer.send_and_wait(topic, f"n{n}".encode(), key=b"k")
    finally:
        await producer.stop()

    tp = TopicPartition(topic, 0)
    for service, done in (("aggregator", 2), ("analytics", 5)):
        consumer = AIOKafkaConsumer(
            bootstrap_servers=bootstrap,
            group_id=topic_prefix + service,
            enable_auto_commit=False,
        )
        await consumer.start()
        try:
            consumer.assign([tp])
            await consumer.commit({tp: done})
        finally:
            await consumer.stop()

    everything = await pipeline_lag(bootstrap, topic_prefix)
    assert everything[topic_prefix + "aggregator"] == 3
    assert everything[topic_prefix + "analytics"] == 0
    only = await pipeline_lag(bootstrap, topic_prefix, only=("aggregator", "gateway"))
    assert only == {topic_prefix + "aggregator": 3}
    assert await pipeline_lag(bootstrap, topic_prefix + "elsewhere.") == {}


@pytest.mark.integration
async def test_a_pipeline_whose_expected_group_never_committed_is_not_drained(
    devstack: StackInfo, topic_prefix: str
) -> None:
    from aiokafka.admin import AIOKafkaAdminClient, NewTopic

    from clarion_devstack.drain import wait_drained

    bootstrap = devstack.kafka_bootstrap_servers
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        await admin.create_topics([NewTopic(topic_prefix + NOTIFICATIONS.name, 1, 1)])
    finally:
        await admin.close()
    # No group has committed anything: without expectations that reads as drained...
    assert await wait_drained(bootstrap, topic_prefix=topic_prefix, timeout=10, settle=0.2) == {}
    # ...but a consumer still joining its group has not consumed anything yet.
    with pytest.raises(TimeoutError, match="not committed yet: \\['aggregator'\\]"):
        await wait_drained(
            bootstrap, topic_prefix=topic_prefix, timeout=1.5, settle=0.2, expect=("aggregator",)
        )
