"""FastAPI dependencies of ingest-api (``Annotated`` aliases): runtime, producers, users.

Authentication failures answer 401 problem+json with ``WWW-Authenticate: Bearer``
(RFC 6750 §3); missing scopes answer 403; rate limits answer 429 with
``Retry-After`` (RFC 9110 §10.2.3). Each authenticated request counts against its
API key's or user's rate limit before the endpoint runs, and each unknown API key
against its client IP's failed-attempt budget (brute-force throttle).

User endpoints accept access tokens only (``clarion_kit.auth.verify_token``):
unsubscribe tokens are refused with 401 everywhere except the unsubscribe endpoint.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request

from clarion_ingest.domain.models import is_user_id
from clarion_ingest.domain.ratelimit import RateDecision
from clarion_ingest.runtime import Runtime
from clarion_ingest.settings import IngestSettings
from clarion_kit.auth import (
    ADMIN_SCOPE,
    AuthError,
    Claims,
    bearer_token,
    dev_api_key,
    dev_api_key_enabled,
    hash_api_key,
    verify_api_key,
    verify_token,
)
from clarion_kit.problems import ProblemError


async def get_runtime(request: Request) -> Runtime:
    """The app's :class:`Runtime` (set by the lifespan).

    A coroutine on purpose: FastAPI runs plain ``def`` dependencies in its thread
    pool, and that hop (a GIL handover per request) costs more than the lookup.

    Raises:
        ProblemError: 503 while the service is starting or stopping.
    """
    runtime: Runtime | None = getattr(request.app.state, "runtime", None)
    if runtime is None:
        raise ProblemError(503, detail="the service is starting", headers={"Retry-After": "1"})
    return runtime


RuntimeDep = Annotated[Runtime, Depends(get_runtime)]


async def get_settings(runtime: RuntimeDep) -> IngestSettings:
    """The service settings."""
    return runtime.settings


SettingsDep = Annotated[IngestSettings, Depends(get_settings)]


def _unauthorized(detail: str, error: str = "invalid_token") -> ProblemError:
    return ProblemError(
        401,
        detail=detail,
        headers={"WWW-Authenticate": f'Bearer realm="clarion", error="{error}"'},
    )


async def _enforce(runtime: Runtime, bucket: str, limit: int) -> None:
    decision = await runtime.limiter.hit(bucket, limit)
    if not decision.allowed:
        raise _over_limit(runtime, decision)


def _over_limit(runtime: Runtime, decision: RateDecision) -> ProblemError:
    return ProblemError(
        429,
        detail=f"rate limit of {decision.limit} requests per "
        f"{runtime.settings.rate_limit_window_seconds}s exceeded",
        headers={"Retry-After": str(decision.retry_after)},
    )


def _client_ip(request: Request) -> str:
    # uvicorn's proxy_headers puts the X-Forwarded-For client here for trusted proxies.
    return request.client.host if request.client else "unknown"


async def _refuse_throttled_client(runtime: Runtime, bucket: str) -> None:
    # A throttled client learns nothing, not even whether its key is right: a known
    # key gets the same 429 (see require_producer).
    limit = runtime.settings.api_key_failure_limit
    decision = await runtime.limiter.peek(bucket, limit)
    if not decision.allowed:
        raise _throttled(limit, runtime.settings, decision)


def _throttled(limit: int, settings: IngestSettings, decision: RateDecision) -> ProblemError:
    return ProblemError(
        429,
        detail=f"too many failed API-key attempts from this address (limit {limit} per "
        f"{settings.rate_limit_window_seconds}s)",
        headers={"Retry-After": str(decision.retry_after)},
    )


_KNOWN_HASHES: dict[tuple[object, ...], tuple[str, ...]] = {}


def _known_key_hashes(settings: IngestSettings) -> tuple[str, ...]:
    """The SHA-256 of every accepted API key, lowercase (the development key's too
    where allowed): derived once per configuration instead of on every request."""
    dev = dev_api_key_enabled(settings)
    cache_key = (tuple(settings.api_key_hashes), dev, settings.jwt_secret if dev else None)
    known = _KNOWN_HASHES.get(cache_key)
    if known is None:
        known = tuple(h.lower() for h in settings.api_key_hashes)
        if dev:
            known += (hash_api_key(dev_api_key(settings)),)
        _KNOWN_HASHES[cache_key] = known
    return known


@dataclass(frozen=True)
class Producer:
    """An authenticated producer: ``key_id`` is the first 16 hex digits of its key's SHA-256."""

    key_id: str


async def require_producer(
    runtime: RuntimeDep,
    request: Request,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
    x_api_key: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Producer:
    """Authenticate a producer by API key (``Authorization: Bearer`` or ``X-API-Key``).

    The key's SHA-256 must be in ``settings.api_key_hashes``; in development and
    test the kit's development key is accepted as well. Unknown keys count against
    the client IP's ``api_key_failure_limit`` per ``rate_limit_window_seconds``;
    beyond it every API-key request of that IP answers 429 until the window passes.

    Raises:
        ProblemError: 401 for a missing or unknown key, 429 over the key's rate limit
            or the IP's failed-attempt limit (with ``Retry-After``).
    """
    key = x_api_key
    if key is None and authorization is not None:
        try:
            key = bearer_token(authorization)
        except AuthError as exc:
            raise _unauthorized(exc.message) from exc
    if not key:
        raise _unauthorized("an API key is required", "invalid_request")
    settings = runtime.settings
    failures = f"authfail:{_client_ip(request)}"
    if not verify_api_key(key, _known_key_hashes(settings)):
        await _refuse_throttled_client(runtime, failures)
        await runtime.limiter.hit(failures, settings.api_key_failure_limit)
        raise _unauthorized("the API key is not valid")
    producer = Producer(key_id=hash_api_key(key)[:16])
    # A known key is checked locally first, so its request costs one Redis round trip:
    # the client's failed-attempt budget is read and the key's request counted together.
    # The answer is the same as checking the budget first: a throttled client gets the
    # same 429 whether its key is right or not.
    throttle, decision = await runtime.limiter.peek_and_hit(
        failures,
        settings.api_key_failure_limit,
        f"key:{producer.key_id}",
        settings.rate_limit_api_key,
    )
    if not throttle.allowed:
        raise _throttled(settings.api_key_failure_limit, settings, throttle)
    if not decision.allowed:
        raise _over_limit(runtime, decision)
    return producer


ProducerDep = Annotated[Producer, Depends(require_producer)]


async def require_user(
    runtime: RuntimeDep,
    authorization: Annotated[str | None, Header(include_in_schema=False)] = None,
) -> Claims:
    """Authenticate an end user by access token (``Authorization: Bearer``).

    The subject is the user id. Unsubscribe tokens, tokens living longer than
    ``jwt_max_lifetime_seconds`` and the development secret outside development
    and test are refused (:func:`clarion_kit.auth.verify_token`).

    Raises:
        ProblemError: 401 for a missing, malformed, expired, untrusted or
            wrong-kind token or a subject that is not a valid user id, 429 over
            the user's rate limit.
    """
    try:
        claims = verify_token(runtime.settings, bearer_token(authorization))
    except AuthError as exc:
        error = "invalid_request" if exc.reason == "missing" else "invalid_token"
        raise _unauthorized(exc.message, error) from exc
    if not is_user_id(claims.subject):
        raise _unauthorized("the token subject is not a valid user id")
    await _enforce(runtime, f"user:{claims.subject}", runtime.settings.rate_limit_user)
    return claims


UserDep = Annotated[Claims, Depends(require_user)]


async def require_admin(claims: UserDep) -> Claims:
    """An end user holding the ``admin`` scope.

    Raises:
        ProblemError: 403 without the scope.
    """
    if not claims.has_scope(ADMIN_SCOPE):
        raise ProblemError(
            403,
            detail="the admin scope is required",
            headers={"WWW-Authenticate": 'Bearer realm="clarion", error="insufficient_scope"'},
        )
    return claims


AdminDep = Annotated[Claims, Depends(require_admin)]
