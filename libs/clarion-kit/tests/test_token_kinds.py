"""Token kinds: access, admin and unsubscribe tokens are never mistaken for one another;
maximum lifetime; the public development credentials outside development and test."""

from __future__ import annotations

import time

import jwt
import pytest
from pydantic import ValidationError

from clarion_kit import unsubscribe_tokens
from clarion_kit.auth import (
    UNSUBSCRIBE_TOKEN_TYPE,
    AuthError,
    dev_api_key,
    dev_api_key_enabled,
    issue_token,
    verify_admin_token,
    verify_token,
)
from clarion_kit.settings import DEV_JWT_SECRET, ServiceSettings
from clarion_kit.unsubscribe_tokens import issue_unsubscribe_token, verify_unsubscribe_token

SECRET = "a-deployment-secret-of-enough-length-0123456789"


@pytest.fixture
def settings(clean_env: pytest.MonkeyPatch) -> ServiceSettings:
    return ServiceSettings(environment="test")


def test_unsubscribe_token_round_trip(settings: ServiceSettings) -> None:
    token = issue_unsubscribe_token(settings, "ann", "social", 3600)
    grant = verify_unsubscribe_token(settings, token)
    assert (grant.user_id, grant.category) == ("ann", "social")
    assert jwt.get_unverified_header(token)["typ"] == UNSUBSCRIBE_TOKEN_TYPE
    claims = jwt.decode(token, options={"verify_signature": False})
    assert claims["aud"] == "clarion:unsubscribe"
    assert claims["scope"] == "unsubscribe:social"
    assert claims["exp"] - claims["iat"] == 3600


def test_unsubscribe_token_is_not_an_access_token(settings: ServiceSettings) -> None:
    token = issue_unsubscribe_token(settings, "ann", "social", 3600)
    with pytest.raises(AuthError) as err:
        verify_token(settings, token)
    assert err.value.reason == "wrong_token_kind"
    with pytest.raises(AuthError):
        verify_admin_token(settings, token)


def test_unsubscribe_key_differs_from_the_access_key(settings: ServiceSettings) -> None:
    # Without its typ header an unsubscribe token still fails on its signature.
    token = issue_unsubscribe_token(settings, "ann", "social", 3600)
    payload = jwt.decode(token, options={"verify_signature": False})
    untyped = jwt.encode(payload, unsubscribe_tokens._signing_key(settings), algorithm="HS256")
    with pytest.raises(AuthError) as err:
        verify_token(settings, untyped)
    assert err.value.reason == "bad_signature"


def test_access_token_with_an_unsubscribe_scope_is_refused(settings: ServiceSettings) -> None:
    # The shape email-worker used to sign: an ordinary token with scope unsubscribe:<category>.
    now = int(time.time())
    legacy = jwt.encode(
        {"sub": "ann", "scope": "unsubscribe:social", "iat": now, "exp": now + 600},
        settings.jwt_secret,
        algorithm="HS256",
    )
    with pytest.raises(AuthError) as err:
        verify_token(settings, legacy)
    assert err.value.reason == "wrong_token_kind"
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(settings, legacy)
    assert err.value.reason == "wrong_token_kind"
    with pytest.raises(AuthError) as err:
        issue_token(settings, "ann", scopes=("unsubscribe:social",))
    assert err.value.reason == "wrong_token_kind"


def test_access_token_is_not_an_unsubscribe_token(settings: ServiceSettings) -> None:
    token = issue_token(settings, "ann", scopes=("admin",))
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(settings, token)
    assert err.value.reason == "wrong_token_kind"
    forged = jwt.encode(
        {
            "sub": "ann",
            "aud": "clarion:unsubscribe",
            "scope": "unsubscribe:social",
            "iat": int(time.time()),
            "exp": int(time.time()) + 60,
        },
        settings.jwt_secret,
        algorithm="HS256",
        headers={"typ": UNSUBSCRIBE_TOKEN_TYPE},
    )
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(settings, forged)
    assert err.value.reason == "bad_signature"


def test_unsubscribe_token_claims(settings: ServiceSettings) -> None:
    with pytest.raises(AuthError):
        issue_unsubscribe_token(settings, "ann", "two words", 3600)
    with pytest.raises(AuthError):
        issue_unsubscribe_token(settings, "", "social", 3600)
    expired = issue_unsubscribe_token(settings, "ann", "social", 3600, now=int(time.time()) - 7200)
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(settings, expired)
    assert err.value.reason == "expired"
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(settings, "not-a-jwt")
    assert err.value.reason == "malformed"
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(settings, None)
    assert err.value.reason == "missing"
    other = settings.model_copy(update={"jwt_secret": SECRET})
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(other, issue_unsubscribe_token(settings, "ann", "social", 60))
    assert err.value.reason == "bad_signature"


def test_unsubscribe_token_lifetime_is_bounded(settings: ServiceSettings) -> None:
    limit = settings.unsubscribe_token_max_lifetime_seconds
    with pytest.raises(AuthError) as err:
        issue_unsubscribe_token(settings, "ann", "social", limit + 1)
    assert err.value.reason == "lifetime_exceeded"
    generous = settings.model_copy(update={"unsubscribe_token_max_lifetime_seconds": limit * 10})
    long_lived = issue_unsubscribe_token(generous, "ann", "social", limit * 5)
    with pytest.raises(AuthError) as err:
        verify_unsubscribe_token(settings, long_lived)
    assert err.value.reason == "lifetime_exceeded"


def test_admin_token_needs_the_admin_scope(settings: ServiceSettings) -> None:
    assert verify_admin_token(settings, issue_token(settings, "ops", ("admin",))).subject == "ops"
    with pytest.raises(AuthError) as err:
        verify_admin_token(settings, issue_token(settings, "ann"))
    assert err.value.reason == "insufficient_scope"


def test_long_lived_token_is_refused(settings: ServiceSettings) -> None:
    now = int(time.time())
    century = now + 100 * 365 * 86_400
    for claims in (
        {"sub": "ann", "iat": now, "exp": century},
        {"sub": "ann", "exp": century},
        {"sub": "ann", "iat": now, "exp": now + settings.jwt_max_lifetime_seconds + 3600},
    ):
        token = jwt.encode(claims, settings.jwt_secret, algorithm="HS256")
        with pytest.raises(AuthError) as err:
            verify_token(settings, token)
        assert err.value.reason == "lifetime_exceeded", claims
    at_limit = issue_token(settings, "ann", ttl=settings.jwt_max_lifetime_seconds)
    assert verify_token(settings, at_limit).subject == "ann"
    with pytest.raises(AuthError) as err:
        issue_token(settings, "ann", ttl=settings.jwt_max_lifetime_seconds + 1)
    assert err.value.reason == "lifetime_exceeded"


def test_token_without_exp_is_refused(settings: ServiceSettings) -> None:
    token = jwt.encode({"sub": "ann", "iat": int(time.time())}, settings.jwt_secret, "HS256")
    with pytest.raises(AuthError) as err:
        verify_token(settings, token)
    assert err.value.reason == "invalid_claims"


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_dev_secret_refused_at_start_up(clean_env: pytest.MonkeyPatch, environment: str) -> None:
    with pytest.raises(ValidationError, match="development JWT secret"):
        ServiceSettings(environment=environment)
    with pytest.raises(ValidationError, match="development JWT secret"):
        ServiceSettings(environment=environment, jwt_algorithm="RS256", jwks_url="https://idp/k")
    assert ServiceSettings(environment=environment, jwt_secret=SECRET).jwt_secret == SECRET


@pytest.mark.parametrize("environment", ["staging", "production"])
def test_dev_secret_refused_at_runtime(clean_env: pytest.MonkeyPatch, environment: str) -> None:
    # Settings copied without validation still may not trust the public secret.
    dev = ServiceSettings(environment="development")
    token = issue_token(dev, "ann")
    staged = dev.model_copy(update={"environment": environment})
    assert staged.jwt_secret == DEV_JWT_SECRET
    with pytest.raises(AuthError) as err:
        verify_token(staged, token)
    assert err.value.reason == "untrusted_key"
    with pytest.raises(AuthError):
        issue_token(staged, "ann")
    with pytest.raises(AuthError):
        verify_unsubscribe_token(staged, issue_unsubscribe_token(dev, "ann", "social", 60))
    assert not dev_api_key_enabled(staged)
    with pytest.raises(AuthError):
        dev_api_key(staged)
    assert not dev_api_key_enabled(ServiceSettings(environment=environment, jwt_secret=SECRET))


@pytest.mark.parametrize("environment", ["development", "test"])
def test_dev_credentials_work_in_development_and_test(
    clean_env: pytest.MonkeyPatch, environment: str
) -> None:
    s = ServiceSettings(environment=environment)
    assert verify_token(s, issue_token(s, "ann")).subject == "ann"
    assert dev_api_key(s).startswith("clk_dev_")


def test_api_docs_setting(clean_env: pytest.MonkeyPatch) -> None:
    assert ServiceSettings(environment="development").serves_api_docs
    assert ServiceSettings(environment="test").serves_api_docs
    assert not ServiceSettings(environment="staging", jwt_secret=SECRET).serves_api_docs
    assert not ServiceSettings(environment="production", jwt_secret=SECRET).serves_api_docs
    prod = ServiceSettings(environment="production", jwt_secret=SECRET, api_docs_enabled=True)
    assert prod.serves_api_docs
    assert not ServiceSettings(environment="test", api_docs_enabled=False).serves_api_docs
