"""Map GitHub public timeline events (GH Archive) to Clarion domain events.

Who is notified follows the data's SOURCES.md: the repository owner (the part
of ``repo.name`` before the slash), the issue or pull-request author for issue
and pull-request events, and ``payload.member`` for a Member event. An actor
acting on their own object is not notified. Activity that notifies nobody in
GitHub itself (pushes, branch creation and deletion, wiki edits) is not mapped.

| GitHub event (action)                     | domain event type              | object        |
| ----------------------------------------- | ------------------------------ | ------------- |
| WatchEvent (started)                      | ``repo.starred``               | repo          |
| ForkEvent                                 | ``repo.forked``                | repo          |
| MemberEvent (added)                       | ``repo.member_added``          | repo          |
| IssuesEvent (opened, closed, reopened)    | ``issue.<action>``             | issue         |
| IssueCommentEvent (created)               | ``issue.commented``            | issue or PR   |
| PullRequestEvent (opened, reopened)       | ``pull_request.<action>``      | pull_request  |
| PullRequestEvent (closed)                 | ``pull_request.merged``/closed | pull_request  |
| PullRequestReviewCommentEvent (created)   | ``pull_request.review_commented`` | pull_request |
| PullRequestReviewEvent (created)          | ``pull_request.reviewed``      | pull_request  |
| CommitCommentEvent                        | ``commit.commented``           | commit        |
| ReleaseEvent (published)                  | ``release.published``          | release       |
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import datetime
from typing import Any

from clarion_contracts.base import Actor, EventObject, Priority
from clarion_contracts.v1 import DomainEvent

#: Namespace of the deterministic event ids, so replaying a file twice is idempotent.
GITHUB_NAMESPACE = uuid.UUID("6f1d3a52-5d0e-4b5f-9a51-0c1a7e2b9c11")
_WEB = "https://github.com/"

JsonDict = Mapping[str, Any]


def github_event_id(raw_id: str | int) -> uuid.UUID:
    """The idempotency key of a GitHub event: a UUIDv5 of its GH Archive id."""
    return uuid.uuid5(GITHUB_NAMESPACE, f"github:{raw_id}")


def _login(node: JsonDict | None) -> str | None:
    if not node:
        return None
    login = node.get("login")
    return str(login) if login else None


def _repo_object(repo: str) -> EventObject:
    return EventObject.model_validate(
        {"type": "repo", "id": repo, "title": repo, "url": _WEB + repo}
    )


def _thread_object(kind: str, repo: str, thread: JsonDict) -> EventObject:
    number = thread.get("number")
    return EventObject.model_validate(
        {
            "type": kind,
            "id": f"{repo}#{number}",
            "title": (thread.get("title") or f"{repo}#{number}")[:1000],
            "url": thread.get("html_url") or f"{_WEB}{repo}",
        }
    )


def _map(raw: JsonDict) -> tuple[str, EventObject, list[str | None], Priority] | None:
    """Return (type, object, candidate recipients, priority) or None when not mapped."""
    kind = raw.get("type")
    payload: JsonDict = raw.get("payload") or {}
    action = payload.get("action")
    repo = str(raw["repo"]["name"])
    owner = repo.split("/", 1)[0]
    if kind == "WatchEvent":
        return "repo.starred", _repo_object(repo), [owner], Priority.LOW
    if kind == "ForkEvent":
        return "repo.forked", _repo_object(repo), [owner], Priority.LOW
    if kind == "MemberEvent" and action == "added":
        return (
            "repo.member_added",
            _repo_object(repo),
            [_login(payload.get("member"))],
            (Priority.HIGH),
        )
    if kind == "IssuesEvent" and action in ("opened", "closed", "reopened"):
        issue: JsonDict = payload["issue"]
        obj = _thread_object("issue", repo, issue)
        return f"issue.{action}", obj, [owner, _login(issue.get("user"))], Priority.NORMAL
    if kind == "IssueCommentEvent" and action == "created":
        issue = payload["issue"]
        obj = _thread_object("pull_request" if issue.get("pull_request") else "issue", repo, issue)
        return "issue.commented", obj, [owner, _login(issue.get("user"))], Priority.NORMAL
    if kind == "PullRequestEvent" and action in ("opened", "closed", "reopened"):
        pr: JsonDict = payload["pull_request"]
        name = "merged" if action == "closed" and pr.get("merged") else action
        obj = _thread_object("pull_request", repo, pr)
        return f"pull_request.{name}", obj, [owner, _login(pr.get("user"))], Priority.NORMAL
    if kind == "PullRequestReviewCommentEvent" and action == "created":
        pr = payload["pull_request"]
        obj = _thread_object("pull_request", repo, pr)
        return (
            "pull_request.review_commented",
            obj,
            [owner, _login(pr.get("user"))],
            (Priority.NORMAL),
        )
    if kind == "PullRequestReviewEvent":
        pr = payload["pull_request"]
        obj = _thread_object("pull_request", repo, pr)
        return "pull_request.reviewed", obj, [owner, _login(pr.get("user"))], Priority.NORMAL
    if kind == "CommitCommentEvent":
        comment: JsonDict = payload.get("comment") or {}
        sha = str(comment.get("commit_id") or "")[:12] or "unknown"
        obj = EventObject.model_validate(
            {
                "type": "commit",
                "id": f"{repo}@{sha}",
                "title": f"{repo}@{sha}",
                "url": comment.get("html_url") or _WEB + repo,
            }
        )
        return "commit.commented", obj, [owner], Priority.NORMAL
    if kind == "ReleaseEvent" and action == "published":
        release: JsonDict = payload.get("release") or {}
        tag = str(release.get("tag_name") or release.get("id") or "release")
        obj = EventObject.model_validate(
            {
                "type": "release",
                "id": f"{repo}@{tag}",
                "title": (release.get("name") or tag)[:1000],
                "url": release.get("html_url") or _WEB + repo,
            }
        )
        return "release.published", obj, [owner], Priority.NORMAL
    return None


def to_domain_event(raw: JsonDict) -> DomainEvent | None:
    """Map one GH Archive event (a parsed JSON line) to a domain event.

    Returns ``None`` for event kinds that notify nobody and for events whose only
    candidate recipient is the actor. The event id is derived from the GitHub id
    (:func:`github_event_id`), ``occurred_at`` is the GitHub ``created_at``.

    Raises:
        KeyError, pydantic.ValidationError: the line is not a GH Archive event.
    """
    mapped = _map(raw)
    if mapped is None:
        return None
    event_type, obj, candidates, priority = mapped
    actor_node: JsonDict = raw["actor"]
    actor_login = str(actor_node["login"])
    recipients: list[str] = []
    for login in candidates:
        if login and login != actor_login and login not in recipients:
            recipients.append(login)
    if not recipients:
        return None
    avatar = actor_node.get("avatar_url") or None
    actor = Actor.model_validate({"id": actor_login, "name": actor_login, "avatar_url": avatar})
    return DomainEvent(
        event_id=github_event_id(raw["id"]),
        type=event_type,
        occurred_at=datetime.fromisoformat(str(raw["created_at"]).replace("Z", "+00:00")),
        actor=actor,
        recipients=recipients,
        object=obj,
        priority=priority,
        data={"source": "github", "github_event_id": str(raw["id"]), "repo": raw["repo"]["name"]},
    )
