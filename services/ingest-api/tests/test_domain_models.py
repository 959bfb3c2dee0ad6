"""Request models, announcements, preferences changes and inbox shaping."""

from __future__ import annotations

import hashlib
import uuid
from datetime import UTC, datetime

import pytest
from pydantic import ValidationError

from clarion_contracts.v1 import ChannelPreference, Preferences
from clarion_ingest.domain.inbox import clamp_limit, counts_from_rows
from clarion_ingest.domain.models import (
    ANNOUNCEMENT_TYPE,
    AnnouncementIn,
    PreferencesIn,
    PreferencesOut,
    ProfileIn,
    PushSubscriptionIn,
    build_announcement,
    check_timezone,
    default_preferences,
    subscription_id,
    with_email_off,
)

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


@pytest.mark.parametrize("name", ["UTC", "Europe/Paris", "America/Argentina/Buenos_Aires"])
def test_known_timezones_pass(name: str) -> None:
    assert check_timezone(name) == name


@pytest.mark.parametrize("name", ["", "Mars/Olympus", "../../etc/passwd", "/etc/localtime"])
def test_unknown_timezones_fail(name: str) -> None:
    with pytest.raises(ValueError, match="time zone"):
        check_timezone(name)


def test_profile_refuses_unknown_fields_and_bad_timezone() -> None:
    with pytest.raises(ValidationError):
        ProfileIn.model_validate({"name": "Bob", "nickname": "b"})
    with pytest.raises(ValidationError):
        ProfileIn.model_validate({"name": "Bob", "timezone": "Nowhere/City"})
    profile = ProfileIn.model_validate({"name": "Bob", "locale": "pt-BR", "timezone": "Asia/Tokyo"})
    assert profile.timezone == "Asia/Tokyo"


def test_preferences_in_to_contract_and_back() -> None:
    body = PreferencesIn.model_validate(
        {
            "categories": {"social": {"email": False}},
            "email_digest": "hourly",
            "quiet_hours": {"start": "22:00", "end": "07:00"},
            "timezone": "Europe/Berlin",
        }
    )
    prefs = body.to_contract("bob", NOW)
    assert prefs.user_id == "bob"
    assert prefs.categories["social"].email is False
    out = PreferencesOut.from_contract(prefs)
    assert out.updated_at == NOW
    assert out.email_digest == "hourly"


def test_preferences_in_refuses_user_id_and_bad_values() -> None:
    with pytest.raises(ValidationError):
        PreferencesIn.model_validate({"user_id": "mallory"})
    with pytest.raises(ValidationError):
        PreferencesIn.model_validate({"digest_hour": 24})
    with pytest.raises(ValidationError):
        PreferencesIn.model_validate({"quiet_hours": {"start": "25:00", "end": "07:00"}})


def test_defaults_when_never_saved() -> None:
    assert PreferencesOut.from_contract(None).updated_at is None


def test_with_email_off_keeps_other_switches() -> None:
    prefs = Preferences(
        user_id="bob",
        categories={"social": ChannelPreference(push=False)},
        updated_at=NOW,
    )
    changed = with_email_off(prefs, "social", NOW)
    assert changed.categories["social"] == ChannelPreference(push=False, email=False)
    fresh = with_email_off(default_preferences("bob", NOW), "digest", NOW)
    assert fresh.categories["digest"].email is False


def test_subscription_id_is_sha256_of_endpoint() -> None:
    endpoint = "https://push.example.com/send/abc"
    assert subscription_id(endpoint) == hashlib.sha256(endpoint.encode()).hexdigest()


def test_push_subscription_accepts_browser_json() -> None:
    body = PushSubscriptionIn.model_validate(
        {
            "endpoint": "https://push.example.com/send/abc",
            "expirationTime": None,
            "keys": {"p256dh": "BOr...", "auth": "xyz"},
        }
    )
    assert body.keys.auth == "xyz"
    with pytest.raises(ValidationError):
        PushSubscriptionIn.model_validate(
            {"endpoint": "ftp://x/y", "keys": {"p256dh": "a", "auth": "b"}}
        )


@pytest.mark.parametrize(
    "targets",
    [{}, {"all": True, "segment": "beta"}, {"recipients": ["a"], "all": True}],
)
def test_announcement_needs_exactly_one_target(targets: dict[str, object]) -> None:
    with pytest.raises(ValidationError):
        AnnouncementIn.model_validate({"title": "T", "body": "B", **targets})


def test_build_announcement_to_everyone() -> None:
    body = AnnouncementIn.model_validate(
        {"title": "Maintenance", "body": "Tonight", "all": True, "priority": "high"}
    )
    event_id = uuid.uuid4()
    event = build_announcement(body, "admin-1", event_id, NOW)
    assert event.type == ANNOUNCEMENT_TYPE
    assert event.audience is not None
    assert event.audience.all
    assert event.recipients is None
    assert event.actor.id == "admin-1"
    assert event.object.id == str(event_id)
    assert event.data["body"] == "Tonight"
    assert event.priority.value == "high"


def test_build_announcement_to_recipients_and_segment() -> None:
    listed = AnnouncementIn.model_validate({"title": "T", "body": "B", "recipients": ["u1", "u2"]})
    assert build_announcement(listed, "a", uuid.uuid4(), NOW).recipients == ["u1", "u2"]
    seg = AnnouncementIn.model_validate({"title": "T", "body": "B", "segment": "beta"})
    event = build_announcement(seg, "a", uuid.uuid4(), NOW)
    assert event.audience is not None
    assert event.audience.segment == "beta"


def test_clamp_limit() -> None:
    assert clamp_limit(None, 20, 100) == 20
    assert clamp_limit(500, 20, 100) == 100
    assert clamp_limit(0, 20, 100) == 1


def test_counts_from_rows_sums_categories() -> None:
    counts = counts_from_rows([("social", 3, 1), ("system", 2, 2)])
    assert counts.unread == 3
    assert counts.total == 5
    assert counts.categories["system"].unread == 2
    assert counts_from_rows([]).total == 0
