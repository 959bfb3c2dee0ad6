"""ReplayClient: which answers it retries, which stop it, and what it counts."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import httpx
import pytest

from clarion_contracts.v1 import DomainEvent
from clarion_devstack.replay.client import ReplayClient, ReplayError, replay
from clarion_devstack.replay.pacing import ReplayPacer


def _event() -> DomainEvent:
    return DomainEvent.model_validate(
        {
            "event_id": "00000000-0000-4000-8000-000000000001",
            "type": "repo.starred",
            "occurred_at": datetime(2015, 1, 1, 15, tzinfo=UTC).isoformat(),
            "actor": {"id": "alice", "name": "alice"},
            "object": {"type": "repo", "id": "octo/cat"},
            "recipients": ["octo"],
        }
    )


def _client(answers: list[int], seen: list[int]) -> ReplayClient:
    def handle(request: httpx.Request) -> httpx.Response:
        status = answers.pop(0)
        seen.append(status)
        if status == 202:
            return httpx.Response(202, json={"accepted": [str(_event().event_id)]})
        return httpx.Response(status, headers={"Retry-After": "0"}, json={"title": "x"})

    client = ReplayClient("http://ingest", "key", attempts=5)
    client._http = httpx.AsyncClient(
        base_url="http://ingest", transport=httpx.MockTransport(handle)
    )
    return client


async def test_server_errors_and_unavailable_answers_are_retried_and_counted() -> None:
    seen: list[int] = []
    async with _client([500, 503, 502, 202], seen) as client:
        accepted = await client.send_batch([_event()])
    assert accepted == [str(_event().event_id)]
    assert seen == [500, 503, 502, 202]
    assert client.stats.server_errors == 2
    assert client.stats.unavailable == 1
    assert client.stats.retries == 3
    assert client.stats.accepted == 1


async def test_a_client_error_stops_the_replay_with_the_problem() -> None:
    seen: list[int] = []
    async with _client([422, 202], seen) as client:
        with pytest.raises(ReplayError, match="422"):
            await client.send_batch([_event()])
    assert seen == [422]


async def test_profiles_go_in_batches_of_distinct_users() -> None:
    batches: list[list[str]] = []

    def handle(request: httpx.Request) -> httpx.Response:
        assert (request.method, request.url.path) == ("PUT", "/v1/users:batch")
        ids = [p["user_id"] for p in json.loads(request.content)["profiles"]]
        batches.append(ids)
        return httpx.Response(200, json={"stored": ids})

    client = ReplayClient("http://ingest", "key")
    client._http = httpx.AsyncClient(
        base_url="http://ingest", transport=httpx.MockTransport(handle)
    )
    users = [f"u{i:04d}" for i in range(1201)]
    async with client:
        written = await client.ensure_profiles(users + users[:10], batch_size=500)
    assert written == 1201
    assert sorted(len(b) for b in batches) == [201, 500, 500]
    assert sorted(u for b in batches for u in b) == users


class _RecordingPacer(ReplayPacer):
    def __init__(self) -> None:
        super().__init__()
        self.asked: list[int] = []

    def schedule(self, events: int, now: float) -> float:
        self.asked.append(events)
        return 0.0


@pytest.mark.parametrize(("speed", "asked"), [(0.0, [2, 2, 1]), (1000.0, [])])
async def test_the_pacer_schedules_every_batch_unless_a_speed_is_given(
    speed: float, asked: list[int]
) -> None:
    seen: list[int] = []
    pacer = _RecordingPacer()
    async with _client([202] * 3, seen) as client:
        await replay([_event()] * 5, client, batch_size=2, speed=speed, pacer=pacer)
    assert seen == [202] * 3
    assert pacer.asked == asked
