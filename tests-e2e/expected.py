"""Which notifications a GH Archive file must produce, computed independently of Clarion.

Recipients follow ../shared/data/gharchive/SOURCES.md (repository owner; the
issue or pull-request author; the added member; never the actor), the mapping
of event kinds to domain event types is the one docs/replay.md documents, and
aggregation follows the aggregator's rules file: per (recipient, type, object),
in file order, an event joins the open group when the rule's window is > 0 and
its time is before the group's first time plus the window; otherwise it starts
a new group. Each group is one notification whose final ``version`` is the
number of events it absorbed and whose ``actor_count`` is its distinct actors.
"""

from __future__ import annotations

import gzip
import json
import re
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RULES = ROOT / "services" / "aggregator" / "src" / "clarion_aggregator" / "rules.yaml"


@dataclass
class Group:
    """One expected notification."""

    recipient: str
    type: str
    object_ref: str
    first_ms: int
    events: int = 0
    actors: set[str] = field(default_factory=set)


def window_ms(value: Any) -> int:
    """``"5m"``/``"1h"``/``"30s"``/``0`` as milliseconds."""
    if value in (0, "0", None):
        return 0
    match = re.fullmatch(r"(\d+)([smh])", str(value))
    assert match, f"unreadable window {value!r}"
    return int(match.group(1)) * {"s": 1000, "m": 60_000, "h": 3_600_000}[match.group(2)]


def load_windows() -> tuple[dict[str, int], int]:
    """``({type: window ms}, default window ms)`` from the aggregator's rules file."""
    data = yaml.safe_load(RULES.read_text())
    default = window_ms(data["default"]["window"])
    rules = {
        name: window_ms(rule.get("window", data["default"]["window"]))
        for name, rule in data["rules"].items()
    }
    return rules, default


def _login(node: Any) -> str | None:
    return node.get("login") if isinstance(node, dict) else None


def classify(raw: dict[str, Any]) -> tuple[str, str, list[str | None]] | None:
    """``(type, object ref, candidate recipients)`` of a GitHub event, or None."""
    kind, payload = raw["type"], raw.get("payload") or {}
    action = payload.get("action")
    repo = raw["repo"]["name"]
    owner = repo.split("/")[0]
    if kind == "WatchEvent":
        return "repo.starred", f"repo:{repo}", [owner]
    if kind == "ForkEvent":
        return "repo.forked", f"repo:{repo}", [owner]
    if kind == "MemberEvent" and action == "added":
        return "repo.member_added", f"repo:{repo}", [_login(payload.get("member"))]
    if kind == "IssuesEvent" and action in ("opened", "closed", "reopened"):
        issue = payload["issue"]
        return (
            f"issue.{action}",
            f"issue:{repo}#{issue['number']}",
            [owner, _login(issue.get("user"))],
        )
    if kind == "IssueCommentEvent" and action == "created":
        issue = payload["issue"]
        obj = "pull_request" if issue.get("pull_request") else "issue"
        return (
            "issue.commented",
            f"{obj}:{repo}#{issue['number']}",
            [owner, _login(issue.get("user"))],
        )
    if kind == "PullRequestEvent" and action in ("opened", "closed", "reopened"):
        pr = payload["pull_request"]
        name = "merged" if action == "closed" and pr.get("merged") else action
        return (
            f"pull_request.{name}",
            f"pull_request:{repo}#{pr['number']}",
            [owner, _login(pr.get("user"))],
        )
    if kind == "PullRequestReviewCommentEvent" and action == "created":
        pr = payload["pull_request"]
        return (
            "pull_request.review_commented",
            f"pull_request:{repo}#{pr['number']}",
            [owner, _login(pr.get("user"))],
        )
    if kind == "PullRequestReviewEvent":
        pr = payload["pull_request"]
        return (
            "pull_request.reviewed",
            f"pull_request:{repo}#{pr['number']}",
            [owner, _login(pr.get("user"))],
        )
    if kind == "CommitCommentEvent":
        sha = str((payload.get("comment") or {}).get("commit_id") or "")[:12] or "unknown"
        return "commit.commented", f"commit:{repo}@{sha}", [owner]
    if kind == "ReleaseEvent" and action == "published":
        release = payload.get("release") or {}
        tag = release.get("tag_name") or release.get("id") or "release"
        return "release.published", f"release:{repo}@{tag}", [owner]
    return None


def expected_groups(path: Path) -> list[Group]:
    """Every notification ``path`` must produce, in creation order."""
    windows, default = load_windows()
    open_groups: dict[tuple[str, str, str], Group] = {}
    groups: list[Group] = []
    with gzip.open(path, "rt", encoding="utf-8") as handle:
        for line in handle:
            raw = json.loads(line)
            found = classify(raw)
            if found is None:
                continue
            kind, obj, candidates = found
            actor = raw["actor"]["login"]
            when = int(
                datetime.fromisoformat(raw["created_at"].replace("Z", "+00:00")).timestamp() * 1000
            )
            window = windows.get(kind, default)
            recipients = []
            for r in candidates:
                if r and r != actor and r not in recipients:
                    recipients.append(r)
            for recipient in recipients:
                key = (recipient, kind, obj)
                group = open_groups.get(key)
                if group is None or not (window > 0 and when < group.first_ms + window):
                    group = Group(recipient, kind, obj, when)
                    open_groups[key] = group
                    groups.append(group)
                group.events += 1
                group.actors.add(actor)
    return groups
