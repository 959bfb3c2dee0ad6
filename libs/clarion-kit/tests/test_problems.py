"""RFC 9457 problem responses through a real FastAPI app."""

from __future__ import annotations

import pytest
from fastapi import FastAPI, HTTPException
from fastapi.testclient import TestClient
from pydantic import BaseModel

from clarion_kit.problems import (
    PROBLEM_MEDIA_TYPE,
    ProblemError,
    install_problem_handlers,
    problem_body,
    problem_responses,
)


class Item(BaseModel):
    name: str
    count: int


@pytest.fixture
def client() -> TestClient:
    app = FastAPI()
    install_problem_handlers(app)

    @app.get("/gone/{thing}", responses=problem_responses(404, 410))
    async def gone(thing: str) -> dict[str, str]:
        raise ProblemError(
            410,
            detail=f"{thing} was deleted",
            type_="https://clarion.dev/problems/gone",
            headers={"Retry-After": "5"},
            thing=thing,
        )

    @app.get("/http")
    async def http_error() -> None:
        raise HTTPException(status_code=403, detail="not your notification")

    @app.post("/items")
    async def create(item: Item) -> Item:
        return item

    @app.get("/boom")
    async def boom() -> None:
        raise RuntimeError("password=hunter2 in internal state")

    return TestClient(app, raise_server_exceptions=False)


def test_problem_error(client: TestClient) -> None:
    r = client.get("/gone/n-1")
    assert r.status_code == 410
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.headers["retry-after"] == "5"
    assert r.json() == {
        "type": "https://clarion.dev/problems/gone",
        "title": "Gone",
        "status": 410,
        "detail": "n-1 was deleted",
        "instance": "/gone/n-1",
        "thing": "n-1",
    }


def test_http_exception(client: TestClient) -> None:
    r = client.get("/http")
    assert r.status_code == 403
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = r.json()
    assert body["title"] == "Forbidden"
    assert body["detail"] == "not your notification"


def test_unknown_route_is_problem(client: TestClient) -> None:
    r = client.get("/nope")
    assert r.status_code == 404
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.json()["title"] == "Not Found"


def test_validation_error(client: TestClient) -> None:
    r = client.post("/items", json={"name": "x", "count": "many"})
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = r.json()
    assert body["status"] == 422
    assert body["errors"][0]["loc"] == ["body", "count"]
    assert body["errors"][0]["type"] == "int_parsing"


def test_invalid_json_body(client: TestClient) -> None:
    r = client.post("/items", content=b"{not json", headers={"content-type": "application/json"})
    assert r.status_code == 422
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert r.json()["errors"]


def test_unhandled_error_does_not_leak(client: TestClient) -> None:
    r = client.get("/boom")
    assert r.status_code == 500
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    assert "hunter2" not in r.text
    assert "RuntimeError" not in r.text
    assert r.json()["title"] == "Internal Server Error"


def test_openapi_documents_problems(client: TestClient) -> None:
    spec = client.get("/openapi.json").json()
    responses = spec["paths"]["/gone/{thing}"]["get"]["responses"]
    assert PROBLEM_MEDIA_TYPE in responses["410"]["content"]
    schema = responses["410"]["content"][PROBLEM_MEDIA_TYPE]["schema"]
    assert "status" in schema["properties"]
    assert (
        "errors"
        in problem_responses(422)[422]["content"][PROBLEM_MEDIA_TYPE]["schema"]["properties"]
    )


def test_extension_cannot_shadow() -> None:
    with pytest.raises(ValueError, match="shadows"):
        problem_body(400, extensions={"status": 200})
