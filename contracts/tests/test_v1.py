"""Validation rules of the v1 message contracts."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from clarion_contracts.base import Priority
from clarion_contracts.v1 import (
    MAX_RECIPIENTS,
    Audience,
    DomainEvent,
    InboxAction,
    InboxEvent,
    Preferences,
    QuietHours,
)


def event_body(**overrides: object) -> dict[str, object]:
    body: dict[str, object] = {
        "event_id": str(uuid.uuid4()),
        "type": "post.liked",
        "occurred_at": "2026-01-02T03:04:05Z",
        "actor": {"id": "alice", "name": "Alice"},
        "recipients": ["bob"],
        "object": {"type": "post", "id": "p1", "title": "Hello"},
    }
    body.update(overrides)
    return body


def test_domain_event_minimal_defaults() -> None:
    event = DomainEvent.model_validate(event_body())
    assert event.priority is Priority.NORMAL
    assert event.data == {}
    assert event.schema_version == 1
    assert event.object.ref == "post:p1"


def test_domain_event_round_trips_through_bytes() -> None:
    event = DomainEvent.model_validate(event_body(data={"n": 1}, priority="urgent"))
    again = DomainEvent.from_bytes(event.to_bytes())
    assert again == event


def test_domain_event_is_frozen() -> None:
    event = DomainEvent.model_validate(event_body())
    with pytest.raises(ValidationError):
        event.type = "post.commented"  # type: ignore[misc]


@pytest.mark.parametrize(
    "overrides",
    [
        {"recipients": None},
        {"audience": {"all": True}},
        {"recipients": []},
        {"recipients": ["x"] * (MAX_RECIPIENTS + 1)},
        {"type": "liked"},
        {"type": "Post.Liked"},
        {"occurred_at": "2026-01-02T03:04:05"},
        {"event_id": "not-a-uuid"},
        {"priority": "critical"},
        {"actor": {"id": "alice"}},
        {"recipients": ["has space"]},
    ],
)
def test_domain_event_refuses_bad_input(overrides: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        DomainEvent.model_validate(event_body(**overrides))


def test_audience_instead_of_recipients() -> None:
    event = DomainEvent.model_validate(event_body(recipients=None, audience={"all": True}))
    assert event.audience == Audience(all=True)


@pytest.mark.parametrize("audience", [{}, {"all": True, "segment": "beta"}, {"all": False}])
def test_audience_needs_exactly_one_target(audience: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        Audience.model_validate(audience)


def test_unknown_fields_are_ignored_for_forward_compatibility() -> None:
    event = DomainEvent.model_validate(event_body(added_in_a_later_minor="x"))
    assert "added_in_a_later_minor" not in event.model_dump()


def test_schema_version_is_pinned() -> None:
    with pytest.raises(ValidationError):
        DomainEvent.model_validate(event_body(schema_version=2))


def test_quiet_hours_format() -> None:
    assert QuietHours(start="22:00", end="07:30").end == "07:30"
    with pytest.raises(ValidationError):
        QuietHours(start="24:00", end="07:00")


def test_preferences_defaults() -> None:
    prefs = Preferences(user_id="u1", updated_at=datetime.now(UTC))
    assert prefs.email_digest == "daily"
    assert prefs.categories == {}


def test_inbox_event_count_not_negative() -> None:
    with pytest.raises(ValidationError):
        InboxEvent(
            event_id=uuid.uuid4(),
            recipient_id="u1",
            action=InboxAction.READ,
            unread_count=-1,
            occurred_at=datetime.now(UTC),
        )
