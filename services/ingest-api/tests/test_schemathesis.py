"""Property-based testing of every operation of the OpenAPI document with schemathesis.

Each operation gets generated requests (bounded examples, valid and invalid) sent
over real HTTP to
the app wired to the embedded stack, and every response is checked: no server
error, and conformance of status code, content type, headers and body schema to
the document. Failures are collected across operations and reported together.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.stateful import run_state_machine_as_test
from schemathesis.checks import (
    content_type_conformance,
    not_a_server_error,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)

from clarion_kit.auth import issue_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
MAX_EXAMPLES = 30
"""Generated requests per operation."""
STATEFUL_SCENARIOS = 25
"""Sequences of linked calls (e.g. create a push subscription, then delete it by its id)."""


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

    # Valid requests (must succeed or fail as documented) and invalid ones (must be
    # refused with a documented 4xx), as the schemathesis CLI does by default.
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
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
        report.failures[label] = f"{type(exc).__name__}: {exc}"[:4000]


def run_schemathesis(raw_schema: dict[str, Any], base_url: str, headers_for: Any) -> Report:
    """Fuzz every operation of ``raw_schema`` against ``base_url`` (blocking; run in a thread)."""
    schema = schemathesis.openapi.from_dict(raw_schema)
    report = Report()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()
            _fuzz(operation, base_url, session, headers_for(operation.path), report)
    return report


def run_stateful(raw_schema: dict[str, Any], base_url: str, headers_for: Any) -> int:
    """Run schemathesis' state machine: sequences of calls following the links it infers
    between operations (response fields feeding later path parameters). Returns the
    number of calls made; raises on the first failing check."""
    schema = schemathesis.openapi.from_dict(raw_schema)
    calls = 0

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            headers = headers_for(case.operation.path)
            return {"base_url": base_url, "headers": headers, "timeout": 60}

        def validate_response(self, response: Any, case: Any, *_: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=STATEFUL_SCENARIOS,
            stateful_step_count=6,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
    return calls


async def test_every_operation_conforms_and_never_fails(start_ingest: Any) -> None:
    overrides = {"rate_limit_user": 1_000_000, "rate_limit_api_key": 1_000_000}
    async with start_ingest(**overrides) as svc:
        runtime = svc.app.state.runtime

        async def connected() -> bool:
            return bool(runtime.connection.connected)

        await svc.eventually(connected, timeout=60)
        admin = issue_token(svc.settings, "schemathesis-admin", scopes=("admin",), ttl=3600)

        def headers_for(path: str) -> dict[str, str]:
            if path.startswith(("/v1/events", "/v1/users")):
                return {"X-API-Key": svc.api_key}
            return {"Authorization": f"Bearer {admin}"}

        started = time.monotonic()
        base_url = str(svc.http.base_url)
        report = await asyncio.to_thread(run_schemathesis, svc.app.openapi(), base_url, headers_for)
        elapsed = time.monotonic() - started
        stateful_calls = await asyncio.to_thread(
            run_stateful, svc.app.openapi(), base_url, headers_for
        )
        stateful_elapsed = time.monotonic() - started - elapsed
    total = sum(report.cases.values())
    print(f"schemathesis: {len(report.cases)} operations, {total} cases, {elapsed:.0f} s")
    print(f"schemathesis stateful: {stateful_calls} calls, {stateful_elapsed:.0f} s")
    assert len(report.cases) >= 20, report.cases
    assert not report.failures, "\n\n".join(f"{k}:\n{v}" for k, v in report.failures.items())
