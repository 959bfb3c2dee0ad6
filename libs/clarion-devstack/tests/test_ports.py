"""Unit tests of loopback port selection."""

from __future__ import annotations

import socket

import pytest

from clarion_devstack.ports import LOOPBACK, find_free_port, port_is_free, split_host_port


def test_find_free_port_returns_a_bindable_loopback_port() -> None:
    port = find_free_port()
    assert 1024 <= port <= 65535
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((LOOPBACK, port))  # raises if the port were taken


def test_find_free_port_skips_excluded_ports() -> None:
    first = find_free_port()
    excluded = frozenset({first})
    for _ in range(20):
        assert find_free_port(exclude=excluded) != first


def test_port_is_free_tracks_a_listener() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as server:
        server.bind((LOOPBACK, 0))
        server.listen()
        port = server.getsockname()[1]
        assert not port_is_free(port)
    assert port_is_free(port)


@pytest.mark.parametrize(
    ("address", "expected"),
    [
        ("127.0.0.1:9092", ("127.0.0.1", 9092)),
        ("localhost", ("localhost", 6379)),
        ("[::1]:5432", ("::1", 5432)),
        ("[::1]", ("::1", 6379)),
    ],
)
def test_split_host_port(address: str, expected: tuple[str, int]) -> None:
    assert split_host_port(address, 6379) == expected


def test_split_host_port_rejects_a_non_numeric_port() -> None:
    with pytest.raises(ValueError, match="invalid literal"):
        split_host_port("host:kafka", 9092)
