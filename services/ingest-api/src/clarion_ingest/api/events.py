"""Producer endpoints: domain events (single and batch) and user profiles.

202 (or 200 for a profile) means the data and its Kafka records are committed to
PostgreSQL (the transactional outbox); the relay produces them in order afterwards,
whether or not the broker is reachable right now.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Request, status

from clarion_contracts.base import UserId
from clarion_contracts.registry import DOMAIN_EVENTS, USER_PROFILES
from clarion_contracts.v1 import DomainEvent, UserProfile
from clarion_ingest.adapters import postgres
from clarion_ingest.adapters.kafka import Record
from clarion_ingest.adapters.outbox import enqueue
from clarion_ingest.api.common import errors, read_json, store, transaction, utcnow
from clarion_ingest.deps import ProducerDep, RuntimeDep
from clarion_ingest.domain.events import (
    EventValidationError,
    event_records,
    parse_batch,
    parse_event,
)
from clarion_ingest.domain.models import AcceptedOut, ProfileIn
from clarion_kit.problems import ProblemError

router = APIRouter(tags=["producers"])

_EVENT_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/DomainEvent"}}},
    }
}
_BATCH_BODY = {
    "requestBody": {
        "required": True,
        "content": {"application/json": {"schema": {"$ref": "#/components/schemas/EventBatch"}}},
    }
}


def _event_records(topic: str, event: DomainEvent) -> list[Record]:
    return [
        Record(topic, key, one.to_bytes(), event_id=event.event_id)
        for key, one in event_records(event)
    ]


def _invalid(exc: EventValidationError) -> ProblemError:
    return ProblemError(
        422,
        "Unprocessable Content",
        f"{len(exc.errors)} invalid field(s) in the request",
        errors=exc.errors,
    )


@router.post(
    "/v1/events",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    summary="Publish one domain event",
    responses=errors(415, 422, 503),
    openapi_extra=_EVENT_BODY,
)
async def post_event(request: Request, runtime: RuntimeDep, _: ProducerDep) -> AcceptedOut:
    """Validate one DomainEvent and answer 202 once it is stored in the outbox.

    Unknown top-level fields are refused (422). ``ingested_at`` is set here. The
    records are split per recipient (see ``event_records``). ``event_id`` is the
    idempotency key: a retry of a stored event answers 202 and stores nothing. 503
    with Retry-After when PostgreSQL is unreachable.
    """
    raw = await read_json(request)
    try:
        event = parse_event(raw, utcnow())
    except EventValidationError as exc:
        raise _invalid(exc) from exc
    await store(runtime, _event_records(runtime.settings.topic(DOMAIN_EVENTS), event))
    return AcceptedOut(accepted=[str(event.event_id)])


@router.post(
    "/v1/events:batch",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    summary="Publish a batch of domain events",
    responses=errors(415, 422, 503),
    openapi_extra=_BATCH_BODY,
)
async def post_event_batch(request: Request, runtime: RuntimeDep, _: ProducerDep) -> AcceptedOut:
    """Validate ``{"events": [...]}`` (1..``max_batch_events``) and store all of them.

    All or nothing: one invalid event refuses the batch (422, every error listed
    with its index), and the records are stored in one transaction. 202 once it
    committed; on 503 the producer retries the whole batch (``event_id``
    deduplicates, also against events an earlier attempt stored).
    """
    raw = await read_json(request)
    try:
        events = parse_batch(raw, utcnow(), runtime.settings.max_batch_events)
    except EventValidationError as exc:
        raise _invalid(exc) from exc
    topic = runtime.settings.topic(DOMAIN_EVENTS)
    await store(runtime, [r for e in events for r in _event_records(topic, e)])
    return AcceptedOut(accepted=[str(e.event_id) for e in events])


@router.put(
    "/v1/users/{user_id}",
    response_model=UserProfile,
    summary="Create or replace a user profile",
    responses=errors(400, 422, 503),
)
async def put_user(
    user_id: Annotated[UserId, Path(description="The producer's user id")],
    body: ProfileIn,
    runtime: RuntimeDep,
    _: ProducerDep,
) -> UserProfile:
    """Store the profile in PostgreSQL and, in the same transaction, its record for the
    compacted profiles topic in the outbox: both are committed or neither is."""
    profile = UserProfile(user_id=user_id, updated_at=utcnow(), **body.model_dump())
    topic = runtime.settings.topic(USER_PROFILES)
    async with transaction(runtime) as conn:
        await postgres.put_profile(conn, profile)
        await enqueue(conn, [Record(topic, user_id.encode(), profile.to_bytes())])
    return profile
