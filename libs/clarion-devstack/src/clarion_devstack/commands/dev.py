"""``clarion dev-token`` and ``clarion dev-api-key``: development credentials.

Both read the shared settings (``CLARION_ENVIRONMENT``, ``CLARION_JWT_SECRET``...)
and refuse to run outside ``development``, so they can never mint credentials
for a real deployment. Their commands are merged at the top level of ``clarion``.

Example::

    export TOKEN=$(clarion dev-token alice)
    curl -H "Authorization: Bearer $TOKEN" localhost:8000/v1/me/notifications
    curl -H "X-API-Key: $(clarion dev-api-key)" -d @event.json localhost:8000/v1/events
"""

from __future__ import annotations

from datetime import timedelta

import typer
from pydantic import ValidationError

from clarion_kit.auth import AuthError, dev_api_key, issue_token
from clarion_kit.settings import ServiceSettings

app = typer.Typer(help="Development credentials (refused outside development).")

ADMIN_SCOPE = "admin"


def _development_settings() -> ServiceSettings:
    try:
        settings = ServiceSettings()
    except ValidationError as exc:
        typer.echo(f"refused: the Clarion settings are not valid: {exc}", err=True)
        raise typer.Exit(2) from exc
    if settings.environment != "development":
        typer.echo(
            f"refused: CLARION_ENVIRONMENT is {settings.environment!r}; development "
            "credentials are only issued when it is 'development'",
            err=True,
        )
        raise typer.Exit(1)
    return settings


@app.command("dev-token")
def dev_token(
    user_id: str = typer.Argument(..., help="The user id (the token's subject)"),
    admin: bool = typer.Option(False, "--admin", help="Grant the admin scope"),
    ttl: int = typer.Option(
        3600, "--ttl", min=1, help="Lifetime in seconds (at most CLARION_JWT_MAX_LIFETIME_SECONDS)"
    ),
    scope: list[str] = typer.Option([], "--scope", help="Grant another scope (repeatable)"),
) -> None:
    """Print a user JWT (HS256, the development secret) for USER_ID."""
    settings = _development_settings()
    if not user_id.strip() or any(c.isspace() for c in user_id):
        typer.echo("refused: the user id must be non-empty without whitespace", err=True)
        raise typer.Exit(2)
    scopes = [*scope, ADMIN_SCOPE] if admin else list(scope)
    try:
        token = issue_token(settings, user_id, scopes=scopes, ttl=timedelta(seconds=ttl))
    except AuthError as exc:
        typer.echo(f"refused: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(token)


@app.command("dev-api-key")
def dev_api_key_command() -> None:
    """Print the development producer API key (for POST /v1/events)."""
    settings = _development_settings()
    try:
        key = dev_api_key(settings)
    except AuthError as exc:
        typer.echo(f"refused: {exc.message}", err=True)
        raise typer.Exit(1) from exc
    typer.echo(key)
