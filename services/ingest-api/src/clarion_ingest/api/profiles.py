"""``PUT /v1/users:batch``: create or replace many user profiles in one transaction.

The batch form of ``PUT /v1/users/{user_id}`` for producers that sync a user
directory (the GitHub replay creates thousands of profiles before it starts):
one multi-row upsert and one multi-row outbox insert instead of a request, a
transaction and two statements per profile.
"""

from __future__ import annotations

from fastapi import APIRouter

from clarion_contracts.registry import USER_PROFILES
from clarion_contracts.v1 import UserProfile
from clarion_ingest.adapters import postgres
from clarion_ingest.adapters.kafka import Record
from clarion_ingest.adapters.outbox import enqueue
from clarion_ingest.api.common import errors, transaction, utcnow
from clarion_ingest.deps import ProducerDep, RuntimeDep
from clarion_ingest.domain.profiles import ProfileBatchIn, ProfilesStoredOut

router = APIRouter(tags=["producers"])


@router.put(
    "/v1/users:batch",
    response_model=ProfilesStoredOut,
    summary="Create or replace many user profiles",
    responses=errors(400, 422, 503),
)
async def put_users_batch(
    body: ProfileBatchIn, runtime: RuntimeDep, _: ProducerDep
) -> ProfilesStoredOut:
    """Store every profile of ``{"profiles": [...]}`` and their records, all or nothing.

    Each item is validated like the body of ``PUT /v1/users/{user_id}`` plus its
    ``user_id``; one invalid item, or a ``user_id`` given twice, refuses the whole
    batch (422, errors located by index) and nothing is written. The profiles and
    their records for the compacted profiles topic commit in one PostgreSQL
    transaction. Idempotent: sending the same batch again replaces the profiles with
    equal ones (new ``updated_at``). 503 with Retry-After when PostgreSQL is
    unreachable.
    """
    now = utcnow()
    batch = [UserProfile(updated_at=now, **item.model_dump()) for item in body.profiles]
    topic = runtime.settings.topic(USER_PROFILES)
    async with transaction(runtime) as conn:
        await postgres.put_profiles(conn, batch)
        await enqueue(conn, [Record(topic, p.user_id.encode(), p.to_bytes()) for p in batch])
    return ProfilesStoredOut(stored=[p.user_id for p in batch])
