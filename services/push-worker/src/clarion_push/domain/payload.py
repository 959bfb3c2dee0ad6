"""The JSON document a service worker receives in its ``push`` event.

RFC 8291 §4 limits the plaintext of one push message to 3993 octets (a 4096
octet record minus the 86 octet aes128gcm header, the 16 octet tag and the
padding delimiter). :func:`build_payload` keeps every payload under that
limit by shortening the body first, then the title.
"""

from __future__ import annotations

import json
from typing import Any

from clarion_contracts.v1 import PushRequest

MAX_PLAINTEXT_BYTES = 3993
"""Largest plaintext one aes128gcm push message can carry (RFC 8291 §4)."""

TRIMMED_PLAINTEXT_BYTES = 1024
"""Size a payload is cut to after a push service answered 413 Payload Too Large."""

ELLIPSIS = "…"


def payload_fields(request: PushRequest) -> dict[str, Any]:
    """The payload of ``request`` as a dict (before any trimming).

    Keys: ``title``, ``body``, ``url`` (str or None), ``notification_id``,
    ``version``, ``type``, ``category``, ``icon`` (str or None). The page's
    service worker shows ``title``/``body`` and opens ``url`` on click.
    """
    return {
        "title": request.title,
        "body": request.body,
        "url": str(request.url) if request.url is not None else None,
        "notification_id": request.notification_id,
        "version": request.version,
        "type": request.type,
        "category": request.category,
        "icon": str(request.icon) if request.icon is not None else None,
    }


def encode(fields: dict[str, Any]) -> bytes:
    """Compact UTF-8 JSON of ``fields`` (non-ASCII kept as UTF-8, not ``\\u`` escapes)."""
    return json.dumps(fields, ensure_ascii=False, separators=(",", ":")).encode()


def _cut(text: str, keep: int) -> str:
    """``text`` cut to its first ``keep`` characters, ending in an ellipsis when cut."""
    if keep >= len(text):
        return text
    return text[:keep].rstrip() + ELLIPSIS


def fit(fields: dict[str, Any], max_bytes: int) -> bytes:
    """Encode ``fields`` in at most ``max_bytes`` octets by shortening ``body``, then ``title``.

    Args:
        fields: a payload from :func:`payload_fields` (not modified).
        max_bytes: the plaintext limit in octets (at least 256).

    Returns:
        The encoded payload, ``len() <= max_bytes``.

    Raises:
        ValueError: even an empty body and a minimal title do not fit (the
            other fields alone are too large), or ``max_bytes`` is below 256.
    """
    if max_bytes < 256:
        raise ValueError("max_bytes must be at least 256")
    data = encode(fields)
    if len(data) <= max_bytes:
        return data
    out = dict(fields)
    for name in ("body", "title"):
        if len(encode(out)) <= max_bytes:
            break
        # Binary search on the characters kept: JSON escaping makes the encoded size
        # differ from the text's UTF-8 size, so measure the encoded document itself.
        text = str(fields[name])
        lo, hi, best = 0, len(text), 0
        while lo <= hi:
            mid = (lo + hi) // 2
            out[name] = _cut(text, mid)
            if len(encode(out)) <= max_bytes:
                best, lo = mid, mid + 1
            else:
                hi = mid - 1
        out[name] = _cut(text, best)
    data = encode(out)
    if len(data) > max_bytes:
        raise ValueError(f"payload does not fit in {max_bytes} bytes")
    return data


def build_payload(request: PushRequest) -> bytes:
    """The payload of ``request``, shortened to :data:`MAX_PLAINTEXT_BYTES` if needed."""
    return fit(payload_fields(request), MAX_PLAINTEXT_BYTES)


def trimmed_payload(request: PushRequest, previous_size: int) -> bytes:
    """A smaller payload after the push service answered 413 Payload Too Large.

    The body is shortened so the whole payload fits in
    ``min(TRIMMED_PLAINTEXT_BYTES, previous_size // 2)`` octets (at least 256).

    Args:
        request: the push request.
        previous_size: size in octets of the plaintext that was refused.
    """
    limit = max(256, min(TRIMMED_PLAINTEXT_BYTES, previous_size // 2))
    return fit(payload_fields(request), limit)
