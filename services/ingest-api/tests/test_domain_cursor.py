"""Cursor encoding: round trips, opacity and refusal of anything not issued by the API."""

from __future__ import annotations

import base64
from datetime import UTC, datetime, timedelta, timezone

import pytest
from hypothesis import given
from hypothesis import strategies as st

from clarion_ingest.domain.cursor import Cursor, InvalidCursorError, decode_cursor, encode_cursor


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


@given(
    st.datetimes(timezones=st.just(UTC), min_value=datetime(1971, 1, 1)),
    st.text(min_size=1, max_size=80),
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
