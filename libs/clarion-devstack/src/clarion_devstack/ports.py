"""Loopback TCP port selection for the embedded development stack."""

from __future__ import annotations

import socket

LOOPBACK = "127.0.0.1"


def find_free_port(host: str = LOOPBACK, *, exclude: frozenset[int] = frozenset()) -> int:
    """Return a TCP port on ``host`` that nothing listens on right now.

    The kernel picks an ephemeral port (bind to port 0); the socket is closed again
    before returning, so another process could take the port before the caller binds
    it. The stack handles that race by restarting a server that fails to bind.

    Args:
        host: the IPv4 address to probe, loopback by default.
        exclude: ports the caller already handed out and must not receive again.

    Returns:
        A port number in the kernel's ephemeral range (1024-65535).

    Raises:
        OSError: when no port can be bound on ``host`` (for example an address that
            is not local).
    """
    for _ in range(64):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port: int = sock.getsockname()[1]
        if port not in exclude:
            return port
    raise OSError(f"no free TCP port on {host} outside {sorted(exclude)}")


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Tell whether ``port`` on ``host`` can be bound by a new listener now.

    ``SO_REUSEADDR`` is set as servers set it, so a port held only by sockets in
    ``TIME_WAIT`` after a server stopped counts as free.

    Args:
        port: TCP port number, 1-65535.
        host: IPv4 address, loopback by default.

    Returns:
        ``True`` when a listener could bind the port, ``False`` when it is in use.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def split_host_port(address: str, default_port: int) -> tuple[str, int]:
    """Split ``"host:port"`` (or a bare ``"host"``) into its parts.

    Args:
        address: ``"127.0.0.1:9092"``, ``"localhost"`` or ``"[::1]:9092"``.
        default_port: the port used when ``address`` has none.

    Returns:
        ``(host, port)`` with IPv6 brackets removed.

    Raises:
        ValueError: when the port part is not an integer.
    """
    if address.startswith("["):
        host, _, rest = address[1:].partition("]")
        return host, int(rest[1:]) if rest.startswith(":") else default_port
    host, sep, port = address.rpartition(":")
    if not sep:
        return address, default_port
    return host, int(port)
