"""End-user preferences and Web Push subscriptions, and the one-click unsubscribe."""

from __future__ import annotations

import html
from typing import Annotated

from fastapi import APIRouter, Path, Query, Response, status
from fastapi.responses import HTMLResponse

from clarion_contracts.registry import PREFERENCES, PUSH_SUBSCRIPTIONS
from clarion_contracts.text import Text
from clarion_contracts.v1 import Preferences, PushKeys, PushSubscription
from clarion_ingest.adapters import postgres
from clarion_ingest.adapters.kafka import Record
from clarion_ingest.adapters.outbox import enqueue
from clarion_ingest.api.common import errors, transaction, utcnow
from clarion_ingest.deps import RuntimeDep, UserDep
from clarion_ingest.domain.models import (
    PreferencesIn,
    PreferencesOut,
    PushSubscriptionIn,
    SubscriptionOut,
    VapidKeyOut,
    default_preferences,
    subscription_id,
    with_email_off,
)
from clarion_ingest.runtime import Runtime
from clarion_kit.auth import AuthError
from clarion_kit.problems import ProblemError, problem_responses
from clarion_kit.unsubscribe_tokens import verify_unsubscribe_token

router = APIRouter(tags=["preferences"])


async def save_preferences(runtime: Runtime, prefs: Preferences) -> None:
    """Store ``prefs`` and its record for the compacted preferences topic (key: user id)
    in one transaction (the record goes through the outbox).

    Raises:
        ProblemError: 503 when PostgreSQL is unreachable (nothing is stored then).
    """
    topic = runtime.settings.topic(PREFERENCES)
    async with transaction(runtime) as conn:
        await postgres.put_preferences(conn, prefs)
        await enqueue(conn, [Record(topic, prefs.user_id.encode(), prefs.to_bytes())])


@router.get(
    "/v1/me/preferences",
    response_model=PreferencesOut,
    summary="My notification preferences",
    responses=errors(),
)
async def get_preferences(claims: UserDep, runtime: RuntimeDep) -> PreferencesOut:
    """The stored preferences, or the defaults (``updated_at`` null) if never saved."""
    async with runtime.engine.connect() as conn:
        prefs = await postgres.get_preferences(conn, claims.subject)
    return PreferencesOut.from_contract(prefs)


@router.put(
    "/v1/me/preferences",
    response_model=PreferencesOut,
    summary="Replace my notification preferences",
    responses=errors(400, 422, 503),
)
async def put_preferences(
    body: PreferencesIn, claims: UserDep, runtime: RuntimeDep
) -> PreferencesOut:
    """Replace the whole document (last write wins) and publish it to the aggregator."""
    prefs = body.to_contract(claims.subject, utcnow())
    await save_preferences(runtime, prefs)
    return PreferencesOut.from_contract(prefs)


@router.post(
    "/v1/me/push-subscriptions",
    status_code=status.HTTP_201_CREATED,
    response_model=SubscriptionOut,
    summary="Register a Web Push subscription of this browser",
    responses=errors(400, 422, 503),
)
async def add_subscription(
    body: PushSubscriptionIn, claims: UserDep, runtime: RuntimeDep
) -> SubscriptionOut:
    """Store and publish the subscription; its id is SHA-256 of the endpoint.

    Registering an endpoint again (same or another user) replaces it.
    """
    endpoint = str(body.endpoint)
    sub_id = subscription_id(endpoint)
    now = utcnow()
    record = PushSubscription(
        subscription_id=sub_id,
        user_id=claims.subject,
        endpoint=body.endpoint,
        keys=body.keys,
        user_agent=body.user_agent,
        active=True,
        updated_at=now,
    )
    topic = runtime.settings.topic(PUSH_SUBSCRIPTIONS)
    async with transaction(runtime) as conn:
        await postgres.put_subscription(
            conn,
            subscription_id=sub_id,
            user_id=claims.subject,
            endpoint=endpoint,
            p256dh=body.keys.p256dh,
            auth=body.keys.auth,
            user_agent=body.user_agent,
            now=now,
        )
        await enqueue(conn, [Record(topic, sub_id.encode(), record.to_bytes())])
    return SubscriptionOut(subscription_id=sub_id, endpoint=endpoint, active=True, updated_at=now)


@router.delete(
    "/v1/me/push-subscriptions/{subscription_id}",
    status_code=status.HTTP_204_NO_CONTENT,
    response_class=Response,
    summary="Remove one of my Web Push subscriptions",
    responses=errors(404, 422, 503),
)
async def remove_subscription(
    subscription_id: Annotated[Text, Path(min_length=1, max_length=128)],
    claims: UserDep,
    runtime: RuntimeDep,
) -> Response:
    """Deactivate the subscription and publish it with ``active=false`` (404 if not mine)."""
    now = utcnow()
    topic = runtime.settings.topic(PUSH_SUBSCRIPTIONS)
    async with transaction(runtime) as conn:
        row = await postgres.deactivate_subscription(conn, claims.subject, subscription_id, now)
        if row is None:
            raise ProblemError(404, detail=f"subscription {subscription_id} does not exist")
        record = PushSubscription(
            subscription_id=subscription_id,
            user_id=claims.subject,
            endpoint=row["endpoint"],
            keys=PushKeys(p256dh=row["p256dh"], auth=row["auth"]),
            user_agent=row["user_agent"],
            active=False,
            reason="unsubscribed",
            updated_at=now,
        )
        await enqueue(conn, [Record(topic, subscription_id.encode(), record.to_bytes())])
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.get(
    "/v1/push/vapid-public-key",
    response_model=VapidKeyOut,
    summary="The VAPID public key for pushManager.subscribe",
    responses=problem_responses(404, 500),
)
async def vapid_public_key(runtime: RuntimeDep) -> VapidKeyOut:
    """The configured VAPID public key (RFC 8292), or 404 when Web Push is not configured."""
    key = runtime.settings.vapid_public_key
    if not key:
        raise ProblemError(404, detail="Web Push is not configured on this deployment")
    return VapidKeyOut(public_key=key)


def _unsubscribe_claims(runtime: Runtime, token: str) -> tuple[str, str]:
    # Only unsubscribe tokens (clarion_kit.unsubscribe_tokens): an access token,
    # whatever its scopes, cannot be used as an unsubscribe link.
    try:
        grant = verify_unsubscribe_token(runtime.settings, token)
    except AuthError as exc:
        raise ProblemError(
            401,
            detail=f"the unsubscribe link is not valid: {exc.message}",
            headers={"WWW-Authenticate": 'Bearer realm="clarion", error="invalid_token"'},
            reason=exc.reason,
        ) from exc
    return grant.user_id, grant.category


_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title}</title>
<meta name="viewport" content="width=device-width,initial-scale=1"></head>
<body style="font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto">
<h1>{title}</h1><p>{text}</p>{form}</body></html>
"""


@router.post(
    "/v1/unsubscribe",
    response_class=HTMLResponse,
    summary="One-click unsubscribe (RFC 8058) from a category's emails",
    responses={200: {"content": {"text/html": {}}}, **errors(422, 503)},
)
async def unsubscribe(
    runtime: RuntimeDep,
    token: Annotated[str, Query(min_length=1, max_length=4096)],
) -> HTMLResponse:
    """Turn email off for the token's category in the user's preferences.

    The token is an unsubscribe token (:mod:`clarion_kit.unsubscribe_tokens`, issued
    by email-worker for the ``List-Unsubscribe`` header) naming the user and the
    category; access tokens are refused with 401. Mail clients POST ``List-Unsubscribe=One-Click``.
    Idempotent: unsubscribing twice publishes again but changes nothing.
    """
    user_id, category = _unsubscribe_claims(runtime, token)
    async with runtime.engine.connect() as conn:
        current = await postgres.get_preferences(conn, user_id)
    now = utcnow()
    prefs = with_email_off(current or default_preferences(user_id, now), category, now)
    await save_preferences(runtime, prefs)
    safe = html.escape(category)
    return HTMLResponse(
        _PAGE.format(
            title="Unsubscribed",
            text=f"You will no longer receive <strong>{safe}</strong> emails.",
            form="",
        )
    )


@router.get(
    "/v1/unsubscribe",
    response_class=HTMLResponse,
    summary="Confirmation page of an unsubscribe link",
    responses={200: {"content": {"text/html": {}}}, **errors(422)},
)
async def unsubscribe_page(
    runtime: RuntimeDep,
    token: Annotated[str, Query(min_length=1, max_length=4096)],
) -> HTMLResponse:
    """A page with a button that POSTs the unsubscribe; GET itself changes nothing.

    Link scanners and prefetchers follow GET links, so RFC 8058 keeps the change on POST.
    """
    _, category = _unsubscribe_claims(runtime, token)
    safe = html.escape(category)
    form = (
        f'<form method="post" action="/v1/unsubscribe?token={html.escape(token, quote=True)}">'
        '<input type="hidden" name="List-Unsubscribe" value="One-Click">'
        '<button type="submit">Unsubscribe</button></form>'
    )
    return HTMLResponse(
        _PAGE.format(
            title="Unsubscribe",
            text=f"Stop receiving <strong>{safe}</strong> emails?",
            form=form,
        )
    )
