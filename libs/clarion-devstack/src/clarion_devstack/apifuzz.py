"""Property-based testing of a service's OpenAPI document with schemathesis.

Every operation gets generated requests, valid and invalid (bounded examples,
derandomised so a run is repeatable), sent over real HTTP to the running service;
every response is checked with :data:`CHECKS`: no server error, and status code,
content type, headers and body conforming to the document. Failures are collected
across operations and reported together (:class:`Report`), so one run shows all.
:func:`run_stateful` adds sequences of calls following the links schemathesis infers
between operations (a created resource's id fed to later calls).

Blocking (``requests``): call from a thread, e.g. ``await asyncio.to_thread(fuzz, ...)``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

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

CHECKS = [
    not_a_server_error,
    status_code_conformance,
    content_type_conformance,
    response_headers_conformance,
    response_schema_conformance,
]
"""Every response: no 5xx, and conformance to the document."""

HeadersFor = Callable[[str], dict[str, str]]
"""The credentials to send for an operation, given its path template."""


@dataclass
class Report:
    """What a run did: ``cases`` sent and ``failures`` (text) per operation label."""

    cases: dict[str, int] = field(default_factory=dict)
    failures: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        """``"<operations> operations, <cases> cases"``."""
        return f"{len(self.cases)} operations, {sum(self.cases.values())} cases"

    def failure_text(self) -> str:
        """Every failure, one block per operation."""
        return "\n\n".join(f"{k}:\n{v}" for k, v in self.failures.items())


def _fuzz(
    operation: Any,
    base_url: str,
    session: requests.Session,
    headers: dict[str, str],
    report: Report,
    max_examples: int,
    extra_cases: Iterable[Any],
) -> None:
    label = operation.label
    report.cases[label] = 0
    # Valid requests (must succeed or fail as documented) and invalid ones (must be
    # refused with a documented 4xx), as the schemathesis CLI does by default.
    strategy = operation.as_strategy() | operation.as_strategy(
        generation_mode=schemathesis.GenerationMode.NEGATIVE
    )

    def call(case: Any) -> None:
        report.cases[label] += 1
        case.call_and_validate(
            base_url=base_url, session=session, headers=headers, checks=CHECKS, timeout=60
        )

    @given(case=strategy)
    @settings(
        max_examples=max_examples,
        deadline=None,
        database=None,
        derandomize=True,
        phases=[Phase.explicit, Phase.generate, Phase.shrink],
        suppress_health_check=list(HealthCheck),
    )
    def check(case: Any) -> None:
        call(case)

    try:
        check()
        for case in extra_cases:
            call(case)
    except (Exception, BaseExceptionGroup) as exc:  # schemathesis raises a FailureGroup
        report.failures[label] = f"{type(exc).__name__}: {exc}"[:4000]


def fuzz(
    raw_schema: dict[str, Any],
    base_url: str,
    headers_for: HeadersFor,
    *,
    max_examples: int = 30,
    extra_cases: Callable[[Any], Iterable[Any]] = lambda _operation: (),
) -> Report:
    """Send generated requests to every operation of ``raw_schema`` at ``base_url``.

    Args:
        raw_schema: the OpenAPI document (``app.openapi()``).
        base_url: where the service listens, e.g. ``http://127.0.0.1:8000``.
        headers_for: credentials per operation path.
        max_examples: generated requests per operation.
        extra_cases: hand-made cases per operation (``operation.Case(query=...)``) for
            values random generation seldom reaches, such as datetime bounds.
    """
    schema = schemathesis.openapi.from_dict(raw_schema)
    report = Report()
    with requests.Session() as session:
        for result in schema.get_all_operations():
            operation = result.ok()  # type: ignore[union-attr]  # an invalid schema raises
            _fuzz(
                operation,
                base_url,
                session,
                headers_for(operation.path),
                report,
                max_examples,
                extra_cases(operation),
            )
    return report


def run_stateful(
    raw_schema: dict[str, Any], base_url: str, headers_for: HeadersFor, *, scenarios: int = 25
) -> int:
    """Run schemathesis' state machine over ``raw_schema``: ``scenarios`` sequences of
    linked calls. Returns the number of calls made.

    Raises:
        Exception: the first failing check (schemathesis' failure group).
    """
    schema = schemathesis.openapi.from_dict(raw_schema)
    calls = 0

    class Workflow(schema.as_state_machine()):  # type: ignore[misc]
        def get_call_kwargs(self, case: Any) -> dict[str, Any]:
            nonlocal calls
            calls += 1
            return {
                "base_url": base_url,
                "headers": headers_for(case.operation.path),
                "timeout": 60,
            }

        def validate_response(self, response: Any, case: Any, *_: Any, **kwargs: Any) -> None:
            case.validate_response(response, checks=CHECKS, transport_kwargs=kwargs)

    run_state_machine_as_test(
        Workflow,
        settings=settings(
            max_examples=scenarios,
            stateful_step_count=6,
            deadline=None,
            database=None,
            derandomize=True,
            suppress_health_check=list(HealthCheck),
        ),
    )
    return calls
