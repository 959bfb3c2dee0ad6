"""The Redis client factory and reply decoding (no server needed)."""

from __future__ import annotations

import pytest

from clarion_kit.redis import create_redis, decode_text
from clarion_kit.settings import ServiceSettings


@pytest.mark.parametrize(
    ("reply", "text"),
    [(None, ""), (b"sent", "sent"), ("sent", "sent"), (b"", ""), ("ünï".encode(), "ünï"), (3, "3")],
)
def test_decode_text_reads_bytes_and_str_replies_alike(reply: object, text: str) -> None:
    assert decode_text(reply) == text


def test_decode_text_refuses_bytes_that_are_not_utf8() -> None:
    with pytest.raises(UnicodeDecodeError):
        decode_text(b"\xff")


async def test_create_redis_names_the_client_and_connects_lazily(
    clean_env: pytest.MonkeyPatch,
) -> None:
    settings = ServiceSettings(service_name="kit-redis", redis_url="redis://127.0.0.1:1/3")
    client = create_redis(settings, socket_timeout=1.5)
    try:
        kwargs = client.connection_pool.connection_kwargs
        assert kwargs["client_name"] == "kit-redis"
        assert kwargs["db"] == 3
        assert kwargs["socket_timeout"] == 1.5
    finally:
        await client.aclose()
