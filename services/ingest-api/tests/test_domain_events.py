"""Validation of producers' events and batches, and record keys."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from clarion_ingest.domain.events import (
    EventValidationError,
    event_records,
    parse_batch,
    parse_event,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def event(**overrides: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "event_id": str(uuid.uuid4()),
        "type": "post.liked",
        "occurred_at": "2026-11-24T11:59:00Z",
        "actor": {"id": "alice", "name": "Alice"},
        "recipients": ["bob"],
        "object": {"type": "post", "id": "p1"},
    }
    body.update(overrides)
    return body


def test_valid_event_gets_ingested_at() -> None:
    parsed = parse_event(event(), NOW)
    assert parsed.ingested_at == NOW
    assert parsed.recipients == ["bob"]


def test_client_ingested_at_is_replaced() -> None:
    parsed = parse_event(event(ingested_at="2000-01-01T00:00:00Z"), NOW)
    assert parsed.ingested_at == NOW


def test_unknown_top_level_field_is_refused() -> None:
    with pytest.raises(EventValidationError) as info:
        parse_event(event(recipient="bob"), NOW)
    assert info.value.errors == [
        {"loc": ["recipient"], "msg": "unknown field", "type": "extra_forbidden"}
    ]


@pytest.mark.parametrize(
    ("overrides", "loc"),
    [
        ({"event_id": "nope"}, ["event_id"]),
        ({"type": "Liked"}, ["type"]),
        ({"occurred_at": "2026-11-24T11:59:00"}, ["occurred_at"]),
        ({"recipients": []}, ["recipients"]),
        ({"actor": {"id": "a"}}, ["actor", "name"]),
        ({"priority": "critical"}, ["priority"]),
    ],
)
def test_contract_errors_are_located(overrides: dict[str, Any], loc: list[Any]) -> None:
    with pytest.raises(EventValidationError) as info:
        parse_event(event(**overrides), NOW)
    assert any(err["loc"][: len(loc)] == loc for err in info.value.errors), info.value.errors


def test_recipients_and_audience_together_are_refused() -> None:
    with pytest.raises(EventValidationError):
        parse_event(event(audience={"all": True}), NOW)


@pytest.mark.parametrize("raw", [[], "x", 3, None])
def test_non_object_event_is_refused(raw: Any) -> None:
    with pytest.raises(EventValidationError):
        parse_event(raw, NOW)


def test_batch_reports_errors_with_indexes_and_refuses_all() -> None:
    with pytest.raises(EventValidationError) as info:
        parse_batch({"events": [event(), event(type="X"), event(extra=1)]}, NOW, 10)
    locs = [err["loc"][:2] for err in info.value.errors]
    assert ["events", 1] in locs
    assert ["events", 2] in locs
    assert all(loc[1] != 0 for loc in locs)


def test_batch_size_bounds() -> None:
    with pytest.raises(EventValidationError, match="1 validation"):
        parse_batch({"events": []}, NOW, 10)
    with pytest.raises(EventValidationError) as info:
        parse_batch({"events": [event() for _ in range(3)]}, NOW, 2)
    assert info.value.errors[0]["type"] == "too_long"
    assert len(parse_batch({"events": [event(), event()]}, NOW, 2)) == 2


@pytest.mark.parametrize(
    "raw", [[], {"events": "x"}, {"events": [], "more": 1}, {"evnts": []}, None]
)
def test_batch_shape_errors(raw: Any) -> None:
    with pytest.raises(EventValidationError):
        parse_batch(raw, NOW, 10)


def test_batch_refuses_duplicate_event_ids() -> None:
    one = event()
    with pytest.raises(EventValidationError) as info:
        parse_batch({"events": [one, dict(one)]}, NOW, 10)
    assert info.value.errors[0]["loc"] == ["events", 1, "event_id"]


def test_event_records_one_per_recipient_keyed_by_recipient() -> None:
    single = parse_event(event(recipients=["bob"]), NOW)
    assert event_records(single) == [(b"bob", single)]
    many = parse_event(event(recipients=["bob", "carol"]), NOW)
    records = event_records(many)
    assert [key for key, _ in records] == [b"bob", b"carol"]
    assert [one.recipients for _, one in records] == [["bob"], ["carol"]]
    assert {one.event_id for _, one in records} == {many.event_id}
    broadcast = parse_event(event(recipients=None, audience={"all": True}), NOW)
    assert event_records(broadcast) == [(str(broadcast.event_id).encode(), broadcast)]
