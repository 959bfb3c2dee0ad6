"""Authentication: end-user and admin access tokens (JWT, RFC 7519) and producer API keys.

Token kinds (docs/security.md):

- **access token**: an end user's ``Authorization: Bearer <JWT>``. Development and
  tests sign with HS256 and ``settings.jwt_secret``; production may verify
  RS256/ES256 tokens of an identity provider whose keys are published at
  ``settings.jwks_url`` (RFC 7517). Claims used: ``sub`` (user id), ``scope``
  (space-separated, RFC 8693 §4.2), ``exp`` (required), ``iat``, and ``iss`` /
  ``aud`` when configured. ``exp - iat`` may not exceed
  ``settings.jwt_max_lifetime_seconds``. Verified by :func:`verify_token`.
- **admin token**: an access token that also holds :data:`ADMIN_SCOPE`
  (:func:`verify_admin_token`).
- **unsubscribe token**: single purpose, bound to a user and an email category,
  see :mod:`clarion_kit.unsubscribe_tokens`. It is signed with a key derived from
  ``jwt_secret`` and carries its own ``typ`` header, audience and scope, so it is
  never accepted as an access token (and the reverse).

Producers (services publishing domain events) present an API key; only its
SHA-256 hash is stored (:func:`hash_api_key`). In development and test the key
from :func:`dev_api_key` is accepted so a fresh stack can be used at once.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import TYPE_CHECKING, Any

import jwt

from clarion_kit.problems import ProblemError

if TYPE_CHECKING:
    from clarion_kit.settings import ServiceSettings

DEFAULT_TOKEN_TTL = timedelta(hours=1)
API_KEY_PREFIX = "clk_"
ADMIN_SCOPE = "admin"
"""The scope that makes an access token an admin token."""
UNSUBSCRIBE_SCOPE_PREFIX = "unsubscribe:"
"""Scopes with this prefix belong to unsubscribe tokens; an access token holding one
is refused (tokens of that shape were issued as unsubscribe links in the past)."""
UNSUBSCRIBE_AUDIENCE = "clarion:unsubscribe"
"""The ``aud`` claim of unsubscribe tokens."""
UNSUBSCRIBE_TOKEN_TYPE = "clarion-unsubscribe+jwt"
"""The ``typ`` header of unsubscribe tokens (explicit typing, RFC 8725 §3.11)."""
_LEEWAY_SECONDS = 30


class AuthError(Exception):
    """A credential was missing, malformed, expired or not trusted.

    Attributes:
        reason: a short machine-readable code: ``missing``, ``malformed``,
            ``expired``, ``bad_signature``, ``invalid_claims``, ``insufficient_scope``,
            ``unknown_key``, ``untrusted_key``, ``wrong_token_kind``,
            ``lifetime_exceeded``, ``invalid_api_key``.
        message: a human-readable explanation, safe to return to the client.
    """

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Claims:
    """The verified claims of a JWT.

    Attributes:
        subject: ``sub``, the user id.
        scopes: ``scope`` split on spaces.
        expires_at / issued_at: ``exp`` / ``iat`` as Unix seconds (``iat`` may be None).
        issuer / audience: ``iss`` / ``aud`` when present.
        raw: every claim as decoded.
    """

    subject: str
    scopes: frozenset[str] = frozenset()
    expires_at: int = 0
    issued_at: int | None = None
    issuer: str | None = None
    audience: str | list[str] | None = None
    raw: Mapping[str, Any] = field(default_factory=dict)

    def has_scope(self, scope: str) -> bool:
        """True if ``scope`` was granted."""
        return scope in self.scopes

    def require_scopes(self, *scopes: str) -> None:
        """Raise :class:`AuthError` (``insufficient_scope``) unless all ``scopes`` are granted."""
        missing = [s for s in scopes if s not in self.scopes]
        if missing:
            raise AuthError("insufficient_scope", f"missing scope(s): {' '.join(missing)}")


def issue_token(
    settings: ServiceSettings,
    subject: str,
    scopes: Iterable[str] = (),
    ttl: timedelta | int = DEFAULT_TOKEN_TTL,
    *,
    extra_claims: Mapping[str, Any] | None = None,
    private_key: Any = None,
    key_id: str | None = None,
    now: int | None = None,
) -> str:
    """Sign an access token (JWT, RFC 7519) for ``subject``.

    Args:
        settings: ``jwt_algorithm``, ``jwt_secret`` (HMAC) and ``jwt_issuer`` /
            ``jwt_audience`` (added as ``iss`` / ``aud`` when set).
        subject: the user id (``sub``).
        scopes: granted scopes, joined with spaces into ``scope``.
        ttl: lifetime (``timedelta`` or seconds); ``exp = iat + ttl``.
        extra_claims: more claims (cannot override the ones above).
        private_key: the PEM or key object for RS256/ES256; HMAC uses ``jwt_secret``.
        key_id: the ``kid`` header, so verifiers pick the key from a JWKS.
        now: issue time in Unix seconds (default: the current time).

    Raises:
        AuthError: ``malformed`` when an asymmetric algorithm has no ``private_key``;
            ``lifetime_exceeded`` when ``ttl`` exceeds ``jwt_max_lifetime_seconds``;
            ``wrong_token_kind`` for an ``unsubscribe:`` scope (see
            :func:`clarion_kit.unsubscribe_tokens.issue_unsubscribe_token`);
            ``untrusted_key`` for the development secret outside development and test.
    """
    issued = int(time.time()) if now is None else now
    seconds = int(ttl.total_seconds()) if isinstance(ttl, timedelta) else int(ttl)
    scopes = tuple(scopes)
    if seconds > settings.jwt_max_lifetime_seconds:
        raise AuthError(
            "lifetime_exceeded",
            f"a token may live at most {settings.jwt_max_lifetime_seconds}s (asked: {seconds}s)",
        )
    if any(s.startswith(UNSUBSCRIBE_SCOPE_PREFIX) for s in scopes):
        raise AuthError("wrong_token_kind", "unsubscribe scopes belong to unsubscribe tokens")
    if settings.jwt_algorithm.startswith("HS"):
        refuse_dev_secret(settings)
    payload: dict[str, Any] = dict(extra_claims or {})
    payload.update(
        {"sub": subject, "scope": " ".join(scopes), "iat": issued, "exp": issued + seconds}
    )
    if settings.jwt_issuer:
        payload["iss"] = settings.jwt_issuer
    if settings.jwt_audience:
        payload["aud"] = settings.jwt_audience
    algorithm = settings.jwt_algorithm
    if algorithm.startswith("HS"):
        key: Any = settings.jwt_secret
    elif private_key is None:
        raise AuthError("malformed", f"{algorithm} tokens need a private key to be issued")
    else:
        key = private_key
    headers = {"kid": key_id} if key_id else None
    return jwt.encode(payload, key, algorithm=algorithm, headers=headers)


class JwksCache:
    """Resolves signing keys from a JWKS URL (RFC 7517), cached (PyJWT ``PyJWKClient``).

    Args:
        url: the JWKS document URL.
        lifespan_seconds: how long fetched keys are kept.
    """

    def __init__(self, url: str, lifespan_seconds: int = 300) -> None:
        self.client = jwt.PyJWKClient(url, cache_keys=True, lifespan=lifespan_seconds, timeout=5)

    def key_for(self, token: str) -> Any:
        """The verification key matching the token's ``kid``.

        Raises:
            AuthError: ``unknown_key`` when the key set cannot be fetched or has no match.
        """
        try:
            return self.client.get_signing_key_from_jwt(token).key
        except jwt.PyJWKClientError as exc:
            raise AuthError("unknown_key", f"no trusted key for this token: {exc}") from exc
        except jwt.DecodeError as exc:
            raise AuthError("malformed", "the token is not a well-formed JWT") from exc


_jwks_caches: dict[str, JwksCache] = {}


def _jwks_for(url: str) -> JwksCache:
    cache = _jwks_caches.get(url)
    if cache is None:
        cache = _jwks_caches[url] = JwksCache(url)
    return cache


def refuse_dev_secret(settings: ServiceSettings) -> None:
    """Refuse the public development secret outside development and test.

    Settings validation already refuses it at start-up; this check holds for
    settings built without validation (``model_copy``) too.

    Raises:
        AuthError: ``untrusted_key`` when ``jwt_secret`` is :data:`DEV_JWT_SECRET`
            and ``environment`` is not ``development`` or ``test``.
    """
    from clarion_kit.settings import DEV_JWT_SECRET

    if settings.jwt_secret == DEV_JWT_SECRET and not settings.allows_dev_credentials:
        raise AuthError(
            "untrusted_key",
            f"the development secret is not trusted in {settings.environment!r}",
        )


def decode_error(exc: jwt.InvalidTokenError, *, expired: str) -> AuthError:
    """The :class:`AuthError` for a PyJWT decoding failure (RFC 7519 validation).

    ``expired`` is the text for an expired token; the codes are ``expired``,
    ``bad_signature``, ``malformed`` and ``invalid_claims``.
    """
    if isinstance(exc, jwt.ExpiredSignatureError):
        return AuthError("expired", expired)
    if isinstance(exc, jwt.InvalidSignatureError):
        return AuthError("bad_signature", "the token signature is not valid")
    if isinstance(exc, jwt.DecodeError):
        return AuthError("malformed", "the token is not a well-formed JWT")
    return AuthError("invalid_claims", f"the token claims are not valid: {exc}")


def check_lifetime(payload: Mapping[str, Any], max_seconds: int, leeway_seconds: int) -> None:
    """Refuse a token living longer than ``max_seconds``.

    The lifetime is ``exp - iat``, or ``exp - now`` when there is no ``iat``;
    ``leeway_seconds`` tolerates rounding by issuers.

    Raises:
        AuthError: ``lifetime_exceeded`` beyond ``max_seconds + leeway_seconds``.
    """
    exp = int(payload["exp"])
    iat = payload.get("iat")
    start = int(iat) if isinstance(iat, int | float) else int(time.time())
    if exp - start > max_seconds + leeway_seconds:
        raise AuthError(
            "lifetime_exceeded",
            f"the token lives {exp - start}s, more than the accepted {max_seconds}s",
        )


def _refuse_unsubscribe_header(token: str) -> None:
    try:
        header = jwt.get_unverified_header(token)
    except jwt.DecodeError as exc:
        raise AuthError("malformed", "the token is not a well-formed JWT") from exc
    if header.get("typ") == UNSUBSCRIBE_TOKEN_TYPE:
        raise AuthError("wrong_token_kind", "an unsubscribe token is not an access token")


def verify_token(
    settings: ServiceSettings,
    token: str | None,
    *,
    required_scopes: Iterable[str] = (),
    key: Any = None,
    leeway_seconds: int = _LEEWAY_SECONDS,
) -> Claims:
    """Verify an access token (JWT): its signature, claims and kind, and return the claims.

    The algorithm is pinned to ``settings.jwt_algorithm`` (the token's ``alg``
    header is not trusted: RFC 8725 §3.1). HMAC algorithms use ``jwt_secret``
    (the public development secret only in development and test); others use
    ``key`` if given, else the key from ``settings.jwks_url`` matching the token's
    ``kid``. ``exp`` and ``sub`` are required; ``iss`` / ``aud`` are checked when
    configured; ``exp - iat`` (or ``exp - now``) may not exceed
    ``settings.jwt_max_lifetime_seconds``. Unsubscribe tokens (their ``typ``,
    audience or an ``unsubscribe:`` scope) are refused. ``leeway_seconds``
    tolerates clock skew.

    Raises:
        AuthError: ``missing``, ``malformed``, ``expired``, ``bad_signature``,
            ``invalid_claims``, ``unknown_key``, ``untrusted_key``,
            ``wrong_token_kind``, ``lifetime_exceeded`` or ``insufficient_scope``.
    """
    if not token:
        raise AuthError("missing", "no bearer token")
    _refuse_unsubscribe_header(token)
    algorithm = settings.jwt_algorithm
    if algorithm.startswith("HS"):
        refuse_dev_secret(settings)
        verify_key: Any = settings.jwt_secret
    elif key is not None:
        verify_key = key
    elif settings.jwks_url:
        verify_key = _jwks_for(settings.jwks_url).key_for(token)
    else:
        raise AuthError("unknown_key", f"{algorithm} needs a key or jwks_url to verify tokens")
    try:
        payload: dict[str, Any] = jwt.decode(
            token,
            verify_key,
            algorithms=[algorithm],
            audience=settings.jwt_audience,
            issuer=settings.jwt_issuer,
            leeway=leeway_seconds,
            options={"require": ["exp", "sub"], "verify_aud": settings.jwt_audience is not None},
        )
    except jwt.InvalidTokenError as exc:
        raise decode_error(exc, expired="the token has expired") from exc
    check_lifetime(payload, settings.jwt_max_lifetime_seconds, leeway_seconds)
    audiences = payload.get("aud")
    if audiences == UNSUBSCRIBE_AUDIENCE or (
        isinstance(audiences, list) and UNSUBSCRIBE_AUDIENCE in audiences
    ):
        raise AuthError("wrong_token_kind", "an unsubscribe token is not an access token")
    scope = payload.get("scope", "")
    if isinstance(scope, list):
        scopes = frozenset(str(s) for s in scope)
    elif isinstance(scope, str):
        scopes = frozenset(scope.split())
    else:
        raise AuthError("invalid_claims", "scope must be a space-separated string")
    if any(s.startswith(UNSUBSCRIBE_SCOPE_PREFIX) for s in scopes):
        raise AuthError("wrong_token_kind", "an unsubscribe token is not an access token")
    subject = payload.get("sub")
    if not isinstance(subject, str) or not subject:
        raise AuthError("invalid_claims", "sub must be a non-empty string")
    iat = payload.get("iat")
    claims = Claims(
        subject=subject,
        scopes=scopes,
        expires_at=int(payload["exp"]),
        issued_at=int(iat) if isinstance(iat, int | float) else None,
        issuer=payload.get("iss"),
        audience=payload.get("aud"),
        raw=payload,
    )
    claims.require_scopes(*required_scopes)
    return claims


def verify_admin_token(
    settings: ServiceSettings, token: str | None, *, scope: str = ADMIN_SCOPE, key: Any = None
) -> Claims:
    """Verify an admin token: an access token (:func:`verify_token`) holding ``scope``.

    Raises:
        AuthError: as :func:`verify_token`; ``insufficient_scope`` without ``scope``.
    """
    return verify_token(settings, token, required_scopes=(scope,), key=key)


def auth_problem(error: AuthError, realm: str = "clarion") -> ProblemError:
    """The HTTP answer to an :class:`AuthError`, per RFC 6750 §3 and RFC 9457.

    ``insufficient_scope`` becomes 403, everything else 401; both carry a
    ``WWW-Authenticate: Bearer`` challenge with the RFC 6750 ``error`` code
    (``invalid_request`` for a missing token is omitted, as §3.1 allows).
    Usage: ``except AuthError as e: raise auth_problem(e) from e``.
    """
    if error.reason == "insufficient_scope":
        status, code = 403, "insufficient_scope"
    else:
        status, code = 401, "invalid_token"
    challenge = f'Bearer realm="{realm}"'
    if error.reason != "missing":
        challenge += f', error="{code}", error_description="{error.message}"'
    return ProblemError(
        status,
        detail=error.message,
        headers={"WWW-Authenticate": challenge},
        reason=error.reason,
    )


def bearer_token(authorization: str | None) -> str:
    """The token of an ``Authorization: Bearer <token>`` header (RFC 6750 §2.1).

    Raises:
        AuthError: ``missing`` when the header is absent or not a Bearer credential.
    """
    if not authorization:
        raise AuthError("missing", "no Authorization header")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise AuthError("missing", "the Authorization header is not a Bearer token")
    return token.strip()


def dev_api_key_enabled(settings: ServiceSettings) -> bool:
    """True when the development API key may be accepted: only in development and test."""
    return settings.allows_dev_credentials


def dev_api_key(settings: ServiceSettings) -> str:
    """The development producer API key: ``clk_dev_`` + HMAC-SHA256(jwt_secret, label).

    Deterministic, so every service and tool of one development stack derives the
    same key from the shared ``jwt_secret`` without configuration.

    Raises:
        AuthError: ``invalid_api_key`` outside development and test, where no
            development key exists.
    """
    if not dev_api_key_enabled(settings):
        raise AuthError(
            "invalid_api_key", f"there is no development API key in {settings.environment!r}"
        )
    digest = hmac.new(
        settings.jwt_secret.encode(), b"clarion-dev-api-key", hashlib.sha256
    ).hexdigest()
    return f"{API_KEY_PREFIX}dev_{digest[:32]}"


def generate_api_key() -> str:
    """A new random producer API key: ``clk_`` + 43 URL-safe characters (256 bits)."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def hash_api_key(api_key: str) -> str:
    """The stored form of an API key: lowercase hex SHA-256 of its UTF-8 bytes (64 chars).

    A fast hash suffices: keys are 256-bit random, not guessable passwords.
    """
    return hashlib.sha256(api_key.encode()).hexdigest()


def verify_api_key(api_key: str | None, known_hashes: Iterable[str]) -> bool:
    """True if ``hash_api_key(api_key)`` is one of ``known_hashes`` (constant-time compare)."""
    if not api_key:
        return False
    candidate = hash_api_key(api_key)
    found = False
    for known in known_hashes:
        found |= hmac.compare_digest(candidate, known.lower())
    return found
