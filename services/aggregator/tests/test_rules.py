"""Unit tests of the aggregation rules file and its parser."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest

from clarion_aggregator.domain.rendering import Renderer
from clarion_aggregator.domain.rules import RulesError, load_rules, parse_duration, parse_rules
from clarion_contracts.base import Channel, Priority

PACKAGED = {
    "post.liked": (timedelta(minutes=5), 3, "social"),
    "post.commented": (timedelta(minutes=10), 2, "social"),
    "user.followed": (timedelta(hours=1), 5, "social"),
    "repo.starred": (timedelta(hours=1), 3, "repos"),
    "repo.forked": (timedelta(hours=1), 3, "repos"),
    "repo.member_added": (timedelta(0), 1, "repos"),
    "issue.opened": (timedelta(0), 1, "issues"),
    "issue.closed": (timedelta(0), 1, "issues"),
    "issue.reopened": (timedelta(0), 1, "issues"),
    "issue.commented": (timedelta(minutes=10), 2, "issues"),
    "pull_request.opened": (timedelta(0), 1, "pull_requests"),
    "pull_request.closed": (timedelta(0), 1, "pull_requests"),
    "pull_request.merged": (timedelta(0), 1, "pull_requests"),
    "pull_request.reopened": (timedelta(0), 1, "pull_requests"),
    "pull_request.review_commented": (timedelta(minutes=10), 2, "pull_requests"),
    "pull_request.reviewed": (timedelta(minutes=10), 2, "pull_requests"),
    "commit.commented": (timedelta(minutes=10), 2, "repos"),
    "release.published": (timedelta(0), 1, "releases"),
    "clarion.announcement": (timedelta(0), 1, "announcements"),
}


@pytest.mark.parametrize(("event_type", "expected"), sorted(PACKAGED.items()))
def test_packaged_rules(event_type: str, expected: tuple[timedelta, int, str]) -> None:
    rule = load_rules().for_type(event_type)
    assert (rule.window, rule.max_actors, rule.category) == expected
    assert rule.event_type == event_type


def test_unknown_type_gets_the_default_rule() -> None:
    rule = load_rules().for_type("thing.happened")
    assert rule.category == "general"
    assert rule.window == timedelta(minutes=10)
    assert rule.max_actors == 3
    assert rule.template == "default"
    assert rule.channels == {Channel.IN_APP, Channel.PUSH, Channel.EMAIL}
    assert rule.priority is Priority.NORMAL
    assert rule.event_type == "thing.happened"


def test_every_packaged_template_exists_in_english() -> None:
    rules = load_rules()
    renderer = Renderer()
    for rule in [rules.default, *rules.rules.values()]:
        assert renderer.template_path(rule.template, "en") == f"en/{rule.template}.j2"


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [(0, 0), ("0", 0), (90, 90), ("30s", 30), ("5m", 300), ("1h", 3600), (" 2 h ", 7200)],
)
def test_parse_duration(raw: object, seconds: int) -> None:
    assert parse_duration(raw) == timedelta(seconds=seconds)


@pytest.mark.parametrize("raw", ["-1", -5, "5d", "1.5m", "abc", True, None])
def test_parse_duration_rejects(raw: object) -> None:
    with pytest.raises(RulesError):
        parse_duration(raw)


DEFAULT = {
    "window": "10m",
    "max_actors": 3,
    "category": "general",
    "channels": ["in_app"],
    "priority": "normal",
    "template": "default",
}


def test_rule_inherits_from_default() -> None:
    rules = parse_rules({"default": DEFAULT, "rules": {"a.b": {"window": "1m"}}})
    rule = rules.for_type("a.b")
    assert rule.window == timedelta(minutes=1)
    assert rule.max_actors == 3
    assert rule.channels == {Channel.IN_APP}


@pytest.mark.parametrize(
    "document",
    [
        {},
        {"rules": {}},
        {"default": {**DEFAULT, "colour": "red"}},
        {"default": {k: v for k, v in DEFAULT.items() if k != "window"}},
        {"default": DEFAULT, "rules": {"a.b": {"max_actors": 0}}},
        {"default": DEFAULT, "rules": {"a.b": {"channels": ["pigeon"]}}},
        {"default": DEFAULT, "rules": {"a.b": {"priority": "meh"}}},
        {"default": DEFAULT, "extra": 1},
        {"default": DEFAULT, "rules": ["a.b"]},
    ],
)
def test_bad_documents_are_refused(document: dict[str, object]) -> None:
    with pytest.raises(RulesError):
        parse_rules(document)


def test_load_rules_from_another_file(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text(
        "default:\n  window: 1m\n  max_actors: 2\n  category: c\n"
        "  channels: [push]\n  priority: high\n  template: default\n"
    )
    rule = load_rules(path).for_type("x.y")
    assert (rule.window, rule.max_actors, rule.priority) == (timedelta(minutes=1), 2, Priority.HIGH)


def test_load_rules_reports_yaml_errors(tmp_path: Path) -> None:
    path = tmp_path / "rules.yaml"
    path.write_text("default: [unclosed\n")
    with pytest.raises(RulesError):
        load_rules(path)
