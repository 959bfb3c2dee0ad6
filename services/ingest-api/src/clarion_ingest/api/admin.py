"""Admin endpoints: announcements to listed users, a segment or everyone."""

from __future__ import annotations

from uuid import uuid4

from fastapi import APIRouter, status

from clarion_contracts.registry import DOMAIN_EVENTS
from clarion_ingest.adapters.kafka import Record
from clarion_ingest.api.common import errors, store, utcnow
from clarion_ingest.deps import AdminDep, RuntimeDep
from clarion_ingest.domain.events import event_records
from clarion_ingest.domain.models import AcceptedOut, AnnouncementIn, build_announcement

router = APIRouter(tags=["admin"])


@router.post(
    "/v1/admin/announcements",
    status_code=status.HTTP_202_ACCEPTED,
    response_model=AcceptedOut,
    summary="Announce something to users",
    responses=errors(400, 403, 422, 503),
)
async def announce(body: AnnouncementIn, claims: AdminDep, runtime: RuntimeDep) -> AcceptedOut:
    """Publish a ``clarion.announcement`` domain event whose actor is the admin.

    Needs a user JWT with the ``admin`` scope. 202 once stored in the outbox.
    """
    event = build_announcement(body, claims.subject, uuid4(), utcnow())
    topic = runtime.settings.topic(DOMAIN_EVENTS)
    await store(
        runtime,
        [Record(topic, k, e.to_bytes(), event_id=event.event_id) for k, e in event_records(event)],
    )
    return AcceptedOut(accepted=[str(event.event_id)])
