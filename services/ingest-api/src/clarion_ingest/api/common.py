"""Shared pieces of the routers: documented error responses, JSON bodies, stored writes.

Every write that must reach Kafka runs in :func:`transaction` and stores its records
with :func:`clarion_ingest.adapters.outbox.enqueue` on the same connection, so the
change and its records commit together; the outbox relay produces them afterwards.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from typing import Any

from fastapi import Request
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion_contracts.text import MAX_JSON_DEPTH, json_depth_exceeds
from clarion_ingest.adapters.kafka import Record
from clarion_ingest.adapters.outbox import enqueue
from clarion_ingest.runtime import Runtime
from clarion_kit.logging import get_logger
from clarion_kit.metrics import get_or_create_counter, metric_name
from clarion_kit.problems import ProblemError, problem_responses

_log = get_logger(__name__)

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


def _unreachable(exc: BaseException) -> bool:
    """True if ``exc`` means PostgreSQL could not be reached (not that it refused the data)."""
    if isinstance(exc, OSError | TimeoutError | InterfaceError | OperationalError):
        return True
    return isinstance(exc, DBAPIError) and exc.connection_invalidated


def store_unavailable(runtime: Runtime) -> ProblemError:
    """The 503 problem answered when PostgreSQL is unreachable (with Retry-After)."""
    return ProblemError(
        503,
        detail="the database is unavailable; nothing was accepted, retry later",
        type_="https://clarion.dev/problems/store-unavailable",
        headers={"Retry-After": str(runtime.settings.retry_after_seconds)},
    )


@asynccontextmanager
async def transaction(runtime: Runtime) -> AsyncIterator[AsyncConnection]:
    """A PostgreSQL transaction for a write and its outbox records; commits on exit.

    The whole transaction is bounded by ``store_timeout_seconds``. Nothing is
    committed when the block raises.

    Raises:
        ProblemError: 503 with Retry-After when PostgreSQL is unreachable or does not
            answer in time (the producer retries; ``event_id`` deduplicates). Other
            errors, including a ``ProblemError`` raised in the block, pass unchanged.
    """
    try:
        async with asyncio.timeout(runtime.settings.store_timeout_seconds):
            async with runtime.engine.begin() as conn:
                yield conn
    except Exception as exc:
        _raise_unavailable(runtime, exc)
        raise


def _raise_unavailable(runtime: Runtime, exc: Exception) -> None:
    if isinstance(exc, ProblemError) or not _unreachable(exc):
        return
    _unavailable_counter(runtime.settings.service_name).inc()
    _log.warning("database unavailable for a write", error=f"{type(exc).__name__}: {exc}")
    raise store_unavailable(runtime) from exc


def _unavailable_counter(service: str) -> Any:
    return get_or_create_counter(
        metric_name(service, "store_unavailable_total"),
        "Writes answered 503 because PostgreSQL was unreachable",
    )


async def store(runtime: Runtime, records: Sequence[Record]) -> int:
    """Store ``records`` in the outbox (one atomic statement); how many were new.

    Runs on ``runtime.store_engine``, whose pool does not ping a connection before
    handing it out (a round trip on the hot path of ``POST /v1/events``). A pooled
    connection the server has closed fails at once; the statement is then run once
    more on a new connection. That is safe only because every record given here
    carries an ``event_id`` (unique with its key): a statement whose reply was lost
    after it committed stores nothing the second time.

    Raises:
        ProblemError: 503 with Retry-After when PostgreSQL is unreachable.
    """
    try:
        async with asyncio.timeout(runtime.settings.store_timeout_seconds):
            for attempt in (1, 2):
                try:
                    return await _store_once(runtime, records)
                except DBAPIError as exc:
                    if attempt == 2 or not exc.connection_invalidated:
                        raise
                    _log.info("stale database connection replaced", error=str(exc.orig))
    except Exception as exc:
        _raise_unavailable(runtime, exc)
        raise
    raise AssertionError("unreachable: the second attempt returns or raises")


async def _store_once(runtime: Runtime, records: Sequence[Record]) -> int:
    async with runtime.store_engine.connect() as conn:
        # enqueue is one statement, atomic on its own: autocommit spares the BEGIN
        # and COMMIT round trips.
        await conn.execution_options(isolation_level="AUTOCOMMIT")
        return await enqueue(conn, records)


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
