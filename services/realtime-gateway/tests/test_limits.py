"""Unit tests of the abuse limits (no I/O): token bucket and client address."""

from __future__ import annotations

from ipaddress import ip_network

import pytest

from clarion_gateway.limits import TokenBucket, client_address


def test_bucket_allows_the_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, burst=3, now=100.0)
    assert [bucket.take(100.0) for _ in range(4)] == [True, True, True, False]
    assert bucket.take(100.4) is False  # 0.8 token refilled
    assert bucket.take(100.5) is True  # 1.0 token
    assert bucket.take(100.5) is False


def test_bucket_refill_is_capped_at_the_burst() -> None:
    bucket = TokenBucket(rate=10.0, burst=2, now=0.0)
    assert [bucket.take(1000.0) for _ in range(3)] == [True, True, False]


def test_bucket_ignores_a_clock_going_back() -> None:
    bucket = TokenBucket(rate=1.0, burst=1, now=10.0)
    assert bucket.take(10.0) is True
    assert bucket.take(5.0) is False


PROXIES = [ip_network("10.0.0.0/8"), ip_network("fd00::/8")]


@pytest.mark.parametrize(
    ("peer", "xff", "trusted", "expected"),
    [
        ("203.0.113.9", None, PROXIES, "203.0.113.9"),
        # Not from a trusted proxy: the header is the client's own claim.
        ("203.0.113.9", "198.51.100.1", PROXIES, "203.0.113.9"),
        ("10.0.0.5", "198.51.100.1", [], "10.0.0.5"),
        ("10.0.0.5", "198.51.100.1", PROXIES, "198.51.100.1"),
        # The rightmost untrusted entry: the left part was sent by the client.
        ("10.0.0.5", "1.2.3.4, 198.51.100.1, 10.0.0.7", PROXIES, "198.51.100.1"),
        ("fd00::1", "2001:db8::5", PROXIES, "2001:db8::5"),
        ("10.0.0.5", "10.0.0.6, 10.0.0.7", PROXIES, "10.0.0.6"),
        # Garbage stops the walk at the proxy that appended it.
        ("10.0.0.5", "nonsense", PROXIES, "10.0.0.5"),
        ("10.0.0.5", "198.51.100.1, nonsense, 10.0.0.7", PROXIES, "10.0.0.7"),
        (None, "198.51.100.1", PROXIES, "unknown"),
    ],
)
def test_client_address(peer: str | None, xff: str | None, trusted: list, expected: str) -> None:  # type: ignore[type-arg]
    assert client_address(peer, xff, trusted) == expected
