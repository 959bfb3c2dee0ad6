"""The replay loop shared by ``clarion replay`` and ``clarion run``: profiles first, then
the events in batches, with a progress bar and an optional status column."""

from __future__ import annotations

import io
import json
from datetime import UTC, datetime, timedelta

import httpx
from rich.console import Console

from clarion_contracts.v1 import DomainEvent
from clarion_devstack.commands.replay import replay_with_progress
from clarion_devstack.replay.client import ReplayClient


def _event(n: int, actor: str, recipients: list[str]) -> DomainEvent:
    return DomainEvent.model_validate(
        {
            "event_id": f"00000000-0000-4000-8000-{n:012d}",
            "type": "repo.starred",
            "occurred_at": (
                datetime(2015, 1, 1, 15, tzinfo=UTC) + timedelta(seconds=n)
            ).isoformat(),
            "actor": {"id": actor, "name": actor},
            "object": {"type": "repo", "id": "octo/cat"},
            "recipients": recipients,
        }
    )


async def test_profiles_of_recipients_and_actors_come_before_the_batches() -> None:
    requests: list[tuple[str, str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        requests.append((request.method, request.url.path))
        if request.url.path == "/v1/events:batch":
            ids = [e["event_id"] for e in json.loads(request.content)["events"]]
            return httpx.Response(202, json={"accepted": ids})
        body = json.loads(request.content)
        profiles.extend(p["user_id"] for p in body["profiles"])
        return httpx.Response(200, json={"stored": [p["user_id"] for p in body["profiles"]]})

    profiles: list[str] = []
    events = [
        _event(1, "alice", ["octo"]),
        _event(2, "bob", ["octo", "carol"]),
        _event(3, "eve", ["octo"]),
    ]
    statuses: list[str] = []

    def status() -> str:
        statuses.append(f"call {len(statuses)}")
        return "delivery p50 - p99 -"

    out = io.StringIO()
    console = Console(file=out, width=120, force_terminal=False)
    client = ReplayClient("http://ingest", "key")
    client._http = httpx.AsyncClient(
        base_url="http://ingest", transport=httpx.MockTransport(handle)
    )
    async with client:
        stats = await replay_with_progress(
            events, client, console, speed=0.0, batch_size=2, status=status
        )

    assert stats.accepted == 3
    assert stats.batches == 2
    assert sorted(profiles) == ["alice", "bob", "carol", "eve", "octo"]
    assert requests[0] == ("PUT", "/v1/users:batch")  # profiles first, in one batch
    assert requests.count(("PUT", "/v1/users:batch")) == 1
    assert [r for r in requests if r[1] == "/v1/events:batch"] == [("POST", "/v1/events:batch")] * 2
    assert len(statuses) >= 3  # the first frame, then one per batch
    assert "creating 5 user profiles" in out.getvalue()
    assert "delivery p50 - p99 -" in out.getvalue()


async def test_without_a_status_the_progress_shows_only_the_rate() -> None:
    def handle(request: httpx.Request) -> httpx.Response:
        if request.url.path == "/v1/events:batch":
            ids = [e["event_id"] for e in json.loads(request.content)["events"]]
            return httpx.Response(202, json={"accepted": ids})
        return httpx.Response(200, json={})

    out = io.StringIO()
    client = ReplayClient("http://ingest", "key")
    client._http = httpx.AsyncClient(
        base_url="http://ingest", transport=httpx.MockTransport(handle)
    )
    async with client:
        stats = await replay_with_progress(
            [_event(1, "alice", ["octo"])], client, Console(file=out, width=120), speed=0.0
        )
    assert stats.accepted == 1
    assert "events/s" in out.getvalue()
    assert "delivery" not in out.getvalue()
