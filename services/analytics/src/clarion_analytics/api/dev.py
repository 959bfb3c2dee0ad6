"""Development-only admin token for the dashboard, refused outside development."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from fastapi import APIRouter

from clarion_analytics.deps import SettingsDep
from clarion_kit.auth import issue_token
from clarion_kit.problems import ProblemError, problem_responses

router = APIRouter(prefix="/v1/dev", tags=["development"])

DEV_TOKEN_TTL = timedelta(hours=8)


@router.get("/admin-token", responses=problem_responses(404))
async def admin_token(settings: SettingsDep) -> dict[str, Any]:
    """Issue a short-lived admin JWT (``sub=dev-admin``) so the dashboard works locally.

    Only when ``environment == "development"``; elsewhere the endpoint does not exist
    (404 problem+json) and operators sign in with a token from their identity provider.
    """
    if settings.environment != "development":
        raise ProblemError(404, detail="development tokens are only issued in development")
    token = issue_token(settings, "dev-admin", scopes=(settings.admin_scope,), ttl=DEV_TOKEN_TTL)
    return {
        "access_token": token,
        "token_type": "Bearer",
        "expires_in": int(DEV_TOKEN_TTL.total_seconds()),
    }
