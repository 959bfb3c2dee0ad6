"""Readiness checks, /healthz and /readyz, and the standalone health server."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from fastapi import FastAPI
from fastapi.testclient import TestClient
from prometheus_client import CollectorRegistry, Counter

from clarion_kit.health import HealthChecks, HealthServer, asgi_routes, health_app, health_router
from clarion_kit.problems import PROBLEM_MEDIA_TYPE


async def ok() -> None:
    return None


async def broken() -> None:
    raise ConnectionError("redis down")


async def hangs() -> None:
    await asyncio.Event().wait()


async def says_no() -> bool:
    return False


async def test_run_reports_each_check() -> None:
    checks = HealthChecks()
    checks.add("ok", ok)
    checks.add("broken", broken)
    checks.add("slow", hangs, timeout=0.05)
    checks.add("no", says_no)
    results = {r.name: r for r in await checks.run()}
    assert results["ok"].ok
    assert results["broken"].error == "ConnectionError: redis down"
    assert results["slow"].error == "timed out after 0.05s"
    assert results["no"].error == "check returned False"
    assert not await checks.ready()
    checks.remove("broken")
    checks.remove("slow")
    checks.remove("no")
    assert await checks.ready()
    checks.set_ready(False)
    assert not await checks.ready()


def test_invalid_timeout() -> None:
    with pytest.raises(ValueError, match="positive"):
        HealthChecks().add("x", ok, timeout=0)


def test_router() -> None:
    checks = HealthChecks()
    checks.add("db", ok)
    app = FastAPI()
    app.include_router(health_router(checks))
    client = TestClient(app)
    assert client.get("/healthz").json() == {"status": "alive"}
    ready = client.get("/readyz")
    assert ready.status_code == 200
    assert ready.json()["checks"]["db"]["ok"] is True

    checks.add("kafka", broken)
    r = client.get("/readyz")
    assert r.status_code == 503
    assert r.headers["content-type"] == PROBLEM_MEDIA_TYPE
    body = r.json()
    assert body["detail"] == "not ready: kafka"
    assert body["checks"]["kafka"] == {
        "ok": False,
        "duration_ms": body["checks"]["kafka"]["duration_ms"],
        "error": "ConnectionError: redis down",
    }
    assert client.get("/healthz").status_code == 200


def test_optional_check_is_reported_but_does_not_decide_readiness() -> None:
    async def state() -> str:
        return "standby"

    checks = HealthChecks()
    checks.add("db", ok)
    checks.add("broker", broken, required=False)
    checks.add("relay", state, required=False)
    app = FastAPI()
    app.include_router(health_router(checks))
    ready = TestClient(app).get("/readyz")
    assert ready.status_code == 200
    report = ready.json()["checks"]
    assert report["broker"]["ok"] is False
    assert report["broker"]["required"] is False
    assert report["broker"]["error"] == "ConnectionError: redis down"
    assert report["relay"]["detail"] == "standby"
    assert "required" not in report["db"]

    checks.add("db", broken)
    not_ready = TestClient(app).get("/readyz")
    assert not_ready.status_code == 503
    assert not_ready.json()["detail"] == "not ready: db"


def test_asgi_routes_cover_three_paths() -> None:
    routes = asgi_routes(HealthChecks(), CollectorRegistry())
    assert [path for path, _ in routes] == ["/healthz", "/readyz", "/metrics"]


async def test_health_server_serves_probes_and_metrics() -> None:
    reg = CollectorRegistry()
    Counter("clarion_worker_things_total", "things", registry=reg).inc(3)
    checks = HealthChecks()
    checks.add("ok", ok)
    server = HealthServer(health_app(checks, reg), "127.0.0.1", 0)
    await server.start()
    try:
        assert server.port > 0
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            assert (await client.get("/healthz")).status_code == 200
            assert (await client.get("/readyz")).status_code == 200
            metrics = await client.get("/metrics")
            assert "clarion_worker_things_total 3.0" in metrics.text
            checks.add("broken", broken)
            assert (await client.get("/readyz")).status_code == 503
    finally:
        await server.stop()


async def test_routes_served_by_asgi_faststream(clean_env: pytest.MonkeyPatch) -> None:
    from faststream.asgi import AsgiFastStream

    from clarion_kit.kafka import create_broker
    from clarion_kit.settings import ServiceSettings

    reg = CollectorRegistry()
    checks = HealthChecks()
    checks.add("broken", broken)
    broker = create_broker(ServiceSettings(service_name="worker"), registry=reg)
    app = AsgiFastStream(broker, asgi_routes=asgi_routes(checks, reg))
    transport = httpx.ASGITransport(app=app)
    async with httpx.AsyncClient(transport=transport, base_url="http://w") as client:
        assert (await client.get("/healthz")).status_code == 200
        assert (await client.get("/readyz")).status_code == 503
        assert (await client.get("/metrics")).status_code == 200
        assert (await client.get("/other")).status_code == 404
