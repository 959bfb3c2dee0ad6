"""The generated AsyncAPI document covers every topic and resolves its references."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from clarion_contracts.asyncapi import build_asyncapi
from clarion_contracts.registry import TOPICS

DOC = Path(__file__).resolve().parents[2] / "docs" / "asyncapi.json"


def _refs(node: Any) -> list[str]:
    if isinstance(node, dict):
        found = [node["$ref"]] if isinstance(node.get("$ref"), str) else []
        return found + [r for v in node.values() for r in _refs(v)]
    if isinstance(node, list):
        return [r for v in node for r in _refs(v)]
    return []


def test_every_topic_is_a_channel() -> None:
    doc = build_asyncapi()
    assert doc["asyncapi"] == "3.0.0"
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert addresses == {spec.name for spec in TOPICS}


def test_every_reference_resolves() -> None:
    doc = build_asyncapi()
    for ref in _refs(doc):
        node: Any = doc
        for part in ref.removeprefix("#/").split("/"):
            node = node[part]
        assert node, ref


def test_operations_name_producers_and_consumers() -> None:
    doc = build_asyncapi()
    assert "aggregator_receives_clarion_domain_events_v1" in doc["operations"]
    assert doc["operations"]["aggregator_sends_clarion_notifications_v1"]["action"] == "send"


def test_committed_document_is_current() -> None:
    assert json.loads(DOC.read_text()) == build_asyncapi(), "run `make asyncapi`"
