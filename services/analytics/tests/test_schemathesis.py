"""Property-based testing of every analytics operation with schemathesis.

Generated requests (bounded examples, valid and invalid: extreme dates, odd
filters and steps) go over real HTTP to the app with its PostgreSQL on the
embedded stack; every response must be no server error and conform to the
OpenAPI document (status code, content type, headers, body schema).
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest
import uvicorn
from prometheus_client import CollectorRegistry

from clarion_analytics.app import create_app
from clarion_analytics.settings import AnalyticsSettings
from clarion_devstack.apifuzz import fuzz
from clarion_kit.auth import issue_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAX_EXAMPLES = 40
"""Generated requests per operation (six operations)."""

EXTREME_TIMES = (
    "0001-01-01T00:00:00Z",
    "0001-01-01T00:00:00+05:00",
    "9999-12-31T23:59:59-01:00",
    "9999-12-31T23:59:59.999999Z",
    "1970-01-01T00:00:00Z",
)
"""Bounds at the edges of ``datetime``: random generation seldom reaches them."""


def _boundary_cases(operation: Any) -> list[Any]:
    names = {param.name for param in operation.query}
    cases = []
    for moment in EXTREME_TIMES:
        if "to" in names:
            cases.append(operation.Case(query={"to": moment}))
        if "from" in names:
            cases.append(operation.Case(query={"from": moment}))
            cases.append(operation.Case(query={"from": moment, "to": moment}))
    return cases


@contextlib.asynccontextmanager
async def serving(app: Any) -> AsyncIterator[str]:
    """Serve ``app`` with uvicorn (lifespan on) in this event loop; yield its base URL."""
    config = uvicorn.Config(
        app, host="127.0.0.1", port=0, lifespan="on", log_config=None, access_log=False
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    try:
        deadline = time.monotonic() + 60
        while not server.started:
            if task.done():
                task.result()
                raise RuntimeError("uvicorn exited during start-up")
            assert time.monotonic() < deadline, "uvicorn did not start"
            await asyncio.sleep(0.02)
        port = server.servers[0].sockets[0].getsockname()[1]
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.wait_for(task, 30)


async def test_every_operation_conforms_and_never_fails(fresh_database_url: str) -> None:
    cfg = AnalyticsSettings(
        database_url=fresh_database_url,
        environment="development",
        consume=False,
        log_json=False,
        log_level="WARNING",
    )
    app = create_app(cfg, registry=CollectorRegistry())
    token = issue_token(cfg, "schemathesis-admin", scopes=(cfg.admin_scope,), ttl=3600)
    async with serving(app) as base_url:
        started = time.monotonic()
        report = await asyncio.to_thread(
            fuzz,
            app.openapi(),
            base_url,
            lambda _path: {"Authorization": f"Bearer {token}"},
            max_examples=MAX_EXAMPLES,
            extra_cases=_boundary_cases,
        )
        elapsed = time.monotonic() - started
    print(f"schemathesis: {report.summary()}, {elapsed:.0f} s")
    assert len(report.cases) >= 6, report.cases
    assert not report.failures, report.failure_text()
