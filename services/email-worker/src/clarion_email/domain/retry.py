"""SMTP reply classes (RFC 5321 §4.2.1) and bounded exponential backoff.

A 4yz reply is a transient negative completion: the same transaction may
succeed later. A 5yz reply is permanent: sending it again will fail again.
Connection failures and timeouts have no reply code and are transient.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class SmtpFailure(StrEnum):
    """Whether a failed send is worth retrying."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def classify_smtp(code: int | None) -> SmtpFailure:
    """``None`` (no reply: connection error, timeout) or 4yz → transient; 5yz → permanent.

    Raises:
        ValueError: ``code`` is not a negative completion reply (below 400 or above 599).
    """
    if code is None or 400 <= code < 500:
        return SmtpFailure.TRANSIENT
    if 500 <= code < 600:
        return SmtpFailure.PERMANENT
    raise ValueError(f"{code} is not an SMTP failure reply")


@dataclass(frozen=True)
class BackoffPolicy:
    """Bounded exponential backoff.

    Attributes:
        max_attempts: attempts in all (the first included) before the DLQ.
        base_seconds: delay after the first failure, doubled for each further one.
        max_seconds: upper bound of a delay.
    """

    max_attempts: int = 5
    base_seconds: float = 5.0
    max_seconds: float = 900.0

    def delay(self, attempt: int, jitter: float = 0.0) -> float:
        """Seconds to wait after failed attempt ``attempt`` (1-based), times ``1 + jitter``.

        Raises:
            ValueError: ``attempt`` < 1.
        """
        if attempt < 1:
            raise ValueError("attempt is 1-based")
        base = min(self.max_seconds, self.base_seconds * 2.0 ** (attempt - 1))
        return min(self.max_seconds, base * (1.0 + max(0.0, min(jitter, 1.0))))

    def exhausted(self, attempt: int) -> bool:
        """True when attempt ``attempt`` was the last one allowed."""
        return attempt >= self.max_attempts
