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
from typing import Any

import pytest

from clarion_devstack.apifuzz import fuzz, run_stateful
from clarion_kit.auth import issue_token

pytestmark = [pytest.mark.integration, pytest.mark.timeout(600)]

MAX_EXAMPLES = 30
"""Generated requests per operation."""
STATEFUL_SCENARIOS = 25
"""Sequences of linked calls (e.g. create a push subscription, then delete it by its id)."""


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
        report = await asyncio.to_thread(
            fuzz, svc.app.openapi(), base_url, headers_for, max_examples=MAX_EXAMPLES
        )
        elapsed = time.monotonic() - started
        stateful_calls = await asyncio.to_thread(
            run_stateful,
            svc.app.openapi(),
            base_url,
            headers_for,
            scenarios=STATEFUL_SCENARIOS,
        )
        stateful_elapsed = time.monotonic() - started - elapsed
    print(f"schemathesis: {report.summary()}, {elapsed:.0f} s")
    print(f"schemathesis stateful: {stateful_calls} calls, {stateful_elapsed:.0f} s")
    assert len(report.cases) >= 20, report.cases
    assert not report.failures, report.failure_text()
