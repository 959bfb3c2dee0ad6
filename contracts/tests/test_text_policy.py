"""The text and link policy of every contract: no U+0000, noncharacters, lone surrogates,
unbounded ``data`` nesting, or URLs other than http(s)."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from pydantic import ValidationError

from clarion_contracts.text import (
    MAX_JSON_DEPTH,
    TextPolicyError,
    check_text,
    configured_url_schemes,
    is_web_link,
    json_depth_exceeds,
    web_link,
)
from clarion_contracts.v1 import DomainEvent, Preferences, PushSubscription, UserProfile

REFUSED = ["\x00", "\ufffe", "\uffff", "\ufdd0", "\ufdef", "\U0001fffe", "\U0010ffff", "\ud800"]


def event_body(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "post.liked",
        "occurred_at": "2026-01-02T03:04:05Z",
        "actor": {"id": "alice", "name": "Alice"},
        "recipients": ["bob"],
        "object": {"type": "post", "id": "p1", "title": "Hello"},
    }
    body.update(overrides)
    return body


@pytest.mark.parametrize("char", REFUSED, ids=lambda c: f"U+{ord(c):04X}")
def test_check_text_refuses_each_class(char: str) -> None:
    with pytest.raises(TextPolicyError) as info:
        check_text(f"ab{char}c")
    assert info.value.position == 2
    assert info.value.code_point == ord(char)


ORDINARY = ["", "plain", "tab\tnew\nline", "émoji 😀", "\ufffd", "\U0001fffd"]


@pytest.mark.parametrize("text", ORDINARY)
def test_check_text_keeps_ordinary_text(text: str) -> None:
    assert check_text(text) == text


@pytest.mark.parametrize(
    "overrides",
    [
        {"actor": {"id": "alice", "name": "Al\x00ice"}},
        {"actor": {"id": "al\x00ice", "name": "Alice"}},
        {"recipients": ["b\x00ob"]},
        {"data": {"comment": "a\x00b"}},
        {"data": {"k\x00": 1}},
        {"data": {"nested": [{"deep": ["x\ufffe"]}]}},
        {"object": {"type": "post", "id": "p\x00", "title": "Hello"}},
        {"object": {"type": "post", "id": "p1", "title": "Hel\x00lo"}},
        {"tenant_id": "t\x00"},
        {"recipients": None, "audience": {"segment": "s\x00"}},
    ],
    ids=[
        "actor.name",
        "actor.id",
        "recipient",
        "data value",
        "data key",
        "nested data",
        "object.id",
        "object.title",
        "tenant_id",
        "segment",
    ],
)
def test_domain_event_refuses_nul_anywhere(overrides: dict[str, Any]) -> None:
    with pytest.raises(ValidationError):
        DomainEvent.model_validate(event_body(**overrides))


def test_domain_event_refuses_nul_sent_as_json_escape() -> None:
    body = event_body(actor={"id": "alice", "name": "Alice"})
    raw = DomainEvent.model_validate(body).model_dump_json().replace("Alice", "Al\\u0000ice")
    with pytest.raises(ValidationError):
        DomainEvent.model_validate_json(raw)


def _nested(depth: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(depth - 1):
        value = {"a": value}
    return value


def test_data_nesting_is_bounded() -> None:
    DomainEvent.model_validate(event_body(data=_nested(MAX_JSON_DEPTH)))
    with pytest.raises(ValidationError, match="nested deeper"):
        DomainEvent.model_validate(event_body(data=_nested(MAX_JSON_DEPTH + 1)))


def test_json_depth_is_iterative() -> None:
    deep: list[Any] = []
    for _ in range(100_000):
        deep = [deep]
    assert json_depth_exceeds(deep, MAX_JSON_DEPTH)
    assert not json_depth_exceeds({"a": [1, {"b": "c"}]}, 3)
    assert json_depth_exceeds({"a": [1, {"b": "c"}]}, 2)


@pytest.mark.parametrize(
    "url",
    [
        "javascript:alert(1)",
        "data:text/html,<script>alert(1)</script>",
        "vbscript:x",
        "file:///etc",
    ],
)
def test_object_url_accepts_only_web_schemes(url: str) -> None:
    obj = {"type": "post", "id": "p1", "url": url}
    with pytest.raises(ValidationError, match="scheme"):
        DomainEvent.model_validate(event_body(object=obj))
    with pytest.raises(ValidationError, match="scheme"):
        DomainEvent.model_validate(event_body(actor={"id": "a", "name": "A", "avatar_url": url}))


def test_object_url_keeps_http_and_https() -> None:
    for url in ("http://example.com/p/1", "https://example.com/p/1?x=1#y"):
        obj = {"type": "post", "id": "p1", "url": url}
        assert str(DomainEvent.model_validate(event_body(object=obj)).object.url) == url


def test_extra_schemes_come_from_the_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    configured_url_schemes.cache_clear()
    monkeypatch.setenv("CLARION_URL_SCHEMES", "myapp, javascript")
    try:
        schemes = configured_url_schemes()
        assert "myapp" in schemes
        assert "https" in schemes
        assert "javascript" not in schemes, "a scheme that runs code is never accepted"
        obj = {"type": "post", "id": "p1", "url": "myapp://post/1"}
        DomainEvent.model_validate(event_body(object=obj))
    finally:
        configured_url_schemes.cache_clear()


def test_web_link() -> None:
    assert is_web_link("https://example.com/x")
    assert web_link(" http://example.com ") == "http://example.com"
    for bad in ("javascript:alert(1)", "JAVASCRIPT://x", "data:,x", "myapp://x", "", None, "//x"):
        assert not is_web_link(bad)
        assert web_link(bad) is None


def test_other_contracts_apply_the_policy() -> None:
    with pytest.raises(ValidationError):
        Preferences.model_validate(
            {"user_id": "u", "categories": {"a\x00": {}}, "updated_at": "2026-01-01T00:00:00Z"}
        )
    with pytest.raises(ValidationError):
        Preferences.model_validate(
            {"user_id": "u", "muted_objects": ["post:\x00"], "updated_at": "2026-01-01T00:00:00Z"}
        )
    with pytest.raises(ValidationError):
        UserProfile.model_validate(
            {"user_id": "u", "name": "N", "email": "a\x00@b", "updated_at": "2026-01-01T00:00:00Z"}
        )
    with pytest.raises(ValidationError):
        PushSubscription.model_validate(
            {
                "subscription_id": "s",
                "user_id": "u",
                "endpoint": "https://push.example/x",
                "keys": {"p256dh": "k\x00", "auth": "a"},
                "updated_at": "2026-01-01T00:00:00Z",
            }
        )
