"""End-user inbox endpoints: list, counts, read / unread / read-all, delete / batch delete.

Every query is scoped by the token's subject in SQL: another user's notification
answers 404 exactly like a missing one. A change that actually changed something
stores an InboxEvent (with the new unread count) for ``clarion.inbox-events.v1`` in
the outbox in the same transaction: the change and its event commit together.
"""

from __future__ import annotations

from typing import Annotated
from uuid import uuid4

from fastapi import APIRouter, Path, Query, Response, status
from sqlalchemy.ext.asyncio import AsyncConnection

from clarion_contracts.registry import INBOX_EVENTS
from clarion_contracts.text import Text
from clarion_contracts.v1 import InboxAction, InboxEvent
from clarion_ingest.adapters import postgres
from clarion_ingest.adapters.kafka import Record
from clarion_ingest.adapters.outbox import enqueue
from clarion_ingest.api.common import errors, transaction, utcnow
from clarion_ingest.deps import RuntimeDep, UserDep
from clarion_ingest.domain.cursor import (
    CursorRangeError,
    InvalidCursorError,
    decode_cursor,
    encode_cursor,
)
from clarion_ingest.domain.inbox import Change, InboxFilter, PageRequest, clamp_limit
from clarion_ingest.domain.models import (
    BatchDeleteIn,
    BatchDeleteOut,
    CountsOut,
    NotificationOut,
    NotificationPage,
    ReadAllOut,
)
from clarion_ingest.runtime import Runtime
from clarion_kit.problems import ProblemError

router = APIRouter(tags=["inbox"])

NotificationId = Annotated[Text, Path(min_length=1, max_length=256)]


def _not_found(notification_id: str) -> ProblemError:
    return ProblemError(404, detail=f"notification {notification_id} does not exist")


async def _publish_change(
    runtime: Runtime,
    conn: AsyncConnection,
    user_id: str,
    action: InboxAction,
    ids: list[str],
) -> CountsOut:
    counts = await postgres.count(conn, user_id)
    event = InboxEvent(
        event_id=uuid4(),
        recipient_id=user_id,
        action=action,
        notification_ids=ids,
        unread_count=counts.unread,
        occurred_at=utcnow(),
    )
    topic = runtime.settings.topic(INBOX_EVENTS)
    await enqueue(conn, [Record(topic, user_id.encode(), event.to_bytes())])
    return counts


async def current_counts(runtime: Runtime, user_id: str) -> CountsOut:
    """The user's counts from the Redis cache, rebuilt from PostgreSQL on a miss."""
    cached = await runtime.counts.get(user_id)
    if cached is not None:
        return cached
    async with runtime.engine.connect() as conn:
        counts = await postgres.count(conn, user_id)
    await runtime.counts.set(user_id, counts)
    return counts


@router.get(
    "/v1/me/notifications",
    response_model=NotificationPage,
    summary="List my notifications (newest first, cursor pagination)",
    responses=errors(400, 422),
)
async def list_notifications(
    claims: UserDep,
    runtime: RuntimeDep,
    cursor: Annotated[Text | None, Query(max_length=1024, description="Opaque cursor")] = None,
    limit: Annotated[int | None, Query(ge=1, le=1000, description="Page size")] = None,
    unread: Annotated[bool | None, Query(description="Only unread (true) or read")] = None,
    category: Annotated[Text | None, Query(min_length=1, max_length=64)] = None,
    type: Annotated[Text | None, Query(min_length=1, max_length=100)] = None,
) -> NotificationPage:
    """A page of the caller's notifications ordered by ``(updated_at, id)`` descending.

    ``next_cursor`` (opaque) fetches the following page; it is null on the last one.
    A cursor that was not issued by this API answers 400; one naming a time
    outside 1970-01-01..9999-12-30 UTC answers 422.
    """
    after = None
    if cursor is not None:
        try:
            after = decode_cursor(cursor)
        except CursorRangeError as exc:
            raise ProblemError(
                422,
                "Unprocessable Content",
                "the cursor names a time outside the supported range",
                errors=[{"loc": ["query", "cursor"], "msg": str(exc), "type": "out_of_range"}],
            ) from exc
        except InvalidCursorError as exc:
            raise ProblemError(400, detail="the cursor is not valid") from exc
    settings = runtime.settings
    page = PageRequest(
        limit=clamp_limit(limit, settings.inbox_page_default, settings.inbox_page_max),
        after=after,
    )
    flt = InboxFilter(unread=unread, category=category, type=type)
    async with runtime.engine.connect() as conn:
        items, next_cursor = await postgres.list_notifications(conn, claims.subject, flt, page)
    return NotificationPage(
        items=items, next_cursor=encode_cursor(next_cursor) if next_cursor else None
    )


@router.get(
    "/v1/me/notifications/counts",
    response_model=CountsOut,
    summary="My unread and total counts, overall and per category",
    responses=errors(),
)
async def get_counts(claims: UserDep, runtime: RuntimeDep) -> CountsOut:
    """Unread and total counts (deleted notifications excluded), cached in Redis."""
    return await current_counts(runtime, claims.subject)


@router.post(
    "/v1/me/notifications:read-all",
    response_model=ReadAllOut,
    summary="Mark all my notifications read",
    responses=errors(503),
)
async def read_all(claims: UserDep, runtime: RuntimeDep) -> ReadAllOut:
    """Mark every unread notification read; publishes ``all_read`` when any changed."""
    user = claims.subject
    async with transaction(runtime) as conn:
        updated = await postgres.read_all(conn, user, utcnow())
        if updated == 0:
            counts = await postgres.count(conn, user)
        else:
            counts = await _publish_change(runtime, conn, user, InboxAction.ALL_READ, [])
    await runtime.counts.set(user, counts)
    return ReadAllOut(updated=updated, unread_count=counts.unread)


@router.post(
    "/v1/me/notifications:batch-delete",
    response_model=BatchDeleteOut,
    summary="Delete several of my notifications",
    responses=errors(400, 422, 503),
)
async def batch_delete(body: BatchDeleteIn, claims: UserDep, runtime: RuntimeDep) -> BatchDeleteOut:
    """Delete the caller's notifications among ``ids``; other ids are ignored.

    Answers the ids actually deleted; publishes one ``deleted`` event listing them.
    """
    if len(body.ids) > runtime.settings.batch_delete_max:
        raise ProblemError(
            422,
            "Unprocessable Content",
            f"at most {runtime.settings.batch_delete_max} ids per request",
            errors=[{"loc": ["body", "ids"], "msg": "too many ids", "type": "too_long"}],
        )
    user = claims.subject
    ids = list(dict.fromkeys(body.ids))
    async with transaction(runtime) as conn:
        deleted = await postgres.delete(conn, user, ids, utcnow())
        if deleted:
            counts = await _publish_change(runtime, conn, user, InboxAction.DELETED, deleted)
        else:
            counts = await postgres.count(conn, user)
    await runtime.counts.set(user, counts)
    return BatchDeleteOut(deleted=deleted, unread_count=counts.unread)


@router.get(
    "/v1/me/notifications/{notification_id}",
    response_model=NotificationOut,
    summary="One of my notifications",
    responses=errors(404, 422),
)
async def get_notification(
    notification_id: NotificationId, claims: UserDep, runtime: RuntimeDep
) -> NotificationOut:
    """The caller's notification (404 if missing, deleted or another user's)."""
    async with runtime.engine.connect() as conn:
        found = await postgres.get_notification(conn, claims.subject, notification_id)
    if found is None:
        raise _not_found(notification_id)
    return found


async def _set_read(
    runtime: Runtime, user: str, notification_id: str, read: bool
) -> NotificationOut:
    action = InboxAction.READ if read else InboxAction.UNREAD
    async with transaction(runtime) as conn:
        change = await postgres.set_read(conn, user, notification_id, read, utcnow())
        if change is Change.MISSING:
            raise _not_found(notification_id)
        counts = None
        if change is Change.CHANGED:
            counts = await _publish_change(runtime, conn, user, action, [notification_id])
        found = await postgres.get_notification(conn, user, notification_id)
    if counts is not None:
        await runtime.counts.set(user, counts)
    if found is None:  # deleted concurrently
        raise _not_found(notification_id)
    return found


@router.post(
    "/v1/me/notifications/{notification_id}/read",
    response_model=NotificationOut,
    summary="Mark one of my notifications read",
    responses=errors(404, 422, 503),
)
async def mark_read(
    notification_id: NotificationId, claims: UserDep, runtime: RuntimeDep
) -> NotificationOut:
    """Mark read (idempotent: an already-read notification changes nothing, publishes nothing)."""
    return await _set_read(runtime, claims.subject, notification_id, True)


@router.post(
    "/v1/me/notifications/{notification_id}/unread",
    response_model=NotificationOut,
    summary="Mark one of my notifications unread",
    responses=errors(404, 422, 503),
)
async def mark_unread(
    notification_id: NotificationId, claims: UserDep, runtime: RuntimeDep
) -> NotificationOut:
    """Mark unread (idempotent like :func:`mark_read`)."""
    return await _set_read(runtime, claims.subject, notification_id, False)


@router.delete(
    "/v1/me/notifications/{notification_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Delete one of my notifications",
    responses=errors(404, 422, 503),
)
async def delete_notification(
    notification_id: NotificationId, claims: UserDep, runtime: RuntimeDep
) -> Response:
    """Delete for good (a later version of it stays deleted); 404 if not in my inbox."""
    user = claims.subject
    async with transaction(runtime) as conn:
        deleted = await postgres.delete(conn, user, [notification_id], utcnow())
        if not deleted:
            raise _not_found(notification_id)
        counts = await _publish_change(runtime, conn, user, InboxAction.DELETED, deleted)
    await runtime.counts.set(user, counts)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
