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
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
import uvicorn
from hypothesis import HealthCheck, Phase, given, settings
from prometheus_client import CollectorRegistry
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clarion_analytics.app import create_app
from clarion_analytics.settings import AnalyticsSettings
from clarion_kit.auth import issue_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
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


@dataclass
class Report:
    """What a schemathesis run did: cases sent and failures per operation."""

    cases: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)


def _fuzz(
    operation: Any,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    report: Report,
) -> None:
    label = operation.label
    report.cases[label] = 0
    strategy = operation.as_strategy() | operation.as_strategy(
        generation_mode=schemathesis.GenerationMode.NEGATIVE
    )

    @given(case=strategy)
    @settings(
        max_examples=MAX_EXAMPLES,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        report.cases[label] += 1
        case.call_and_validate(
            base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=60
        )

    try:
        check()
        for case in _boundary_cases(operation):
            report.cases[label] += 1
            case.call_and_validate(
                base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=60
            )
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
        report.failures[label] = f"{type(exc).__name__}: {exc}"[:4000]


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


def run_schemathesis(raw_schema: dict[str, Any], base_url: str, headers: dict[str, str]) -> Report:
    """Fuzz every operation of ``raw_schema`` against ``base_url`` (blocking; run in a thread)."""
    schema = schemathesis.openapi.from_dict(raw_schema)
    report = Report()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            _fuzz(result.ok(), base_url, session, headers, report)
    return report


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
            run_schemathesis, app.openapi(), base_url, {"Authorization": f"Bearer {token}"}
        )
        elapsed = time.monotonic() - started
    total = sum(report.cases.values())
    print(f"schemathesis: {len(report.cases)} operations, {total} cases, {elapsed:.0f} s")
    assert len(report.cases) >= 6, report.cases
    assert not report.failures, "\n\n".join(f"{k}:\n{v}" for k, v in report.failures.items())
