"""Shared pieces of the routers: documented error responses, JSON bodies, publishing."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from fastapi import Request

from clarion_contracts.text import MAX_JSON_DEPTH, json_depth_exceeds
from clarion_ingest.adapters.kafka import BrokerUnavailableError, Record
from clarion_ingest.runtime import Runtime
from clarion_kit.metrics import get_or_create_counter, metric_name
from clarion_kit.problems import ProblemError, problem_responses

AUTH_ERRORS = (401, 413, 422, 429, 500)
"""Errors every authenticated endpoint can answer.

Endpoints whose body FastAPI parses also list 400: its answer to a body that is not
UTF-8 or nests beyond what the JSON decoder handles."""


def errors(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` of problem+json errors: ``statuses`` plus :data:`AUTH_ERRORS`."""
    return problem_responses(*sorted(set(statuses) | set(AUTH_ERRORS)))


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def broker_unavailable(runtime: Runtime, exc: BrokerUnavailableError) -> ProblemError:
    """The 503 problem answered when the broker did not acknowledge (with Retry-After)."""
    return ProblemError(
        503,
        detail="the message broker is unavailable; nothing was accepted, retry later",
        type_="https://clarion.dev/problems/broker-unavailable",
        headers={"Retry-After": str(runtime.settings.broker_retry_after_seconds)},
    )


def _published_counter(service: str) -> Any:
    return get_or_create_counter(
        metric_name(service, "records_published_total"),
        "Records produced and acknowledged by the broker, by topic",
        ("topic",),
    )


def _unavailable_counter(service: str) -> Any:
    return get_or_create_counter(
        metric_name(service, "broker_unavailable_total"),
        "Requests answered 503 because the broker did not acknowledge",
    )


async def publish(runtime: Runtime, records: Sequence[Record]) -> None:
    """Produce ``records`` and wait for every acknowledgement.

    Raises:
        ProblemError: 503 with Retry-After when the broker did not acknowledge in time.
    """
    service = runtime.settings.service_name
    try:
        await runtime.publisher.send(records)
    except BrokerUnavailableError as exc:
        _unavailable_counter(service).inc()
        raise broker_unavailable(runtime, exc) from exc
    counter = _published_counter(service)
    for record in records:
        counter.labels(record.topic.removeprefix(runtime.settings.topic_prefix)).inc()


async def read_json(request: Request) -> Any:
    """Decode the request body as JSON (the size limit was enforced before).

    Raises:
        ProblemError: 415 when the content type is not JSON, 422 when the body is
            not valid UTF-8 JSON (``errors`` names the position) or nests arrays
            and objects deeper than :data:`~clarion_contracts.text.MAX_JSON_DEPTH`.
    """
    content_type = request.headers.get("content-type", "")
    media = content_type.split(";", 1)[0].strip().lower()
    if media != "application/json" and not media.endswith("+json"):
        raise ProblemError(415, detail="the body must be application/json")
    body = await request.body()
    try:
        value = json.loads(body)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        pos = getattr(exc, "pos", 0)
        raise ProblemError(
            422,
            "Unprocessable Content",
            "the body is not valid JSON",
            errors=[{"loc": ["body", pos], "msg": str(exc), "type": "json_invalid"}],
        ) from exc
    except RecursionError as exc:
        # The C decoder gives up near the interpreter's recursion limit (~1000 levels).
        raise _too_deep() from exc
    if json_depth_exceeds(value, MAX_JSON_DEPTH):
        raise _too_deep()
    return value


def _too_deep() -> ProblemError:
    return ProblemError(
        422,
        "Unprocessable Content",
        f"the body nests arrays and objects deeper than {MAX_JSON_DEPTH} levels",
        errors=[{"loc": ["body"], "msg": "nested too deeply", "type": "json_too_deep"}],
    )
