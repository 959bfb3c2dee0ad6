"""HTTP headers of a Web Push request (RFC 8030 §5) and VAPID claims (RFC 8292 §2).

``TTL`` says how long the push service keeps a message for an offline device,
``Urgency`` lets the device save battery on low-priority messages and ``Topic``
makes a newer message replace a pending older one with the same topic, which is
how a newer aggregated version of a notification replaces an older one.
"""

from __future__ import annotations

import base64
import hashlib
import re
from typing import Literal
from urllib.parse import urlsplit

Urgency = Literal["very-low", "low", "normal", "high"]

_TOPIC_RE = re.compile(r"^[A-Za-z0-9_-]{1,32}$")
VAPID_LIFETIME_SECONDS = 12 * 3600
"""``exp`` of a VAPID JWT is this far ahead; RFC 8292 §2 forbids more than 24 hours."""


def derive_topic(notification_id: str) -> str:
    """A stable RFC 8030 topic for a notification: 32 URL-safe base64 characters.

    Every version of the same notification gets the same topic, so the push
    service replaces an undelivered older version with the newer one.
    """
    digest = hashlib.sha256(notification_id.encode()).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")[:32]


def push_headers(*, ttl_seconds: int, urgency: Urgency, topic: str | None) -> dict[str, str]:
    """The ``TTL``, ``Urgency`` and ``Topic`` headers of one push message.

    Args:
        ttl_seconds: seconds the push service may keep the message (>= 0).
        urgency: RFC 8030 §5.3 urgency.
        topic: RFC 8030 §5.4 topic, at most 32 URL-safe base64 characters; ``None``
            or empty leaves the header out.

    Raises:
        ValueError: negative TTL or a topic outside the allowed alphabet/length.
    """
    if ttl_seconds < 0:
        raise ValueError("TTL must not be negative")
    headers = {"TTL": str(ttl_seconds), "Urgency": urgency}
    if topic:
        if not _TOPIC_RE.match(topic):
            raise ValueError("topic must be 1-32 URL-safe base64 characters")
        headers["Topic"] = topic
    return headers


def vapid_audience(endpoint: str) -> str:
    """The ``aud`` claim for ``endpoint``: its origin, ``scheme://host[:port]`` (RFC 8292 §2).

    Raises:
        ValueError: the endpoint is not an absolute http(s) URL.
    """
    parts = urlsplit(endpoint)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise ValueError(f"not an http(s) push endpoint: {endpoint!r}")
    host = parts.hostname
    if ":" in host:  # an IPv6 literal keeps its brackets in an origin
        host = f"[{host}]"
    default_port = 443 if parts.scheme == "https" else 80
    if parts.port is not None and parts.port != default_port:
        return f"{parts.scheme}://{host}:{parts.port}"
    return f"{parts.scheme}://{host}"


def vapid_claims(
    *, endpoint: str, subject: str, now: float, lifetime: int = VAPID_LIFETIME_SECONDS
) -> dict[str, str | int]:
    """The JWT claims of a VAPID token for ``endpoint`` (RFC 8292 §2).

    Args:
        endpoint: the subscription's push endpoint URL.
        subject: a ``mailto:`` or ``https:`` contact for the push service operator.
        now: the current Unix time in seconds.
        lifetime: seconds until ``exp`` (1..86400).

    Raises:
        ValueError: a lifetime over 24 hours or a subject that is neither mailto: nor https:.
    """
    if not 0 < lifetime <= 86400:
        raise ValueError("a VAPID token must expire within 24 hours")
    if not subject.startswith(("mailto:", "https:")):
        raise ValueError("the VAPID subject must be a mailto: or https: URI")
    return {"aud": vapid_audience(endpoint), "sub": subject, "exp": int(now) + lifetime}


def endpoint_host(endpoint: str) -> str:
    """``host:port`` of a push endpoint: the key of the per-push-service concurrency limit."""
    parts = urlsplit(endpoint)
    port = parts.port or (443 if parts.scheme == "https" else 80)
    return f"{parts.hostname}:{port}"
