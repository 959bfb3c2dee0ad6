"""Redis client factory (redis-py asyncio, RESP over TCP) and pipelined Lua calls."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis
from redis.commands.core import AsyncScript
from redis.exceptions import NoScriptError

if TYPE_CHECKING:
    from clarion_kit.settings import ServiceSettings


def create_redis(settings: ServiceSettings, **overrides: Any) -> aioredis.Redis:
    """Return an asyncio Redis client for ``settings.redis_url`` (nothing connects yet).

    Replies are ``bytes`` unless ``decode_responses=True`` is passed. The client owns a
    connection pool: close it with ``await client.aclose()`` at shutdown.

    The pool is a ``BlockingConnectionPool`` of at most ``settings.redis_max_connections``:
    a burst (thousands of WebSocket clients reconnecting at once after a gateway
    restart) waits up to ``settings.redis_pool_timeout_seconds`` for a free connection
    instead of failing with "Too many connections", and never opens more connections
    than Redis is sized for.

    Args:
        settings: gives ``redis_url`` (``redis://host:port/db`` or ``rediss://``) and
            the pool bounds.
        **overrides: keyword arguments for the connection pool
            (``redis.asyncio.BlockingConnectionPool.from_url``).
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 10.0,
        "health_check_interval": 30,
        "client_name": settings.service_name,
        "max_connections": settings.redis_max_connections,
        "timeout": settings.redis_pool_timeout_seconds,
    }
    options.update(overrides)
    pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, **options)
    client: aioredis.Redis = aioredis.Redis.from_pool(pool)  # closes the pool with it
    return client


def decode_text(value: Any) -> str:
    """A Redis reply as text: ``bytes`` decoded as UTF-8, ``None`` (no such key) as ``""``.

    Clients made without ``decode_responses=True`` answer ``bytes``; this reads such a
    reply and a ``str`` one alike (anything else is passed through ``str``).

    Raises:
        UnicodeDecodeError: ``value`` is ``bytes`` that are not UTF-8.
    """
    if value is None:
        return ""
    return value.decode() if isinstance(value, bytes) else str(value)


async def ping(client: aioredis.Redis) -> None:
    """Readiness check: ``PING`` the server.

    Raises:
        redis.exceptions.RedisError: the server is unreachable or answered an error.
    """
    await client.ping()


ScriptCall = tuple[Sequence[Any], Sequence[Any]]
"""One call of a Lua script: ``(keys, args)``."""


async def evalsha_many(
    client: aioredis.Redis, script: AsyncScript, calls: Sequence[ScriptCall]
) -> list[Any]:
    """Run ``script`` once per ``(keys, args)`` of ``calls``, pipelined; replies in order.

    A pipeline of redis-py ``Script`` calls first asks ``SCRIPT EXISTS`` on every
    ``execute``, a second round trip per batch. Here each call is a plain
    ``EVALSHA`` (Redis ``EVALSHA`` command); only when Redis answers ``NOSCRIPT``
    (its script cache was flushed or the server restarted) is the script loaded and
    the refused calls sent again, in their order. Commands of a non-transactional
    pipeline are independent, so calls Redis refused were not run and calls it ran
    are not repeated.

    Args:
        client: the Redis client.
        script: from ``client.register_script(lua)``.
        calls: the keys and arguments of each call.

    Raises:
        redis.RedisError: Redis unreachable, or a call failed (the first failure; the
            other calls of the pipeline were run).
    """
    if not calls:
        return []
    replies = await _evalsha_pipeline(client, script.sha, calls)
    refused = [i for i, reply in enumerate(replies) if isinstance(reply, NoScriptError)]
    if refused:
        script.sha = await client.script_load(script.script)
        again = await _evalsha_pipeline(client, script.sha, [calls[i] for i in refused])
        for i, reply in zip(refused, again, strict=True):
            replies[i] = reply
    for reply in replies:
        if isinstance(reply, Exception):
            raise reply
    return replies


async def _evalsha_pipeline(
    client: aioredis.Redis, sha: str, calls: Sequence[ScriptCall]
) -> list[Any]:
    async with client.pipeline(transaction=False) as pipe:
        for keys, args in calls:
            pipe.evalsha(sha, len(keys), *keys, *args)
        replies: list[Any] = await pipe.execute(raise_on_error=False)
    return replies
