"""Development-only endpoints: configuration of the demo inbox page and user tokens.

The router is mounted only when ``environment == "development"``; elsewhere these
paths answer 404.
"""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query
from pydantic import BaseModel

from clarion_contracts.base import UserId
from clarion_ingest.deps import RuntimeDep
from clarion_ingest.domain.models import ConfigOut
from clarion_kit.auth import issue_token
from clarion_kit.problems import problem_responses

router = APIRouter(tags=["development"])


@router.get(
    "/v1/config",
    response_model=ConfigOut,
    summary="Configuration of the demo inbox page (development only)",
    responses=problem_responses(500),
)
async def config(runtime: RuntimeDep) -> ConfigOut:
    """The realtime-gateway WebSocket URL and the VAPID public key for the demo page."""
    settings = runtime.settings
    return ConfigOut(
        gateway_url=settings.public_gateway_url, vapid_public_key=settings.vapid_public_key
    )


class DevTokenOut(BaseModel):
    """A development user token for the demo page."""

    token: str
    user_id: str
    expires_in: int


@router.get(
    "/v1/dev/token",
    response_model=DevTokenOut,
    summary="A user JWT for the demo inbox page (development only)",
    responses=problem_responses(422),
)
async def dev_token(
    runtime: RuntimeDep,
    user: Annotated[UserId, Query()],
) -> DevTokenOut:
    """Sign a one-hour token for ``user`` with the development secret, as ``clarion dev-token``."""
    ttl = 3600
    token = issue_token(runtime.settings, subject=user, ttl=ttl)
    return DevTokenOut(token=token, user_id=user, expires_in=ttl)
