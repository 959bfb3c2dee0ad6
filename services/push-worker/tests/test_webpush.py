"""The Web Push HTTP client against the local push service (no Kafka, no Redis)."""

from __future__ import annotations

import asyncio
import base64
import json
from datetime import UTC, datetime
from typing import Any

import httpx
import pytest
from py_vapid import Vapid02

from clarion_contracts.v1 import PushKeys, PushSubscription
from clarion_push.adapters.webpush import VapidSigner, WebPushClient


def subscription(push_service: Any, name: str, **keys: str) -> PushSubscription:
    browser = push_service.browser(name)
    return PushSubscription(
        subscription_id=f"sub-{name}",
        user_id="u1",
        endpoint=push_service.endpoint(name),
        keys=PushKeys(
            p256dh=keys.get("p256dh", browser.p256dh),
            auth=keys.get("auth", base64.urlsafe_b64encode(browser.auth).decode()),
        ),
        updated_at=datetime.now(UTC),
    )


@pytest.fixture
async def client() -> Any:
    vapid = Vapid02()
    vapid.generate_keys()
    async with httpx.AsyncClient() as http:
        yield lambda per_host: WebPushClient(
            VapidSigner(vapid, "mailto:ops@clarion.test"), http, per_host=per_host
        )


async def test_in_flight_requests_are_bounded_per_host(push_service: Any, client: Any) -> None:
    push_service.delay = 0.2
    pusher = client(2)
    subs = [subscription(push_service, f"b{i}") for i in range(6)]
    answers = await asyncio.gather(
        *(pusher.send(s, b'{"n":1}', ttl_seconds=60, urgency="normal", topic=None) for s in subs)
    )
    assert [a.status_code for a in answers] == [201] * 6
    assert push_service.max_in_flight == 2
    assert [r.payload for r in push_service.received] == [{"n": 1}] * 6


async def test_network_errors_come_back_as_no_answer(push_service: Any, client: Any) -> None:
    sub = subscription(push_service, "x")
    gone = sub.model_copy(update={"endpoint": "http://127.0.0.1:9/push/x"})
    answer = await client(1).send(gone, b"{}", ttl_seconds=0, urgency="low", topic=None)
    assert answer.status_code is None
    assert answer.error is not None


async def test_malformed_browser_keys_are_refused(push_service: Any, client: Any) -> None:
    bad = subscription(push_service, "y", p256dh="AAAA")
    with pytest.raises(ValueError, match="cannot encrypt"):
        await client(1).send(bad, json.dumps({}).encode(), ttl_seconds=0, urgency="low", topic=None)
    assert push_service.received == []
