"""Unsubscribe tokens: single-purpose JWTs for one-click email unsubscribe (RFC 8058).

An unsubscribe token lets whoever holds an email turn off that email's category
for its recipient, and nothing else: it is not an access token. It is a JWT
(RFC 7519) with

- header ``alg: HS256``, ``typ: clarion-unsubscribe+jwt`` (explicit typing,
  RFC 8725 §3.11);
- claims ``sub`` (user id), ``aud: clarion:unsubscribe``, ``scope:
  unsubscribe:<category>`` (exactly one), ``iat`` and ``exp`` (both required,
  ``exp - iat`` at most ``settings.unsubscribe_token_max_lifetime_seconds``);
- signed with a key derived from ``jwt_secret`` (HMAC-SHA256 over a fixed label),
  so an access-token verifier fails on its signature too, and this kind stays
  HS256 even where access tokens come from an identity provider (RS256/ES256).

email-worker issues them for ``List-Unsubscribe``; ingest-api's unsubscribe
endpoint is the only place that accepts them.
"""

from __future__ import annotations

import hashlib
import hmac
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import jwt

from clarion_kit.auth import (
    UNSUBSCRIBE_AUDIENCE,
    UNSUBSCRIBE_SCOPE_PREFIX,
    UNSUBSCRIBE_TOKEN_TYPE,
    AuthError,
    check_lifetime,
    decode_error,
    refuse_dev_secret,
)

if TYPE_CHECKING:
    from clarion_kit.settings import ServiceSettings

_ALGORITHM = "HS256"
_KEY_LABEL = b"clarion unsubscribe token v1"
_LEEWAY_SECONDS = 30


@dataclass(frozen=True)
class UnsubscribeGrant:
    """What a verified unsubscribe token allows.

    Attributes:
        user_id: ``sub``, whose preferences may change.
        category: the email category that may be turned off.
        expires_at: ``exp`` in Unix seconds.
    """

    user_id: str
    category: str
    expires_at: int


def _signing_key(settings: ServiceSettings) -> bytes:
    # A key of its own: a token signed with it never verifies as an access token.
    return hmac.new(settings.jwt_secret.encode(), _KEY_LABEL, hashlib.sha256).digest()


_MAX_CATEGORY_LENGTH = 64


def _valid_category(category: str) -> bool:
    return 0 < len(category) <= _MAX_CATEGORY_LENGTH and not any(c.isspace() for c in category)


def issue_unsubscribe_token(
    settings: ServiceSettings,
    user_id: str,
    category: str,
    ttl_seconds: int,
    *,
    now: int | None = None,
) -> str:
    """Sign an unsubscribe token for ``user_id`` and ``category``.

    Args:
        settings: ``jwt_secret`` (the signing key is derived from it) and
            ``unsubscribe_token_max_lifetime_seconds``.
        user_id: the recipient (``sub``).
        category: the email category (1-64 characters, no whitespace), granted as
            ``unsubscribe:<category>``.
        ttl_seconds: lifetime in seconds (``exp = iat + ttl_seconds``).
        now: issue time in Unix seconds (default: the current time).

    Raises:
        AuthError: ``invalid_claims`` for an empty user id or a bad category,
            ``lifetime_exceeded`` over the maximum lifetime, ``untrusted_key`` for
            the development secret outside development and test.
    """
    refuse_dev_secret(settings)
    if not user_id:
        raise AuthError("invalid_claims", "the user id must not be empty")
    if not _valid_category(category):
        raise AuthError("invalid_claims", "the category must be 1-64 characters without whitespace")
    if ttl_seconds > settings.unsubscribe_token_max_lifetime_seconds:
        raise AuthError(
            "lifetime_exceeded",
            f"an unsubscribe token may live at most "
            f"{settings.unsubscribe_token_max_lifetime_seconds}s (asked: {ttl_seconds}s)",
        )
    issued = int(time.time()) if now is None else now
    payload = {
        "sub": user_id,
        "aud": UNSUBSCRIBE_AUDIENCE,
        "scope": UNSUBSCRIBE_SCOPE_PREFIX + category,
        "iat": issued,
        "exp": issued + ttl_seconds,
    }
    return jwt.encode(
        payload,
        _signing_key(settings),
        algorithm=_ALGORITHM,
        headers={"typ": UNSUBSCRIBE_TOKEN_TYPE},
    )


def verify_unsubscribe_token(
    settings: ServiceSettings, token: str | None, *, leeway_seconds: int = _LEEWAY_SECONDS
) -> UnsubscribeGrant:
    """Verify an unsubscribe token and return the user and category it covers.

    Access tokens (whatever their scopes) are refused: their ``typ``, audience and
    signing key differ.

    Raises:
        AuthError: ``missing``, ``malformed``, ``expired``, ``bad_signature``,
            ``invalid_claims``, ``wrong_token_kind``, ``lifetime_exceeded`` or
            ``untrusted_key``.
    """
    if not token:
        raise AuthError("missing", "no unsubscribe token")
    refuse_dev_secret(settings)
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise AuthError("malformed", "the token is not a well-formed JWT") from exc
    if header.get("typ") != UNSUBSCRIBE_TOKEN_TYPE:
        raise AuthError("wrong_token_kind", "this is not an unsubscribe token")
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            _signing_key(settings),
            algorithms=[_ALGORITHM],
            audience=UNSUBSCRIBE_AUDIENCE,
            leeway=leeway_seconds,
            options={"require": ["exp", "iat", "sub", "aud"]},
        )
    except jwt.InvalidTokenError as exc:
        raise decode_error(exc, expired="the unsubscribe link has expired") from exc
    check_lifetime(payload, settings.unsubscribe_token_max_lifetime_seconds, leeway_seconds)
    subject = payload.get("sub")
    scope = payload.get("scope")
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid_claims", "sub must be a non-empty string")
    if not isinstance(scope, str) or not scope.startswith(UNSUBSCRIBE_SCOPE_PREFIX):
        raise AuthError("invalid_claims", "scope must be one unsubscribe:<category>")
    category = scope.removeprefix(UNSUBSCRIBE_SCOPE_PREFIX)
    if not _valid_category(category):
        raise AuthError("invalid_claims", "scope must be one unsubscribe:<category>")
    return UnsubscribeGrant(user_id=subject, category=category, expires_at=int(payload["exp"]))
