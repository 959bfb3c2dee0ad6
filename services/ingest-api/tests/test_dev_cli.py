"""``clarion dev-token`` / ``clarion dev-api-key``: development credentials only."""

from __future__ import annotations

import pytest
from typer.testing import CliRunner

from clarion_devstack.commands.dev import app
from clarion_kit.auth import dev_api_key, verify_token
from clarion_kit.settings import ServiceSettings

runner = CliRunner()


@pytest.fixture(autouse=True)
def development(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("CLARION_ENVIRONMENT", "CLARION_JWT_SECRET", "CLARION_JWT_ALGORITHM"):
        monkeypatch.delenv(name, raising=False)


def test_dev_token_verifies_with_the_shared_settings() -> None:
    result = runner.invoke(app, ["dev-token", "alice", "--ttl", "120"])
    assert result.exit_code == 0, result.output
    claims = verify_token(ServiceSettings(), result.stdout.strip())
    assert claims.subject == "alice"
    assert claims.scopes == frozenset()
    assert claims.issued_at is not None
    assert claims.expires_at - claims.issued_at == 120


def test_dev_token_admin_and_extra_scopes() -> None:
    result = runner.invoke(app, ["dev-token", "root", "--admin", "--scope", "inbox:read"])
    assert result.exit_code == 0, result.output
    claims = verify_token(ServiceSettings(), result.stdout.strip())
    assert claims.scopes == frozenset({"admin", "inbox:read"})


def test_dev_api_key_matches_the_kit() -> None:
    result = runner.invoke(app, ["dev-api-key"])
    assert result.exit_code == 0, result.output
    assert result.stdout.strip() == dev_api_key(ServiceSettings())


@pytest.mark.parametrize("environment", ["test", "staging", "production"])
@pytest.mark.parametrize("command", [["dev-token", "alice"], ["dev-api-key"]])
def test_refused_outside_development(
    monkeypatch: pytest.MonkeyPatch, environment: str, command: list[str]
) -> None:
    monkeypatch.setenv("CLARION_ENVIRONMENT", environment)
    monkeypatch.setenv("CLARION_JWT_SECRET", "s" * 48)
    result = runner.invoke(app, command)
    assert result.exit_code != 0
    assert "refused" in result.output
    assert "eyJ" not in result.stdout
    assert "clk_" not in result.stdout


def test_bad_user_id_is_refused() -> None:
    result = runner.invoke(app, ["dev-token", "two words"])
    assert result.exit_code != 0
    assert "refused" in result.output


def test_dev_token_longer_than_the_maximum_lifetime_is_refused() -> None:
    result = runner.invoke(app, ["dev-token", "alice", "--ttl", str(100 * 365 * 86400)])
    assert result.exit_code != 0
    assert "refused" in result.output
    assert "eyJ" not in result.stdout
