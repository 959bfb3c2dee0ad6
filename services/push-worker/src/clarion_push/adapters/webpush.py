"""Sending one Web Push message: RFC 8291 encryption, RFC 8292 VAPID, RFC 8030 POST.

Encryption is pywebpush's :meth:`WebPusher.encode` (aes128gcm through
``http_ece``, a fresh ephemeral ECDH key and salt per message) and the VAPID
``Authorization: vapid t=<JWT>, k=<public key>`` header is py-vapid's
:meth:`Vapid02.sign`; the POST itself is made here with one shared
``httpx.AsyncClient`` so many messages are in flight at once, bounded per push
service host by a semaphore.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass

import httpx
from cryptography.hazmat.primitives import serialization
from py_vapid import Vapid02
from pywebpush import WebPusher

from clarion_contracts.v1 import PushSubscription
from clarion_push.domain.headers import Urgency, endpoint_host, push_headers, vapid_claims

CONTENT_ENCODING = "aes128gcm"


def load_vapid(private_key: str) -> Vapid02:
    """A py-vapid signer from a PEM private key or a base64url raw 32-byte scalar.

    Raises:
        ValueError: the text is neither.
    """
    text = private_key.strip()
    try:
        if text.startswith("-----BEGIN"):
            key = serialization.load_pem_private_key(text.encode(), password=None)
            return Vapid02(key)
        return Vapid02.from_string(text)
    except Exception as exc:  # py-vapid raises assorted errors for malformed input
        raise ValueError(f"not a VAPID private key (PEM or base64url raw): {exc}") from exc


def application_server_key(vapid: Vapid02) -> str:
    """The public key browsers pass as ``applicationServerKey``: base64url, uncompressed point."""
    raw = vapid.public_key.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@dataclass(frozen=True)
class PushResponse:
    """What the push service answered.

    ``status_code`` is None when no answer arrived (connection error, timeout);
    ``error`` then says why. ``retry_after`` is the raw ``Retry-After`` header.
    """

    status_code: int | None
    retry_after: str | None = None
    body: str = ""
    error: str | None = None


class VapidSigner:
    """VAPID headers per push service origin, re-signed well before ``exp``.

    One ECDSA signature per origin and lifetime instead of one per message.
    """

    def __init__(
        self,
        vapid: Vapid02,
        subject: str,
        clock: Callable[[], float] = time.time,
        lifetime: int = 12 * 3600,
    ) -> None:
        self._vapid = vapid
        self._subject = subject
        self._clock = clock
        self._lifetime = lifetime
        self._cache: dict[str, tuple[float, dict[str, str]]] = {}

    def headers(self, endpoint: str) -> dict[str, str]:
        """``{"Authorization": "vapid t=..., k=..."}`` for ``endpoint`` (RFC 8292 §3)."""
        now = self._clock()
        claims = vapid_claims(
            endpoint=endpoint, subject=self._subject, now=now, lifetime=self._lifetime
        )
        aud = str(claims["aud"])
        cached = self._cache.get(aud)
        # Keep a margin so a token never reaches the push service about to expire.
        if cached is not None and cached[0] - now > self._lifetime / 2:
            return cached[1]
        signed: dict[str, str] = self._vapid.sign(claims)
        self._cache[aud] = (float(claims["exp"]), signed)
        return signed


class WebPushClient:
    """POSTs encrypted push messages; at most ``per_host`` requests in flight per host."""

    def __init__(
        self,
        signer: VapidSigner,
        client: httpx.AsyncClient,
        per_host: int = 32,
    ) -> None:
        self._signer = signer
        self._client = client
        self._per_host = per_host
        self._semaphores: dict[str, asyncio.Semaphore] = {}

    def _semaphore(self, endpoint: str) -> asyncio.Semaphore:
        host = endpoint_host(endpoint)
        sem = self._semaphores.get(host)
        if sem is None:
            sem = self._semaphores[host] = asyncio.Semaphore(self._per_host)
        return sem

    def in_flight(self, endpoint: str) -> int:
        """Requests currently being sent to ``endpoint``'s host."""
        sem = self._semaphores.get(endpoint_host(endpoint))
        return 0 if sem is None else self._per_host - sem._value

    async def send(
        self,
        subscription: PushSubscription,
        payload: bytes,
        *,
        ttl_seconds: int,
        urgency: Urgency,
        topic: str | None,
    ) -> PushResponse:
        """Encrypt ``payload`` for ``subscription`` and POST it to its endpoint.

        Returns:
            The push service's answer; network failures come back as a
            :class:`PushResponse` with ``status_code=None`` rather than raising.

        Raises:
            ValueError: the subscription's keys are malformed (not retryable).
        """
        endpoint = str(subscription.endpoint)
        try:
            pusher = WebPusher(
                {
                    "endpoint": endpoint,
                    "keys": {"p256dh": subscription.keys.p256dh, "auth": subscription.keys.auth},
                }
            )
            body: bytes = pusher.encode(payload, CONTENT_ENCODING)["body"]
        except Exception as exc:  # http_ece/cryptography reject bad keys with various types
            raise ValueError(f"cannot encrypt for this subscription: {exc}") from exc
        headers = {
            **push_headers(ttl_seconds=ttl_seconds, urgency=urgency, topic=topic),
            **self._signer.headers(endpoint),
            "Content-Encoding": CONTENT_ENCODING,
            "Content-Type": "application/octet-stream",
        }
        async with self._semaphore(endpoint):
            try:
                response = await self._client.post(endpoint, content=body, headers=headers)
            except httpx.HTTPError as exc:
                return PushResponse(status_code=None, error=f"{type(exc).__name__}: {exc}")
        return PushResponse(
            status_code=response.status_code,
            retry_after=response.headers.get("Retry-After"),
            body=response.text[:500],
        )
