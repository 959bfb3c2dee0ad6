"""Per-recipient-domain send rate limits: one token bucket per domain.

Mailbox providers throttle (and eventually block) a sender that opens too many
transactions to them at once, so email-worker spreads its sends per recipient
domain. The buckets are per worker instance; with N instances the effective
rate is at most N times the configured one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TokenBucket:
    """A token bucket: ``capacity`` tokens, refilled at ``rate`` tokens per second.

    Times are seconds on any monotonic clock, passed in by the caller.
    """

    rate: float
    capacity: float
    tokens: float
    updated: float

    def _refill(self, now: float) -> None:
        if now > self.updated:
            self.tokens = min(self.capacity, self.tokens + (now - self.updated) * self.rate)
            self.updated = now

    def take(self, now: float, cost: float = 1.0) -> float:
        """Take ``cost`` tokens if available.

        Returns:
            0.0 when the tokens were taken, else the seconds until they will be
            available (nothing is taken then).
        """
        self._refill(now)
        if self.tokens >= cost:
            self.tokens -= cost
            return 0.0
        return (cost - self.tokens) / self.rate


class DomainRateLimiter:
    """Token buckets keyed by recipient domain (case-insensitive).

    Args:
        rate_per_second: sustained sends per second to one domain (> 0).
        burst: sends allowed at once before the rate applies (>= 1).
        overrides: per-domain ``(rate_per_second, burst)``, e.g. a stricter limit
            for one large provider.
        max_domains: buckets kept; the least recently used full ones are dropped
            beyond it, which loses nothing since a full bucket is the initial state.
    """

    def __init__(
        self,
        rate_per_second: float,
        burst: int,
        overrides: dict[str, tuple[float, int]] | None = None,
        max_domains: int = 10_000,
    ) -> None:
        if rate_per_second <= 0 or burst < 1:
            raise ValueError("rate must be positive and burst at least 1")
        self._rate = rate_per_second
        self._burst = burst
        self._overrides = {k.lower(): v for k, v in (overrides or {}).items()}
        self._max = max_domains
        self._buckets: dict[str, TokenBucket] = {}

    def acquire(self, domain: str, now: float) -> float:
        """Take a send token for ``domain`` at time ``now`` (seconds).

        Returns:
            0.0 if the send may go now, else seconds to wait before asking again.
        """
        key = domain.lower()
        bucket = self._buckets.pop(key, None)
        if bucket is None:
            rate, burst = self._overrides.get(key, (self._rate, self._burst))
            bucket = TokenBucket(rate=rate, capacity=float(burst), tokens=float(burst), updated=now)
        self._buckets[key] = bucket  # re-insert: dict order is least recently used first
        wait = bucket.take(now)
        if len(self._buckets) > self._max:
            self._evict(now)
        return wait

    def _evict(self, now: float) -> None:
        for key in list(self._buckets):
            if len(self._buckets) <= self._max:
                return
            bucket = self._buckets[key]
            bucket._refill(now)
            if bucket.tokens >= bucket.capacity:
                del self._buckets[key]


def recipient_domain(address: str) -> str:
    """The domain of an email address, lower-cased (``"Bob@Example.COM"`` → ``"example.com"``).

    Raises:
        ValueError: no ``@`` in the address.
    """
    local, sep, domain = address.rpartition("@")
    if not sep or not local or not domain:
        raise ValueError(f"not an email address: {address!r}")
    return domain.lower()
