"""JWT issue/verify round trips, failure reasons, JWKS, API keys."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, HTTPServer
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import rsa

from clarion_kit.auth import (
    AuthError,
    auth_problem,
    bearer_token,
    dev_api_key,
    dev_api_key_enabled,
    generate_api_key,
    hash_api_key,
    issue_token,
    verify_api_key,
    verify_token,
)
from clarion_kit.settings import ServiceSettings


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> ServiceSettings:
    return ServiceSettings()


def test_round_trip(settings: ServiceSettings) -> None:
    token = issue_token(settings, "alice", scopes=("inbox:read", "inbox:write"), ttl=60)
    claims = verify_token(settings, token)
    assert claims.subject == "alice"
    assert claims.scopes == frozenset({"inbox:read", "inbox:write"})
    assert claims.issued_at is not None
    assert claims.expires_at == claims.issued_at + 60
    assert claims.has_scope("inbox:read")
    assert jwt.decode(token, options={"verify_signature": False})["scope"] == (
        "inbox:read inbox:write"
    )


def test_expired(settings: ServiceSettings) -> None:
    token = issue_token(settings, "alice", ttl=10, now=int(time.time()) - 3600)
    with pytest.raises(AuthError) as err:
        verify_token(settings, token)
    assert err.value.reason == "expired"


def test_leeway_accepts_small_skew(settings: ServiceSettings) -> None:
    token = issue_token(settings, "alice", ttl=10, now=int(time.time()) - 20)
    assert verify_token(settings, token, leeway_seconds=30).subject == "alice"


def test_bad_signature(settings: ServiceSettings) -> None:
    other = ServiceSettings(jwt_secret="another-secret-of-enough-length-0123456789")
    token = issue_token(other, "mallory")
    with pytest.raises(AuthError) as err:
        verify_token(settings, token)
    assert err.value.reason == "bad_signature"


def test_malformed_and_missing(settings: ServiceSettings) -> None:
    with pytest.raises(AuthError) as err:
        verify_token(settings, "not-a-jwt")
    assert err.value.reason == "malformed"
    with pytest.raises(AuthError) as err:
        verify_token(settings, None)
    assert err.value.reason == "missing"


def test_alg_none_is_refused(settings: ServiceSettings) -> None:
    token = jwt.encode({"sub": "x", "exp": int(time.time()) + 60}, None, algorithm="none")
    with pytest.raises(AuthError):
        verify_token(settings, token)


def test_missing_sub_is_invalid(settings: ServiceSettings) -> None:
    token = jwt.encode({"exp": int(time.time()) + 60}, settings.jwt_secret, algorithm="HS256")
    with pytest.raises(AuthError) as err:
        verify_token(settings, token)
    assert err.value.reason == "invalid_claims"


def test_required_scopes(settings: ServiceSettings) -> None:
    token = issue_token(settings, "alice", scopes=("inbox:read",))
    verify_token(settings, token, required_scopes=("inbox:read",))
    with pytest.raises(AuthError) as err:
        verify_token(settings, token, required_scopes=("admin",))
    assert err.value.reason == "insufficient_scope"


def test_issuer_and_audience(clean_env: pytest.MonkeyPatch) -> None:
    s = ServiceSettings(jwt_issuer="https://idp", jwt_audience="clarion")
    claims = verify_token(s, issue_token(s, "bob"))
    assert (claims.issuer, claims.audience) == ("https://idp", "clarion")
    other = ServiceSettings(jwt_issuer="https://idp", jwt_audience="someone-else")
    with pytest.raises(AuthError) as err:
        verify_token(s, issue_token(other, "bob"))
    assert err.value.reason == "invalid_claims"


@pytest.fixture
def rsa_key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


def test_rs256_with_explicit_key(clean_env: pytest.MonkeyPatch, rsa_key: Any) -> None:
    s = ServiceSettings(jwt_algorithm="RS256")
    token = issue_token(s, "carol", scopes=("a",), private_key=rsa_key)
    assert verify_token(s, token, key=rsa_key.public_key()).subject == "carol"
    with pytest.raises(AuthError):
        issue_token(s, "carol")


@pytest.fixture
def jwks_server(rsa_key: Any) -> Iterator[str]:
    jwk = json.loads(jwt.algorithms.RSAAlgorithm.to_jwk(rsa_key.public_key()))
    jwk.update(kid="k1", use="sig", alg="RS256")
    body = json.dumps({"keys": [jwk]}).encode()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, *args: Any) -> None:
            pass

    server = HTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_port}/jwks.json"
    finally:
        server.shutdown()
        server.server_close()


def test_rs256_with_jwks_url(clean_env: pytest.MonkeyPatch, rsa_key: Any, jwks_server: str) -> None:
    s = ServiceSettings(jwt_algorithm="RS256", jwks_url=jwks_server)
    token = issue_token(s, "dave", private_key=rsa_key, key_id="k1")
    assert verify_token(s, token).subject == "dave"
    unknown = issue_token(s, "dave", private_key=rsa_key, key_id="nope")
    with pytest.raises(AuthError) as err:
        verify_token(s, unknown)
    assert err.value.reason == "unknown_key"


def test_bearer_token() -> None:
    assert bearer_token("Bearer abc.def") == "abc.def"
    assert bearer_token("bearer  xyz ") == "xyz"
    for bad in (None, "", "Basic abc", "Bearer "):
        with pytest.raises(AuthError):
            bearer_token(bad)


def test_dev_api_key(clean_env: pytest.MonkeyPatch) -> None:
    s = ServiceSettings()
    key = dev_api_key(s)
    assert key == dev_api_key(ServiceSettings())
    assert key.startswith("clk_dev_")
    other = ServiceSettings(jwt_secret="another-secret-of-enough-length-0123456789")
    assert dev_api_key(other) != key
    prod = ServiceSettings(environment="production", jwt_secret="p" * 40)
    assert not dev_api_key_enabled(prod)
    with pytest.raises(AuthError):
        dev_api_key(prod)


def test_api_key_hashing() -> None:
    key = generate_api_key()
    assert key.startswith("clk_")
    assert len(key) >= 40
    digest = hash_api_key(key)
    assert len(digest) == 64
    assert verify_api_key(key, ["0" * 64, digest])
    assert verify_api_key(key, [digest.upper()])
    assert not verify_api_key(key + "x", [digest])
    assert not verify_api_key(None, [digest])
    assert generate_api_key() != key


def test_auth_problem() -> None:
    expired = auth_problem(AuthError("expired", "the token has expired"))
    assert expired.status == 401
    assert expired.headers["WWW-Authenticate"] == (
        'Bearer realm="clarion", error="invalid_token", error_description="the token has expired"'
    )
    assert expired.extensions == {"reason": "expired"}
    assert auth_problem(AuthError("missing", "no token")).headers["WWW-Authenticate"] == (
        'Bearer realm="clarion"'
    )
    scope = auth_problem(AuthError("insufficient_scope", "missing scope(s): admin"))
    assert scope.status == 403
    assert 'error="insufficient_scope"' in scope.headers["WWW-Authenticate"]
