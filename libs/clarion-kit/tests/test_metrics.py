"""Metric naming, HTTP request metrics and the /metrics endpoint."""

from __future__ import annotations

from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry

from clarion_kit.metrics import (
    get_or_create_counter,
    get_or_create_gauge,
    instrument_fastapi,
    metric_name,
)


def test_metric_name() -> None:
    assert metric_name("push-worker", "sent_total") == "clarion_push_worker_sent_total"
    assert metric_name("Ingest-API", "http.requests") == "clarion_ingest_api_http_requests"


def test_counter_is_shared_per_registry() -> None:
    reg = CollectorRegistry()
    a = get_or_create_counter("clarion_t_things_total", "d", ("k",), reg)
    b = get_or_create_counter("clarion_t_things_total", "d", ("k",), reg)
    assert a is b
    other = get_or_create_counter("clarion_t_things_total", "d", ("k",), CollectorRegistry())
    assert other is not a


def test_gauge_is_shared_per_registry() -> None:
    reg = CollectorRegistry()
    a = get_or_create_gauge("clarion_t_pending", "d", (), reg)
    b = get_or_create_gauge("clarion_t_pending", "d", (), reg)
    assert a is b
    a.set(3)
    assert reg.get_sample_value("clarion_t_pending") == 3
    assert get_or_create_gauge("clarion_t_pending", "d", (), CollectorRegistry()) is not a


def test_http_metrics_and_endpoint() -> None:
    reg = CollectorRegistry()
    app = FastAPI()

    @app.get("/v1/inbox/{notification_id}")
    async def get_one(notification_id: str) -> dict[str, str]:
        return {"id": notification_id}

    instrument_fastapi(app, "ingest-api", registry=reg)
    client = TestClient(app)
    assert client.get("/v1/inbox/a").status_code == 200
    assert client.get("/v1/inbox/b").status_code == 200
    assert client.get("/missing").status_code == 404

    sample = reg.get_sample_value
    labels = {"method": "GET", "route": "/v1/inbox/{notification_id}", "status": "200"}
    assert sample("clarion_ingest_api_http_requests_total", labels) == 2.0
    assert (
        sample(
            "clarion_ingest_api_http_requests_total",
            {"method": "GET", "route": "<unmatched>", "status": "404"},
        )
        == 1.0
    )
    assert (
        sample(
            "clarion_ingest_api_http_request_duration_seconds_count",
            {"method": "GET", "route": "/v1/inbox/{notification_id}"},
        )
        == 2.0
    )

    r = client.get("/metrics")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/plain")
    assert 'clarion_ingest_api_http_requests_total{method="GET"' in r.text


def test_http_metrics_count_a_raising_endpoint_as_500_and_plain_routes() -> None:
    from starlette.responses import PlainTextResponse
    from starlette.routing import Route

    reg = CollectorRegistry()
    app = FastAPI()

    @app.post("/v1/boom/{n}")
    async def boom(n: int) -> None:
        raise RuntimeError(f"boom {n}")

    async def plain(_: object) -> PlainTextResponse:
        return PlainTextResponse("ok")

    app.router.routes.append(Route("/plain/{x}", plain))
    instrument_fastapi(app, "t-svc", registry=reg)
    client = TestClient(app, raise_server_exceptions=False)
    assert client.post("/v1/boom/1").status_code == 500
    assert client.get("/plain/y").status_code == 200
    sample = reg.get_sample_value
    boom_labels = {"method": "POST", "route": "/v1/boom/{n}", "status": "500"}
    assert sample("clarion_t_svc_http_requests_total", boom_labels) == 1.0
    plain_labels = {"method": "GET", "route": "/plain/{x}", "status": "200"}
    assert sample("clarion_t_svc_http_requests_total", plain_labels) == 1.0
