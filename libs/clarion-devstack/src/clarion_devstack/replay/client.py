"""Send domain events to ingest-api like a real producer.

Events go through ``POST /v1/events:batch`` in batches, with a bounded number of
batches in flight; ``429`` and ``503`` answers are retried after their
``Retry-After`` (tenacity), and so are other ``5xx`` answers and lost connections
(the same ``event_id`` makes a retried event harmless; each 5xx is counted in
:attr:`ReplayStats.server_errors`). Other errors stop the replay with the RFC 9457
problem the API returned. User profiles are created first, in batches with
``PUT /v1/users:batch``, so email and timezones resolve.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass, field

import httpx
from tenacity import (
    AsyncRetrying,
    retry_if_exception_type,
    stop_after_attempt,
    wait_exponential_jitter,
)

from clarion_contracts.v1 import DomainEvent
from clarion_devstack.replay.pacing import ReplayPacer


class RetryableAnswer(Exception):
    """ingest-api answered 429 or 5xx; ``retry_after`` is in seconds."""

    def __init__(self, status: int, retry_after: float) -> None:
        super().__init__(f"HTTP {status}, retry after {retry_after}s")
        self.retry_after = retry_after


class ReplayError(RuntimeError):
    """ingest-api refused a request for good (4xx other than 429): carries the problem text."""


@dataclass
class ReplayStats:
    """Running totals of a replay: events accepted, batches sent, retries, start time.

    ``server_errors`` counts answers with a 5xx status other than 503 (each retried),
    ``unavailable`` the 503 answers (the API's "retry later").
    """

    accepted: int = 0
    batches: int = 0
    retries: int = 0
    server_errors: int = 0
    unavailable: int = 0
    started: float = field(default_factory=time.monotonic)
    accepted_at: dict[str, float] = field(default_factory=dict)

    def restart_clock(self) -> None:
        """Measure :attr:`rate` from now (after set-up such as profile creation)."""
        self.started = time.monotonic()

    @property
    def rate(self) -> float:
        """Accepted events per second since the start (or :meth:`restart_clock`)."""
        elapsed = time.monotonic() - self.started
        return self.accepted / elapsed if elapsed > 0 else 0.0


def profile_body(user_id: str) -> dict[str, object]:
    """The profile a replay gives a user it has only a login for."""
    return {
        "name": user_id,
        "email": f"{user_id.lower()}@users.clarion.example",
        "locale": "en",
        "timezone": "UTC",
    }


class ReplayClient:
    """An ingest-api producer client.

    Args:
        base_url: ingest-api root, e.g. ``http://127.0.0.1:8000``.
        api_key: a producer API key (``Authorization: Bearer``).
        concurrency: requests in flight at once.
        attempts: tries per request before giving up on 429/503/connection errors.
    """

    def __init__(
        self, base_url: str, api_key: str, *, concurrency: int = 16, attempts: int = 8
    ) -> None:
        self._http = httpx.AsyncClient(
            base_url=base_url,
            headers={"Authorization": f"Bearer {api_key}"},
            timeout=httpx.Timeout(30.0),
        )
        self._slots = asyncio.Semaphore(concurrency)
        self._attempts = attempts
        self.stats = ReplayStats()

    async def __aenter__(self) -> ReplayClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._http.aclose()

    async def _request(self, method: str, url: str, json: object) -> httpx.Response:
        async for attempt in AsyncRetrying(
            stop=stop_after_attempt(self._attempts),
            wait=wait_exponential_jitter(multiplier=0.2, max=10),
            retry=retry_if_exception_type((RetryableAnswer, httpx.TransportError)),
            reraise=True,
        ):
            with attempt:
                if attempt.retry_state.attempt_number > 1:
                    self.stats.retries += 1
                async with self._slots:
                    response = await self._http.request(method, url, json=json)
                status = response.status_code
                if status == 503:
                    self.stats.unavailable += 1
                elif status >= 500:
                    self.stats.server_errors += 1
                if status == 429 or status >= 500:
                    retry_after = float(response.headers.get("Retry-After", "1") or 1)
                    await asyncio.sleep(min(retry_after, 30.0))
                    raise RetryableAnswer(status, retry_after)
                if response.status_code >= 400:
                    raise ReplayError(f"{method} {url}: {response.status_code} {response.text}")
                return response
        raise AssertionError("unreachable: tenacity reraises")

    async def ensure_profiles(self, user_ids: Iterable[str], batch_size: int = 500) -> int:
        """Create or update a profile for each user id; return how many were written.

        The profiles go ``batch_size`` at a time through ``PUT /v1/users:batch`` (each
        batch one transaction on ingest-api's side), several batches in flight.
        """
        ids = sorted(set(user_ids))
        batches = [ids[i : i + batch_size] for i in range(0, len(ids), batch_size)]
        await asyncio.gather(
            *(
                self._request(
                    "PUT",
                    "/v1/users:batch",
                    {"profiles": [{"user_id": uid, **profile_body(uid)} for uid in batch]},
                )
                for batch in batches
            )
        )
        return len(ids)

    async def send_batch(self, events: Sequence[DomainEvent]) -> list[str]:
        """POST one batch; return the accepted event ids (202: stored in ingest-api's outbox)."""
        body = {"events": [e.model_dump(mode="json", exclude_none=True) for e in events]}
        response = await self._request("POST", "/v1/events:batch", body)
        accepted = [str(x) for x in response.json().get("accepted", [])]
        now = time.monotonic()
        for event_id in accepted:
            self.stats.accepted_at[event_id] = now
        self.stats.accepted += len(accepted)
        self.stats.batches += 1
        return accepted


async def replay(
    events: Sequence[DomainEvent],
    client: ReplayClient,
    *,
    batch_size: int = 200,
    speed: float = 0.0,
    in_flight: int = 1,
    on_progress: Callable[[int], Awaitable[None] | None] | None = None,
    pacer: ReplayPacer | None = None,
) -> ReplayStats:
    """Send ``events`` in order, in batches, at ``speed`` x real time (0: as fast as accepted).

    With ``speed > 0`` an event is not sent before ``(occurred_at - first) / speed``
    seconds after the start, so gaps between events are kept, scaled. With
    ``speed == 0`` and a ``pacer``, each batch waits for the pacer's schedule: the
    rate the pipeline sustains, as the caller measures and feeds it
    (:meth:`ReplayPacer.observe`).
    ``in_flight`` batches are sent at once; the default of 1 keeps arrival order
    equal to file order, which event-time aggregation windows depend on.
    """
    if not events:
        return client.stats
    first = events[0].occurred_at
    start = time.monotonic()
    pending: list[asyncio.Task[list[str]]] = []
    for offset in range(0, len(events), batch_size):
        batch = events[offset : offset + batch_size]
        if speed > 0:
            due = (batch[0].occurred_at - first).total_seconds() / speed
            delay = due - (time.monotonic() - start)
            if delay > 0:
                await asyncio.sleep(delay)
        elif pacer is not None:
            delay = pacer.schedule(len(batch), time.monotonic())
            if delay > 0:
                await asyncio.sleep(delay)
        pending.append(asyncio.create_task(client.send_batch(batch)))
        while len(pending) >= in_flight:
            done = pending.pop(0)
            await done
            if on_progress is not None:
                maybe = on_progress(client.stats.accepted)
                if maybe is not None:
                    await maybe
    for task in pending:
        await task
        if on_progress is not None:
            maybe = on_progress(client.stats.accepted)
            if maybe is not None:
                await maybe
    return client.stats
