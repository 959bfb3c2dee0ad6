"""Development-only endpoints: configuration of the demo inbox page."""

from __future__ import annotations

from fastapi import APIRouter

from clarion_ingest.deps import RuntimeDep
from clarion_ingest.domain.models import ConfigOut
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
