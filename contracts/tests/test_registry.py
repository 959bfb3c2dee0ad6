"""The topic registry is complete and consistent."""

from __future__ import annotations

import pytest

from clarion_contracts.base import ContractModel
from clarion_contracts.registry import TOPICS, all_topic_names, by_name

DESIGN_TOPICS = {
    "clarion.domain-events.v1",
    "clarion.notifications.v1",
    "clarion.inbox-events.v1",
    "clarion.push-requests.v1",
    "clarion.email-requests.v1",
    "clarion.delivery-status.v1",
    "clarion.preferences.v1",
    "clarion.user-profiles.v1",
    "clarion.push-subscriptions.v1",
    "clarion.presence.v1",
}


def test_every_design_topic_is_registered() -> None:
    assert {spec.name for spec in TOPICS} == DESIGN_TOPICS


@pytest.mark.parametrize("spec", TOPICS, ids=lambda s: s.name)
def test_spec_is_consistent(spec: object) -> None:
    from clarion_contracts.registry import TopicSpec

    assert isinstance(spec, TopicSpec)
    assert issubclass(spec.model, ContractModel)
    assert spec.model.model_config.get("frozen") is True
    assert spec.name.endswith(f".v{spec.version}")
    assert spec.model.model_fields["schema_version"].default == spec.version
    assert spec.dlq == spec.name + ".dlq"
    assert spec.partitions >= 1
    if spec.cleanup_policy == "compact":
        assert spec.retention_ms == -1
    assert spec.config()["cleanup.policy"] == spec.cleanup_policy


def test_by_name_resolves_dlq_to_source() -> None:
    assert by_name("clarion.presence.v1.dlq").name == "clarion.presence.v1"
    with pytest.raises(KeyError):
        by_name("clarion.unknown.v1")


def test_all_topic_names_pairs_each_topic_with_its_dlq() -> None:
    names = all_topic_names()
    assert len(names) == 2 * len(TOPICS)
    assert names[:2] == ["clarion.domain-events.v1", "clarion.domain-events.v1.dlq"]
