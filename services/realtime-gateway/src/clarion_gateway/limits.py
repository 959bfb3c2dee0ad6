"""Abuse limits of the gateway, without I/O: client frame rate and the client's address.

The connection handler applies them (``handlers/connection.py``); their settings and
close codes are in ``docs/gateway-protocol.md``.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network

IPNetwork = IPv4Network | IPv6Network


class TokenBucket:
    """Token-bucket rate limiter (as in RFC 2697's committed-burst bucket).

    The bucket holds at most ``burst`` tokens and refills at ``rate`` tokens per
    second; each client frame takes one. A client may therefore send ``burst``
    frames at once, then ``rate`` frames per second on average.

    Args:
        rate: refill rate in tokens per second (> 0).
        burst: capacity in tokens (>= 1).
        now: the current time in seconds on a monotonic clock; the bucket starts full.
    """

    __slots__ = ("_burst", "_rate", "_stamp", "_tokens")

    def __init__(self, rate: float, burst: float, now: float) -> None:
        self._rate = rate
        self._burst = burst
        self._tokens = burst
        self._stamp = now

    def take(self, now: float) -> bool:
        """Take one token at time ``now`` (seconds, monotonic); False when the bucket is empty."""
        elapsed = max(0.0, now - self._stamp)
        self._stamp = now
        self._tokens = min(self._burst, self._tokens + elapsed * self._rate)
        if self._tokens < 1.0:
            return False
        self._tokens -= 1.0
        return True


def client_address(
    peer: str | None, forwarded_for: str | None, trusted_proxies: Sequence[IPNetwork]
) -> str:
    """The address a connection's limits are counted against.

    Args:
        peer: the TCP peer's IP address (``None`` or ``""`` when unknown, e.g. a Unix socket).
        forwarded_for: the ``X-Forwarded-For`` request header (comma-separated
            addresses, the nearest proxy's peer last), or ``None``.
        trusted_proxies: networks of the reverse proxies in front of the gateway.

    The header is believed only when the peer is a trusted proxy; then the
    rightmost address that is not itself a trusted proxy is the client (the left
    part of the header is whatever the client chose to send). An unparsable entry
    stops the walk at the proxy that appended it. Without trusted proxies the
    header is ignored: any client could otherwise pick the address it is counted as.
    """
    if not peer:
        return "unknown"
    if not forwarded_for or not _is_trusted(peer, trusted_proxies):
        return peer
    address = peer
    for entry in reversed(forwarded_for.split(",")):
        candidate = entry.strip()
        try:
            ipaddress.ip_address(candidate)
        except ValueError:
            return address
        address = candidate
        if not _is_trusted(candidate, trusted_proxies):
            return address
    return address


def _is_trusted(address: str, trusted: Sequence[IPNetwork]) -> bool:
    try:
        ip: IPv4Address | IPv6Address = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(ip.version == net.version and ip in net for net in trusted)
