"""Unit tests of the gateway's own RESP request packing."""

from __future__ import annotations

import pytest
from redis.asyncio.connection import Connection

from clarion_gateway.adapters.resp import pack_command


def packed(*args: bytes | str | int) -> bytes:
    out: list[bytes] = []
    pack_command(args, out)
    return b"".join(out)


def test_a_command_is_an_array_of_bulk_strings() -> None:
    assert packed(b"EVALSHA", "ab", 1, -2) == (
        b"*4\r\n$7\r\nEVALSHA\r\n$2\r\nab\r\n$1\r\n1\r\n$2\r\n-2\r\n"
    )


def test_the_same_bytes_as_redis_py() -> None:
    args: tuple[bytes | str | int, ...] = (
        b"EVALSHA",
        "0" * 40,
        5,
        "p:{zoë 😀}:meta",
        '{"type":"notification.created","offset":"',
        "line\r\nbreak \x00 nul",
        "",
        2**63 - 1,
        0,
    )
    assert packed(*args) == b"".join(Connection().pack_command(*args))


def test_commands_append_in_order() -> None:
    out: list[bytes] = []
    pack_command((b"PING",), out)
    pack_command(("ECHO", "x"), out)
    assert b"".join(out) == b"*1\r\n$4\r\nPING\r\n*2\r\n$4\r\nECHO\r\n$1\r\nx\r\n"


@pytest.mark.parametrize("bad", [True, 1.5, None, ["x"]])
def test_other_types_are_refused(bad: object) -> None:
    with pytest.raises(TypeError):
        pack_command((b"SET", "k", bad), [])  # type: ignore[arg-type]


def test_a_lone_surrogate_is_refused() -> None:
    with pytest.raises(UnicodeEncodeError):
        pack_command(("SET", "k", "\ud800"), [])
