"""FastAPI dependencies of analytics: settings, repository and the admin credential."""

from __future__ import annotations

from typing import Annotated

from fastapi import Depends, Header, Request

from clarion_analytics.adapters.postgres import AnalyticsRepository
from clarion_analytics.settings import AnalyticsSettings
from clarion_kit.auth import AuthError, Claims, bearer_token, verify_admin_token
from clarion_kit.problems import ProblemError


def get_settings(request: Request) -> AnalyticsSettings:
    """The settings the app was created with."""
    settings: AnalyticsSettings = request.app.state.settings
    return settings


def get_repo(request: Request) -> AnalyticsRepository:
    """The repository opened by the lifespan.

    Raises:
        ProblemError: 503 while the service is starting or stopping.
    """
    repo: AnalyticsRepository | None = getattr(request.app.state, "repo", None)
    if repo is None:
        raise ProblemError(503, detail="analytics is not ready", headers={"Retry-After": "1"})
    return repo


SettingsDep = Annotated[AnalyticsSettings, Depends(get_settings)]
RepoDep = Annotated[AnalyticsRepository, Depends(get_repo)]


def require_admin(
    settings: SettingsDep,
    authorization: Annotated[str | None, Header()] = None,
) -> Claims:
    """Verify the bearer admin token (RFC 6750): an access token holding the admin scope.

    Unsubscribe tokens, over-long lifetimes and the development secret outside
    development and test are refused (:func:`clarion_kit.auth.verify_admin_token`).

    Raises:
        ProblemError: 401 (with ``WWW-Authenticate: Bearer``) for a missing or invalid
            token, 403 when the token lacks the admin scope.
    """
    try:
        token = bearer_token(authorization)
        return verify_admin_token(settings, token, scope=settings.admin_scope)
    except AuthError as exc:
        if exc.reason == "insufficient_scope":
            raise ProblemError(
                403,
                detail=f"the analytics API requires the '{settings.admin_scope}' scope",
                headers={
                    "WWW-Authenticate": (
                        f'Bearer error="insufficient_scope", scope="{settings.admin_scope}"'
                    )
                },
            ) from exc
        challenge = "Bearer" if exc.reason == "missing" else 'Bearer error="invalid_token"'
        raise ProblemError(
            401, detail=exc.message, headers={"WWW-Authenticate": challenge}
        ) from exc


AdminDep = Annotated[Claims, Depends(require_admin)]
