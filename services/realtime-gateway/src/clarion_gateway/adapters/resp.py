"""Pipelined Redis commands packed by the gateway itself (RESP2 request encoding).

The history append runs one ``EVALSHA`` per consumed record. redis-py's pipeline
encodes every argument through its generic ``Encoder`` and keeps a command stack
per call, which a profile of the gateway at full speed showed as a large share of
its CPU; requests here are encoded once into one buffer and written with a single
``send_packed_command``. Replies are still parsed by redis-py's parser on a
connection borrowed from the client's pool, so RESP3, authentication, timeouts and
reconnection stay redis-py's.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from redis.asyncio import Redis
from redis.exceptions import NoScriptError, ResponseError

Arg = bytes | str | int


def pack_command(args: Iterable[Arg], out: list[bytes]) -> None:
    """Append one command as a RESP array of bulk strings to ``out``.

    Every Redis request is an array of bulk strings, whatever protocol version the
    replies use (RESP specification, "Sending commands to a Redis server"). ``str``
    is UTF-8 encoded (surrogates refused, as redis-py's encoder does), ``int`` is
    written in decimal.

    Raises:
        TypeError: an argument is not ``bytes``, ``str`` or ``int`` (``bool`` is
            refused: Redis has no boolean argument).
        UnicodeEncodeError: a ``str`` holds a lone surrogate.
    """
    start = len(out)
    out.append(b"")
    count = 0
    for arg in args:
        if isinstance(arg, bytes):
            data = arg
        elif isinstance(arg, str):
            data = arg.encode()
        elif isinstance(arg, int) and not isinstance(arg, bool):
            data = b"%d" % arg
        else:
            raise TypeError(f"cannot send {type(arg).__name__} to Redis")
        out.append(b"$%d\r\n%b\r\n" % (len(data), data))
        count += 1
    out[start] = b"*%d\r\n" % count


async def run_packed(redis: Redis, payload: bytes, count: int) -> list[Any]:
    """Send ``count`` packed commands in one write and read their replies in order.

    Returns:
        one entry per command: its reply, or the ``redis.exceptions.ResponseError``
        (``NoScriptError`` included) Redis answered it with. Commands are independent
        (no ``MULTI``), as in a non-transactional pipeline.

    Raises:
        redis.RedisError: the connection failed; the connection is dropped (some
            commands may have run, as with any pipeline whose replies were lost).
    """
    pool = redis.connection_pool
    conn = await pool.get_connection()  # type: ignore[no-untyped-call]
    try:
        await conn.send_packed_command(payload)
        replies: list[Any] = []
        for _ in range(count):
            try:
                replies.append(await conn.read_response())
            except ResponseError as exc:
                replies.append(exc)
    except BaseException:
        # Replies may still be in flight: the connection must not be reused.
        await conn.disconnect()
        raise
    finally:
        await pool.release(conn)
    return replies


__all__ = ["NoScriptError", "pack_command", "run_packed"]
