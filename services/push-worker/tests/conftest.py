"""A local Web Push service for tests: decrypts every message and verifies its VAPID JWT.

It plays both the push service (RFC 8030 endpoint) and the browser behind it:
each :class:`FakeBrowser` has a P-256 key pair and an auth secret, so the
service can decrypt the aes128gcm body (RFC 8291) with http_ece exactly as a
browser would, and it checks the ``Authorization: vapid t=<JWT>, k=<key>``
header (RFC 8292): ES256 signature with the key in ``k``, ``aud`` = the
endpoint's origin, ``exp`` within 24 hours, ``sub`` a mailto:/https: URI.
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import time
from collections import defaultdict, deque
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any

import http_ece
import jwt
import pytest
from aiohttp import web
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from clarion_devstack.testing import WorkerHarness, eventually, running_worker


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).decode().rstrip("=")


def b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


@dataclass
class FakeBrowser:
    """A browser's push subscription keys (RFC 8291 §3)."""

    private_key: ec.EllipticCurvePrivateKey = field(
        default_factory=lambda: ec.generate_private_key(ec.SECP256R1())
    )
    auth: bytes = field(default_factory=lambda: os.urandom(16))

    @property
    def p256dh(self) -> str:
        return b64url(
            self.private_key.public_key().public_bytes(
                serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
            )
        )

    def decrypt(self, body: bytes) -> bytes:
        return http_ece.decrypt(
            body, private_key=self.private_key, auth_secret=self.auth, version="aes128gcm"
        )


@dataclass
class Received:
    """One POST the push service accepted or answered."""

    path: str
    status: int
    headers: dict[str, str]
    payload: dict[str, Any] | None
    claims: dict[str, Any] | None
    vapid_key: str | None
    arrived: float
    error: str | None = None


class PushService:
    """aiohttp app on 127.0.0.1 with endpoints ``/push/<name>`` (see module docstring).

    ``script(name, [(status, headers), ...])`` makes the next POSTs to that endpoint
    answer those statuses in order; afterwards (and by default) it answers 201.
    A POST whose decryption or VAPID check fails is answered 400 and recorded
    with ``error`` set, so a test sees it.
    """

    def __init__(self) -> None:
        self.browsers: dict[str, FakeBrowser] = {}
        self.scripts: dict[str, deque[tuple[int, dict[str, str]]]] = defaultdict(deque)
        self.received: list[Received] = []
        self._runner: web.AppRunner | None = None
        self.port = 0
        self.delay = 0.0
        self.in_flight = 0
        self.max_in_flight = 0

    def endpoint(self, name: str) -> str:
        return f"http://127.0.0.1:{self.port}/push/{name}"

    def browser(self, name: str) -> FakeBrowser:
        return self.browsers.setdefault(name, FakeBrowser())

    def script(self, name: str, answers: list[tuple[int, dict[str, str]]]) -> None:
        self.scripts[name].extend(answers)

    def for_endpoint(self, name: str) -> list[Received]:
        return [r for r in self.received if r.path == f"/push/{name}"]

    def _verify_vapid(self, authorization: str) -> tuple[dict[str, Any], str]:
        scheme, _, params = authorization.partition(" ")
        if scheme.lower() != "vapid":
            raise ValueError(f"scheme {scheme!r} is not vapid")
        parts = dict(p.strip().split("=", 1) for p in params.split(","))
        raw_key = b64url_decode(parts["k"])
        public_key = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw_key)
        claims: dict[str, Any] = jwt.decode(
            parts["t"],
            public_key,
            algorithms=["ES256"],
            audience=f"http://127.0.0.1:{self.port}",
            options={"require": ["exp", "aud", "sub"]},
        )
        if claims["exp"] > time.time() + 86400:
            raise ValueError("exp more than 24 hours ahead (RFC 8292 §2)")
        if not str(claims["sub"]).startswith(("mailto:", "https:")):
            raise ValueError("sub is not a mailto: or https: URI")
        return claims, parts["k"]

    async def _handle(self, request: web.Request) -> web.Response:
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            if self.delay:
                await asyncio.sleep(self.delay)
            return await self._answer(request)
        finally:
            self.in_flight -= 1

    async def _answer(self, request: web.Request) -> web.Response:
        name = request.match_info["name"]
        body = await request.read()
        headers = dict(request.headers)
        arrived = time.monotonic()
        status, answer_headers = self.scripts[name].popleft() if self.scripts[name] else (201, {})
        try:
            if request.headers.get("Content-Encoding") != "aes128gcm":
                raise ValueError("Content-Encoding is not aes128gcm")
            claims, key = self._verify_vapid(request.headers["Authorization"])
            payload = json.loads(self.browsers[name].decrypt(body))
        except Exception as exc:
            self.received.append(
                Received(request.path, 400, headers, None, None, None, arrived, repr(exc))
            )
            return web.Response(status=400, text=repr(exc))
        self.received.append(Received(request.path, status, headers, payload, claims, key, arrived))
        return web.Response(status=status, headers=answer_headers)

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/push/{name}", self._handle)
        self._runner = web.AppRunner(app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        self.port = int(self._runner.addresses[0][1])

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()


@pytest.fixture
async def push_service() -> Any:
    service = PushService()
    await service.start()
    yield service
    await service.stop()


@dataclass
class Harness(WorkerHarness):
    """A running push-worker plus a producer and a tap on its output topics."""

    push_service: PushService

    async def subscribe(self, name: str, user_id: str) -> Any:
        """Publish a subscription for a fake browser and wait until push-worker stored it."""
        from clarion_contracts.registry import PUSH_SUBSCRIPTIONS
        from clarion_contracts.v1 import PushKeys, PushSubscription, utc_now

        browser = self.push_service.browser(name)
        subscription = PushSubscription(
            subscription_id=f"sub-{name}",
            user_id=user_id,
            endpoint=self.push_service.endpoint(name),  # type: ignore[arg-type]
            keys=PushKeys(p256dh=browser.p256dh, auth=b64url(browser.auth)),
            user_agent="FakeBrowser/1.0",
            updated_at=utc_now(),
        )
        await self.publish(
            PUSH_SUBSCRIPTIONS, subscription.subscription_id, subscription.to_bytes()
        )
        store = self.worker.dispatcher.store
        await eventually(lambda: store.get(subscription.subscription_id))
        return subscription


@pytest.fixture
async def harness(
    stack_settings: dict[str, Any], push_service: PushService
) -> AsyncIterator[Harness]:
    """push-worker on the embedded stack, isolated by this test's topic and Redis prefixes."""
    from py_vapid import Vapid02

    from clarion_contracts.registry import DELIVERY_STATUS, PUSH_SUBSCRIPTIONS
    from clarion_push.app import create_app
    from clarion_push.settings import PushSettings

    vapid = Vapid02()
    vapid.generate_keys()
    settings = PushSettings(
        **stack_settings,
        vapid_private_key=vapid.private_pem().decode(),
        vapid_subject="mailto:ops@clarion.test",
        schedule_poll_seconds=0.05,
        backoff_base_seconds=0.2,
        backoff_max_seconds=1.0,
        max_attempts=3,
    )
    app = create_app(settings)
    topics = [settings.topic(DELIVERY_STATUS), settings.topic(PUSH_SUBSCRIPTIONS)]
    bootstrap = settings.kafka_bootstrap_servers
    async with running_worker(app, "push_worker", bootstrap, topics) as running:
        worker, producer, tap = running
        yield Harness(settings, worker, producer, tap, push_service)
