"""The gateway's connect accepts end-user access tokens only: the unsubscribe token of
an email and tokens living longer than the maximum lifetime close with 4001."""

from __future__ import annotations

import asyncio
import json
import time
from types import SimpleNamespace
from typing import Any

import jwt
import pytest
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

from clarion_email.app import EmailWorker
from clarion_email.settings import EmailSettings
from clarion_gateway.protocol import CloseCode
from clarion_kit.settings import DEV_JWT_SECRET

pytestmark = pytest.mark.integration


def email_unsubscribe_token(user_id: str, category: str) -> str:
    """The token email-worker puts in List-Unsubscribe, from its own code path."""
    worker: Any = SimpleNamespace(settings=EmailSettings(environment="development"))
    token: str = EmailWorker._token_for(worker, user_id, category)
    return token


def century_token(user_id: str) -> str:
    now = int(time.time())
    claims = {"sub": user_id, "iat": now, "exp": now + 100 * 365 * 86400}
    return jwt.encode(claims, DEV_JWT_SECRET, algorithm="HS256")


@pytest.mark.parametrize(
    ("kind", "reason"),
    [("unsubscribe", "wrong_token_kind"), ("century", "lifetime_exceeded")],
)
async def test_connect_refuses_tokens_of_another_kind(harness: Any, kind: str, reason: str) -> None:
    gw = await harness.gateway(kafka=False)
    token = (
        email_unsubscribe_token("jo", "social") if kind == "unsubscribe" else century_token("jo")
    )
    async with connect(f"ws://127.0.0.1:{gw.ws_port}/v1/ws") as ws:
        await ws.send(json.dumps({"type": "connect", "token": token, "since": None}))
        with pytest.raises(ConnectionClosed):
            await asyncio.wait_for(ws.recv(), 10)
    assert ws.close_code == CloseCode.BAD_TOKEN
    assert ws.close_reason == reason
    # An access token of the same user still connects.
    client = await harness.client(gw, "jo")
    assert client.connected["type"] == "connected"
