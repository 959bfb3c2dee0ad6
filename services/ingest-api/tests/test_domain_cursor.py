"""Cursor encoding: round trips, opacity and refusal of anything not issued by the API."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion_contracts.text import TextPolicyError, check_text
from clarion_ingest.domain.cursor import (
    Cursor,
    CursorRangeError,
    InvalidCursorError,
    decode_cursor,
    encode_cursor,
)


def _noncharacter(text: str) -> bool:
    try:
        check_text(text)
    except TextPolicyError:
        return True
    return False


def _raw(value: object) -> str:
    import json

    raw = json.dumps(value).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "at",
    [
        "0001-01-01T00:00:00+05:00",
        "9999-12-31T23:59:59-01:00",
        "1969-12-31T23:59:59Z",
        "9999-12-31T00:00:00Z",
    ],
)
def test_time_outside_the_supported_range_is_refused(at: str) -> None:
    with pytest.raises(CursorRangeError):
        decode_cursor(_raw([at, "x"]))


def test_id_with_nul_is_refused() -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(_raw(["2026-01-01T00:00:00Z", "a\u0000b"]))


def test_round_trip_keeps_microseconds_and_offset() -> None:
    at = datetime(2026, 1, 2, 3, 4, 5, 678901, tzinfo=timezone(timedelta(hours=2)))
    cursor = Cursor(at, "n-1|x")
    decoded = decode_cursor(encode_cursor(cursor))
    assert decoded == cursor
    assert decoded.updated_at.utcoffset() == timedelta(hours=2)


def test_encoded_cursor_is_url_safe_without_padding() -> None:
    text = encode_cursor(Cursor(datetime(2026, 1, 1, tzinfo=UTC), "a/b+c?"))
    assert "=" not in text
    assert set(text) <= set("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_")


_STORABLE = st.characters(blacklist_categories=("Cs",), blacklist_characters="\x00\ufffe\uffff")


@given(
    st.datetimes(
        timezones=st.just(UTC), min_value=datetime(1971, 1, 1), max_value=datetime(9999, 12, 29)
    ),
    st.text(_STORABLE, min_size=1, max_size=80).filter(lambda t: not _noncharacter(t)),
)
def test_round_trip_any_value(at: datetime, notification_id: str) -> None:
    cursor = Cursor(at, notification_id)
    assert decode_cursor(encode_cursor(cursor)) == cursor


def test_naive_time_is_refused_on_encode() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        encode_cursor(Cursor(datetime(2026, 1, 1), "n"))


def _b64(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


@pytest.mark.parametrize(
    "text",
    [
        "",
        "!!!not-base64!!!",
        _b64(b"not json"),
        _b64(b'{"a": 1}'),
        _b64(b'["2026-01-01T00:00:00+00:00"]'),
        _b64(b'["2026-01-01T00:00:00+00:00", ""]'),
        _b64(b'["2026-01-01T00:00:00", "n"]'),
        _b64(b'["yesterday", "n"]'),
        _b64(b'[1, "n"]'),
        "A" * 2000,
    ],
)
def test_invalid_cursors_are_refused(text: str) -> None:
    with pytest.raises(InvalidCursorError):
        decode_cursor(text)
