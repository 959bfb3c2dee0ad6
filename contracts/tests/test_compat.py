"""The backward-compatibility rules, and proof that they refuse breaking changes."""

from __future__ import annotations

import copy
from pathlib import Path

import pytest

from clarion_contracts.compat import (
    IncompatibleSchemaError,
    check_compatible,
    find_incompatibilities,
)
from clarion_contracts.registry import DOMAIN_EVENTS, NOTIFICATIONS, TOPICS
from clarion_contracts.snapshots import current_schema, snapshot_path, write_snapshots


def test_identical_schemas_are_compatible() -> None:
    schema = current_schema(NOTIFICATIONS)
    assert find_incompatibilities(schema, copy.deepcopy(schema)) == []


def test_removing_a_required_field_is_refused() -> None:
    old = current_schema(DOMAIN_EVENTS)
    new = copy.deepcopy(old)
    assert "event_id" in new["required"]
    new["required"].remove("event_id")
    del new["properties"]["event_id"]
    with pytest.raises(IncompatibleSchemaError) as info:
        check_compatible(DOMAIN_EVENTS.name, old, new)
    assert any("event_id was removed" in p for p in info.value.problems)


def test_adding_an_optional_field_is_allowed() -> None:
    old = current_schema(DOMAIN_EVENTS)
    new = copy.deepcopy(old)
    new["properties"]["campaign"] = {"anyOf": [{"type": "string"}, {"type": "null"}]}
    assert find_incompatibilities(old, new) == []


def test_adding_a_required_field_is_refused() -> None:
    old = current_schema(DOMAIN_EVENTS)
    new = copy.deepcopy(old)
    new["properties"]["campaign"] = {"type": "string"}
    new["required"].append("campaign")
    assert find_incompatibilities(old, new) == ["$.campaign became required"]


def test_changing_a_field_type_is_refused() -> None:
    old = current_schema(NOTIFICATIONS)
    new = copy.deepcopy(old)
    new["properties"]["version"] = {"type": "string"}
    assert "$.version changed its schema" in find_incompatibilities(old, new)


def test_narrowing_a_nested_definition_is_refused() -> None:
    old = current_schema(DOMAIN_EVENTS)
    new = copy.deepcopy(old)
    new["$defs"]["Priority"]["enum"] = ["low", "normal"]
    assert "$defs.Priority changed enum" in find_incompatibilities(old, new)


def test_description_changes_are_cosmetic() -> None:
    old = current_schema(DOMAIN_EVENTS)
    new = copy.deepcopy(old)
    new["properties"]["type"]["description"] = "reworded"
    assert find_incompatibilities(old, new) == []


def test_write_snapshots_refuses_an_incompatible_change(tmp_path: Path) -> None:
    write_snapshots(tmp_path)
    path = snapshot_path(DOMAIN_EVENTS, tmp_path)
    # A snapshot that knew a field the code no longer has stands for a removal.
    text = path.read_text().replace('"event_id"', '"event_uuid"')
    path.write_text(text)
    with pytest.raises(IncompatibleSchemaError):
        write_snapshots(tmp_path)
    assert path.read_text() == text, "nothing may be written when a change is refused"


@pytest.mark.parametrize("spec", TOPICS, ids=lambda s: s.name)
def test_committed_snapshot_is_current(spec: object) -> None:
    from clarion_contracts.compat import load_schema
    from clarion_contracts.registry import TopicSpec
    from clarion_contracts.snapshots import render

    assert isinstance(spec, TopicSpec)
    committed = snapshot_path(spec)
    assert committed.exists(), f"run `make schemas` to record {spec.name}"
    check_compatible(spec.name, load_schema(committed), current_schema(spec))
    assert committed.read_text() == render(current_schema(spec)), (
        f"{spec.name}: snapshot out of date; run `make schemas`"
    )


def _without_text_policy(node: object) -> object:
    """``node`` as the v1 snapshots were before the text policy was added."""
    from clarion_contracts.text import PATTERN_TIGHTENINGS

    back = {new: old for old, new in PATTERN_TIGHTENINGS.items()}
    if isinstance(node, dict):
        out = {}
        for key, value in node.items():
            if key == "pattern" and value in back:
                if back[value] is not None:
                    out[key] = back[value]
                continue
            out[key] = _without_text_policy(value)
        return out
    if isinstance(node, list):
        return [_without_text_policy(v) for v in node]
    return node


@pytest.mark.parametrize("spec", TOPICS, ids=lambda s: s.name)
def test_adding_the_text_policy_is_compatible(spec: object) -> None:
    from clarion_contracts.registry import TopicSpec

    assert isinstance(spec, TopicSpec)
    new = current_schema(spec)
    old = _without_text_policy(new)
    assert isinstance(old, dict)
    assert old != new, "every contract has text fields under the policy"
    assert find_incompatibilities(old, new) == []


def test_any_other_new_pattern_is_refused() -> None:
    old = current_schema(DOMAIN_EVENTS)
    new = copy.deepcopy(old)
    new["$defs"]["Actor"]["properties"]["name"]["pattern"] = "^[a-z]*$"
    assert "$defs.Actor.name changed its schema" in find_incompatibilities(old, new)


def test_dropping_the_text_policy_is_refused() -> None:
    new = current_schema(DOMAIN_EVENTS)
    old = copy.deepcopy(new)
    del new["$defs"]["Actor"]["properties"]["name"]["pattern"]
    assert "$defs.Actor.name changed its schema" in find_incompatibilities(old, new)
