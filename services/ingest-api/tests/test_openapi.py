"""The OpenAPI document is complete: every operation documents its problem+json errors."""

from __future__ import annotations

from typing import Any

import pytest

from clarion_ingest.app import create_app
from clarion_ingest.settings import IngestSettings

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def openapi() -> dict[str, Any]:
    return create_app(IngestSettings(environment="development")).openapi()


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (path, method, op)
        for path, item in doc["paths"].items()
        for method, op in item.items()
        if method in {"get", "put", "post", "delete", "patch"}
    ]


EXPECTED = {
    ("/v1/events", "post"): {202, 401, 413, 415, 422, 429, 503},
    ("/v1/events:batch", "post"): {202, 401, 413, 415, 422, 429, 503},
    ("/v1/users/{user_id}", "put"): {200, 401, 422, 429, 503},
    ("/v1/users:batch", "put"): {200, 401, 413, 422, 429, 503},
    ("/v1/me/notifications", "get"): {200, 400, 401, 422, 429},
    ("/v1/me/notifications/counts", "get"): {200, 401, 429},
    ("/v1/me/notifications/{notification_id}/read", "post"): {200, 401, 404, 429, 503},
    ("/v1/me/notifications/{notification_id}/unread", "post"): {200, 401, 404, 429, 503},
    ("/v1/me/notifications:read-all", "post"): {200, 401, 429, 503},
    ("/v1/me/notifications/{notification_id}", "delete"): {204, 401, 404, 429, 503},
    ("/v1/me/notifications:batch-delete", "post"): {200, 401, 422, 429, 503},
    ("/v1/me/preferences", "get"): {200, 401, 429},
    ("/v1/me/preferences", "put"): {200, 401, 422, 429, 503},
    ("/v1/me/push-subscriptions", "post"): {201, 401, 422, 429, 503},
    ("/v1/me/push-subscriptions/{subscription_id}", "delete"): {204, 401, 404, 429, 503},
    ("/v1/push/vapid-public-key", "get"): {200, 404},
    ("/v1/unsubscribe", "post"): {200, 401, 422, 503},
    ("/v1/unsubscribe", "get"): {200, 401, 422},
    ("/v1/admin/announcements", "post"): {202, 401, 403, 422, 429, 503},
    ("/v1/config", "get"): {200},
    ("/v1/dev/token", "get"): {200, 422},
}


def test_every_public_endpoint_is_documented(openapi: dict[str, Any]) -> None:
    documented = {(path, method) for path, method, _ in operations(openapi)}
    assert set(EXPECTED) <= documented


@pytest.mark.parametrize(("path", "method"), sorted(EXPECTED))
def test_operation_documents_its_responses(openapi: dict[str, Any], path: str, method: str) -> None:
    op = openapi["paths"][path][method]
    codes = {int(code) for code in op["responses"]}
    missing = EXPECTED[(path, method)] - codes
    assert not missing, f"{method.upper()} {path} does not document {sorted(missing)}"


def test_every_error_response_is_problem_json(openapi: dict[str, Any]) -> None:
    for path, method, op in operations(openapi):
        for code, response in op["responses"].items():
            if int(code) < 400:
                continue
            content = response.get("content", {})
            assert PROBLEM in content, f"{method.upper()} {path} {code} is not problem+json"
            schema = content[PROBLEM]["schema"]
            assert {"type", "title", "status"} <= set(schema["properties"])
            if int(code) == 422:
                assert "errors" in schema["properties"]


def test_every_operation_has_a_summary_and_success_response(openapi: dict[str, Any]) -> None:
    for path, method, op in operations(openapi):
        assert op.get("summary"), f"{method.upper()} {path} has no summary"
        assert any(int(code) < 300 for code in op["responses"]), f"{path} has no success"


def test_fastapi_default_validation_schema_is_not_used(openapi: dict[str, Any]) -> None:
    for path, method, op in operations(openapi):
        for code, response in op["responses"].items():
            text = str(response)
            assert "HTTPValidationError" not in text, f"{method.upper()} {path} {code}"


def test_event_bodies_reference_the_contract(openapi: dict[str, Any]) -> None:
    schemas = openapi["components"]["schemas"]
    assert "DomainEvent" in schemas
    assert "EventBatch" in schemas
    body = openapi["paths"]["/v1/events"]["post"]["requestBody"]
    assert body["content"]["application/json"]["schema"]["$ref"].endswith("/DomainEvent")
    # every $ref in the document resolves
    refs: list[str] = []

    def walk(node: Any) -> None:
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "$ref" and isinstance(value, str):
                    refs.append(value)
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(openapi)
    for ref in refs:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[1] in schemas, ref


def test_config_route_is_development_only() -> None:
    doc = create_app(IngestSettings(environment="test")).openapi()
    assert "/v1/config" not in doc["paths"]
    assert "/v1/dev/token" not in doc["paths"]
