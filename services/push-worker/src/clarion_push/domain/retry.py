"""What to do with a push service's answer (RFC 8030 §5, §8.4) and when to try again.

Push services answer ``201 Created`` when they accepted a message, ``404``/``410``
when the subscription is gone for good, ``413`` when the payload is too large
and ``429`` or ``5xx`` when the sender should come back later, optionally with
a ``Retry-After`` header (RFC 9110 §10.2.3: delay-seconds or an HTTP-date).
"""

from __future__ import annotations

import email.utils
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum


class Outcome(StrEnum):
    """The decision for one push service answer."""

    DELIVERED = "delivered"
    GONE = "gone"
    TOO_LARGE = "too_large"
    RETRY = "retry"
    FAILED = "failed"


def classify(status_code: int | None) -> Outcome:
    """Map an HTTP status (``None``: no answer, e.g. a connection error) to an :class:`Outcome`.

    2xx → delivered; 404, 410 → gone; 413 → too large; 408, 425, 429, 5xx and no
    answer → retry; any other status (400, 401, 403: a bad request or VAPID
    credentials the service refuses) → failed, since sending it again cannot help.
    """
    if status_code is None:
        return Outcome.RETRY
    if 200 <= status_code < 300:
        return Outcome.DELIVERED
    if status_code in (404, 410):
        return Outcome.GONE
    if status_code == 413:
        return Outcome.TOO_LARGE
    if status_code in (408, 425, 429) or 500 <= status_code < 600:
        return Outcome.RETRY
    return Outcome.FAILED


def parse_retry_after(value: str | None, now: datetime) -> float | None:
    """Seconds to wait from a ``Retry-After`` header value (RFC 9110 §10.2.3).

    Args:
        value: ``"120"`` (delay-seconds) or ``"Wed, 21 Oct 2026 07:28:00 GMT"``
            (an HTTP-date); ``None`` when the header is absent.
        now: the current time (aware) an HTTP-date is measured from.

    Returns:
        The delay in seconds, never negative (a date in the past gives 0.0), or
        ``None`` if the header is absent or malformed.
    """
    if value is None:
        return None
    text = value.strip()
    if not text:
        return None
    if text.isdigit():
        return float(int(text))
    try:
        when = email.utils.parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        # RFC 9110 HTTP-dates are always GMT.
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - now).total_seconds())


@dataclass(frozen=True)
class BackoffPolicy:
    """Bounded exponential backoff that honours ``Retry-After``.

    Attributes:
        max_attempts: attempts in all (the first send included) before giving up.
        base_seconds: delay before the second attempt; doubled for each further one.
        max_seconds: upper bound of the exponential delay.
        max_retry_after_seconds: upper bound on a server's ``Retry-After``; a service
            asking for more is still retried after this bound rather than blocking
            delivery for hours.
    """

    max_attempts: int = 5
    base_seconds: float = 1.0
    max_seconds: float = 300.0
    max_retry_after_seconds: float = 3600.0

    def delay(self, attempt: int, retry_after: float | None = None, jitter: float = 0.0) -> float:
        """Seconds to wait after failed attempt number ``attempt`` (1-based).

        The exponential part is ``base * 2**(attempt-1)`` capped at ``max_seconds``
        and scaled by ``1 + jitter`` (``jitter`` in ``[0, 1)``, drawn by the caller so
        this stays deterministic). The result is never below the server's
        ``Retry-After`` (itself capped at ``max_retry_after_seconds``).
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        exponential = min(self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1))
        exponential *= 1.0 + max(0.0, min(jitter, 1.0))
        if retry_after is None:
            return exponential
        return max(exponential, min(retry_after, self.max_retry_after_seconds))

    def exhausted(self, attempt: int) -> bool:
        """True when attempt number ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts
