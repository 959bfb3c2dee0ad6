"""The AsyncAPI 3.0 document of every Clarion topic, generated from the registry.

Each topic is a channel whose message payload is the contract's JSON Schema;
each producing and consuming service appears as an operation.
"""

from __future__ import annotations

from typing import Any

from clarion_contracts import __version__
from clarion_contracts.registry import TOPICS
from clarion_contracts.snapshots import current_schema


def _ref_defs(schema: dict[str, Any], defs: dict[str, Any]) -> dict[str, Any]:
    """Move ``$defs`` into components/schemas and rewrite the ``$ref``s to point there."""

    def rewrite(node: Any) -> Any:
        if isinstance(node, dict):
            return {
                k: (
                    v.replace("#/$defs/", "#/components/schemas/")
                    if k == "$ref" and isinstance(v, str)
                    else rewrite(v)
                )
                for k, v in node.items()
            }
        if isinstance(node, list):
            return [rewrite(v) for v in node]
        return node

    for name, sub in schema.get("$defs", {}).items():
        defs[name] = rewrite(sub)
    body = {k: v for k, v in schema.items() if k not in ("$defs", "$schema", "$id")}
    result: dict[str, Any] = rewrite(body)
    return result


def build_asyncapi() -> dict[str, Any]:
    """Return the AsyncAPI 3.0.0 document (a JSON-serialisable dict) for all v1 topics."""
    channels: dict[str, Any] = {}
    operations: dict[str, Any] = {}
    messages: dict[str, Any] = {}
    schemas: dict[str, Any] = {}
    for spec in TOPICS:
        channel_id = spec.name.replace(".", "_").replace("-", "_")
        message_name = spec.model.__name__
        schemas[message_name] = _ref_defs(current_schema(spec), schemas)
        messages[message_name] = {
            "name": message_name,
            "title": message_name,
            "summary": (spec.model.__doc__ or "").strip().splitlines()[0],
            "contentType": "application/json",
            "payload": {"$ref": f"#/components/schemas/{message_name}"},
            "bindings": {"kafka": {"key": {"type": "string", "description": spec.key}}},
        }
        channels[channel_id] = {
            "address": spec.name,
            "description": spec.description,
            "messages": {message_name: {"$ref": f"#/components/messages/{message_name}"}},
            "bindings": {
                "kafka": {
                    "topic": spec.name,
                    "partitions": spec.partitions,
                    "topicConfiguration": {
                        "cleanup.policy": [spec.cleanup_policy],
                        "retention.ms": spec.retention_ms,
                    },
                    "bindingVersion": "0.5.0",
                }
            },
        }
        for service in spec.producers:
            operations[f"{service}_sends_{channel_id}"] = {
                "action": "send",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{service} publishes {message_name}",
            }
        for service in spec.consumers:
            operations[f"{service}_receives_{channel_id}"] = {
                "action": "receive",
                "channel": {"$ref": f"#/channels/{channel_id}"},
                "summary": f"{service} consumes {message_name} (consumer group {service})",
            }
    return {
        "asyncapi": "3.0.0",
        "info": {
            "title": "Clarion topics",
            "version": __version__,
            "description": "Every Kafka topic Clarion's services exchange, contracts v1. "
            "Each topic has a dead-letter twin <topic>.dlq carrying the failed record with "
            "x-clarion-error headers.",
        },
        "defaultContentType": "application/json",
        "channels": channels,
        "operations": operations,
        "components": {"messages": messages, "schemas": schemas},
    }
