"""Unit tests of preference checks and channel routing."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest

from clarion_aggregator.domain.routing import EmailMode, channel_enabled, effective_timezone, route
from clarion_aggregator.domain.rules import AggregationRule, load_rules
from clarion_contracts.base import Channel, Priority
from clarion_contracts.v1 import Preferences

RULES = load_rules()
LIKED = RULES.for_type("post.liked")
NOON = datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
NIGHT = datetime(2026, 1, 5, 23, 0, tzinfo=UTC)


def prefs(**kw: Any) -> Preferences:
    return Preferences.model_validate({"user_id": "bob", "updated_at": NOON.isoformat(), **kw})


def go(
    rule: AggregationRule = LIKED,
    priority: Priority = Priority.NORMAL,
    p: Preferences | None = None,
    online: bool = False,
    now: datetime = NOON,
    tz: str | None = None,
):
    return route(
        rule=rule,
        priority=priority,
        object_ref="post:p1",
        prefs=p,
        profile_timezone=tz,
        online=online,
        now=now,
    )


def test_defaults_offline_user() -> None:
    r = go()
    assert not r.suppressed
    assert (r.in_app, r.push, r.email) == (True, True, EmailMode.DIGEST)
    assert r.not_before is None
    assert r.digest is not None
    assert r.digest.end == datetime(2026, 1, 6, 9, 0, tzinfo=UTC)
    assert r.channels == [Channel.IN_APP, Channel.PUSH, Channel.EMAIL]


def test_online_user_gets_no_push_unless_high_priority() -> None:
    assert go(online=True).push is False
    assert go(online=True, priority=Priority.HIGH).push is True
    assert go(online=True, priority=Priority.URGENT).push is True


def test_high_priority_email_is_immediate() -> None:
    assert go(priority=Priority.HIGH).email is EmailMode.IMMEDIATE
    assert go(priority=Priority.URGENT).email is EmailMode.IMMEDIATE
    assert go(priority=Priority.LOW).email is EmailMode.DIGEST


def test_muted_object_suppresses_everything() -> None:
    r = go(p=prefs(muted_objects=["post:p1"]), priority=Priority.URGENT)
    assert r.suppressed
    assert r.channels == []
    assert not go(p=prefs(muted_objects=["post:p2"])).suppressed


def test_category_switches() -> None:
    p = prefs(categories={"social": {"push": False, "email": False}})
    r = go(p=p)
    assert (r.in_app, r.push, r.email) == (True, False, EmailMode.NONE)
    everything_off = prefs(categories={"social": {"in_app": False, "push": False, "email": False}})
    assert go(p=everything_off).suppressed
    # another category's switch does not apply
    assert go(p=prefs(categories={"repos": {"push": False}})).push is True


def test_unset_switch_falls_back_to_rule_default() -> None:
    rule = RULES.for_type("clarion.announcement")  # default channels: in_app, push
    assert channel_enabled(None, rule, Channel.EMAIL) is False
    assert (
        channel_enabled(prefs(categories={"announcements": {"push": False}}), rule, Channel.EMAIL)
        is False
    )
    assert (
        channel_enabled(prefs(categories={"announcements": {"email": True}}), rule, Channel.EMAIL)
        is True
    )


@pytest.mark.parametrize(
    ("digest", "mode"), [("off", EmailMode.NONE), ("hourly", EmailMode.DIGEST)]
)
def test_digest_preference(digest: str, mode: EmailMode) -> None:
    r = go(p=prefs(email_digest=digest))
    assert r.email is mode
    if mode is EmailMode.DIGEST:
        assert r.digest is not None
        assert r.digest.end == datetime(2026, 1, 5, 13, tzinfo=UTC)


def test_digest_off_still_sends_immediate_email() -> None:
    assert go(p=prefs(email_digest="off"), priority=Priority.HIGH).email is EmailMode.IMMEDIATE


def test_quiet_hours_defer_push_and_immediate_email() -> None:
    p = prefs(quiet_hours={"start": "22:00", "end": "07:00"})
    r = go(p=p, now=NIGHT, priority=Priority.HIGH)
    assert r.push
    assert r.email is EmailMode.IMMEDIATE
    assert r.not_before == datetime(2026, 1, 6, 7, 0, tzinfo=UTC)
    assert go(p=p, now=NOON).not_before is None


def test_urgent_bypasses_quiet_hours() -> None:
    p = prefs(quiet_hours={"start": "22:00", "end": "07:00"})
    r = go(p=p, now=NIGHT, priority=Priority.URGENT)
    assert r.push
    assert r.not_before is None


def test_quiet_hours_in_profile_timezone() -> None:
    p = prefs(quiet_hours={"start": "22:00", "end": "07:00"})
    # 23:00 UTC is 18:00 in New York: not quiet there
    assert go(p=p, now=NIGHT, tz="America/New_York").not_before is None
    # preferences' own timezone wins over the profile's
    p_tz = prefs(quiet_hours={"start": "22:00", "end": "07:00"}, timezone="Europe/Paris")
    r = go(p=p_tz, now=NIGHT, tz="America/New_York")
    assert r.not_before == datetime(2026, 1, 6, 6, 0, tzinfo=UTC)


def test_effective_timezone() -> None:
    assert effective_timezone(None, None) == "UTC"
    assert effective_timezone(None, "Asia/Tokyo") == "Asia/Tokyo"
    assert effective_timezone(prefs(timezone="Europe/Paris"), "Asia/Tokyo") == "Europe/Paris"
