"""Redis client factory (redis-py asyncio, RESP over TCP)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import redis.asyncio as aioredis

if TYPE_CHECKING:
    from clarion_kit.settings import ServiceSettings


def create_redis(settings: ServiceSettings, **overrides: Any) -> aioredis.Redis:
    """Return an asyncio Redis client for ``settings.redis_url`` (nothing connects yet).

    Replies are ``bytes`` unless ``decode_responses=True`` is passed. The client owns a
    connection pool: close it with ``await client.aclose()`` at shutdown.

    Args:
        settings: gives ``redis_url`` (``redis://host:port/db`` or ``rediss://``).
        **overrides: keyword arguments for ``redis.asyncio.Redis.from_url``.
    """
    options: dict[str, Any] = {
        "socket_connect_timeout": 5.0,
        "socket_timeout": 10.0,
        "health_check_interval": 30,
        "client_name": settings.service_name,
    }
    options.update(overrides)
    client: aioredis.Redis = aioredis.Redis.from_url(settings.redis_url, **options)
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
