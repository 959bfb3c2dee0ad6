"""Mapping of GH Archive events to domain events, on real lines of the shared data."""

from __future__ import annotations

import gzip
import json
from pathlib import Path
from typing import Any

import pytest

from clarion_devstack.replay.github import github_event_id, to_domain_event
from clarion_devstack.replay.sources import SourceStats, read_events, resolve_source

DATA = Path(__file__).resolve().parents[3].parent / "shared" / "data" / "gharchive"
HOUR = DATA / "2015-01-01-15.json.gz"


def raw_event(**overrides: Any) -> dict[str, Any]:
    event: dict[str, Any] = {
        "id": "100",
        "type": "WatchEvent",
        "actor": {"login": "alice", "avatar_url": "https://avatars.example/u/1"},
        "repo": {"name": "bob/project"},
        "payload": {"action": "started"},
        "created_at": "2015-01-01T15:00:00Z",
    }
    event.update(overrides)
    return event


def test_star_notifies_the_owner() -> None:
    event = to_domain_event(raw_event())
    assert event is not None
    assert event.type == "repo.starred"
    assert event.recipients == ["bob"]
    assert event.object.ref == "repo:bob/project"
    assert event.event_id == github_event_id("100")
    assert event.occurred_at.isoformat() == "2015-01-01T15:00:00+00:00"


def test_owner_starring_own_repo_notifies_nobody() -> None:
    assert to_domain_event(raw_event(actor={"login": "bob"})) is None


def test_issue_comment_notifies_owner_and_author_but_not_actor() -> None:
    payload = {
        "action": "created",
        "issue": {"number": 7, "title": "Crash", "user": {"login": "carol"}, "html_url": None},
    }
    event = to_domain_event(raw_event(type="IssueCommentEvent", payload=payload))
    assert event is not None
    assert event.type == "issue.commented"
    assert event.recipients == ["bob", "carol"]
    assert event.object.ref == "issue:bob/project#7"
    own = to_domain_event(
        raw_event(type="IssueCommentEvent", payload=payload, actor={"login": "carol"})
    )
    assert own is not None
    assert own.recipients == ["bob"]


def test_merged_pull_request_is_its_own_type() -> None:
    payload = {
        "action": "closed",
        "number": 3,
        "pull_request": {"number": 3, "title": "Fix", "merged": True, "user": {"login": "dan"}},
    }
    event = to_domain_event(raw_event(type="PullRequestEvent", payload=payload))
    assert event is not None
    assert event.type == "pull_request.merged"
    assert event.object.type == "pull_request"


def test_member_event_notifies_the_member() -> None:
    payload = {"action": "added", "member": {"login": "erin"}}
    event = to_domain_event(raw_event(type="MemberEvent", payload=payload))
    assert event is not None
    assert event.recipients == ["erin"]


@pytest.mark.parametrize("kind", ["PushEvent", "CreateEvent", "DeleteEvent", "GollumEvent"])
def test_activity_that_notifies_nobody_is_skipped(kind: str) -> None:
    assert to_domain_event(raw_event(type=kind, payload={})) is None


@pytest.mark.skipif(not HOUR.exists(), reason="shared data not present")
def test_real_hour_maps_every_notifying_event() -> None:
    stats = SourceStats()
    events = list(read_events(HOUR, stats))
    assert stats.lines == 11351
    assert stats.mapped == len(events) > 3000
    assert len({e.event_id for e in events}) == len(events)
    # Count the notifying kinds independently from the raw file.
    notifying = 0
    with gzip.open(HOUR, "rt") as handle:
        for line in handle:
            raw = json.loads(line)
            if (
                raw["type"] in ("WatchEvent", "ForkEvent")
                and raw["actor"]["login"] != raw["repo"]["name"].split("/")[0]
            ):
                notifying += 1
    assert sum(e.type in ("repo.starred", "repo.forked") for e in events) == notifying


def test_ndjson_domain_events_are_read_as_is(tmp_path: Path) -> None:
    event = to_domain_event(raw_event())
    assert event is not None
    path = tmp_path / "events.ndjson"
    path.write_text(event.model_dump_json() + "\n\n" + event.model_dump_json() + "\n")
    assert list(read_events(path)) == [event, event]


def test_bad_line_reports_its_number(tmp_path: Path) -> None:
    path = tmp_path / "bad.ndjson"
    path.write_text('{"event_id": "x"}\n')
    with pytest.raises(ValueError, match=r"bad.ndjson:1: not a domain or GitHub event"):
        list(read_events(path))
    path.write_text("\nnot json\n")
    with pytest.raises(ValueError, match=r"bad.ndjson:2: not JSON"):
        list(read_events(path))


def test_missing_source_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="replay source not found"):
        resolve_source(str(tmp_path / "nope.json.gz"))
