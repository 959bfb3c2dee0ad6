"""Load generation for benchmarks: real event shapes at a fixed rate, latency to the client.

Events are built from the shapes of the real GH Archive hour (types, objects,
actors, titles) but addressed to a set of users that hold live WebSocket
sessions, each with a fresh event id and a unique object so every event makes
one new notification. Latency of an event is the time its frame reached the
client minus the ``ingested_at`` ingest-api stamped on it when it accepted the
event (same machine, same clock).
"""

from __future__ import annotations

import asyncio
import itertools
import random
import time
import uuid
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from clarion_contracts.v1 import DomainEvent
from clarion_devstack.observer import LatencyObserver, percentile
from clarion_devstack.replay.client import ReplayClient


@dataclass
class RateResult:
    """What one fixed-rate run measured.

    Attributes:
        offered_rate: events per second asked for.
        achieved_rate: events per second ingest-api accepted.
        sent: events accepted.
        received: notification frames received for them.
        lost: events whose frame never arrived.
        duplicated: frames received more than once for the same notification version.
        p50_ms / p95_ms / p99_ms: accepted -> frame latency percentiles in milliseconds.
    """

    offered_rate: float
    achieved_rate: float
    sent: int
    received: int
    lost: int
    duplicated: int
    p50_ms: float | None
    p95_ms: float | None
    p99_ms: float | None
    extra: dict[str, float] = field(default_factory=dict)


def shaped_events(
    templates: Sequence[DomainEvent], users: Sequence[str], count: int, seed: int = 7
) -> list[DomainEvent]:
    """``count`` new events shaped like ``templates``, each to one of ``users``.

    Every event gets a new id, ``occurred_at`` now, and an object id of its own so
    it creates a notification instead of joining an aggregation group.
    """
    rng = random.Random(seed)
    now = datetime.now(UTC)
    out: list[DomainEvent] = []
    for n, user in zip(range(count), itertools.cycle(users), strict=False):
        template = templates[rng.randrange(len(templates))]
        obj = template.object.model_copy(update={"id": f"{template.object.id}~{uuid.uuid4().hex}"})
        actor = template.actor
        if actor.id == user:
            actor = actor.model_copy(update={"id": f"{actor.id}-bench", "name": actor.name})
        out.append(
            template.model_copy(
                update={
                    "event_id": uuid.uuid4(),
                    "occurred_at": now,
                    "recipients": [user],
                    "object": obj,
                    "actor": actor,
                    "data": {"bench_seq": n},
                }
            )
        )
    return out


async def run_at_rate(
    client: ReplayClient,
    observer: LatencyObserver,
    events: Sequence[DomainEvent],
    rate: float,
    *,
    batch_interval: float = 0.02,
    settle: float = 3.0,
) -> RateResult:
    """Send ``events`` at ``rate`` events/s in small batches and collect their frames.

    Batches leave every ``batch_interval`` seconds whatever the previous answer
    time (open-loop load, so a slow system shows as latency, not as a lower rate),
    with up to 16 requests in flight.
    """
    per_batch = max(1, round(rate * batch_interval))
    observer.latencies_ms.clear()
    before = {u: len(v) for u, v in observer.seen.items()}
    start = time.monotonic()
    inflight: set[asyncio.Task[list[str]]] = set()
    for index, offset in enumerate(range(0, len(events), per_batch)):
        due = start + index * batch_interval
        delay = due - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay)
        while len(inflight) >= 16:
            _, inflight = await asyncio.wait(inflight, return_when=asyncio.FIRST_COMPLETED)
        inflight.add(asyncio.create_task(client.send_batch(events[offset : offset + per_batch])))
    if inflight:
        await asyncio.wait(inflight)
    elapsed = time.monotonic() - start
    deadline = time.monotonic() + settle + 30.0
    while time.monotonic() < deadline:
        if _received(observer, before) >= len(events):
            break
        await asyncio.sleep(0.1)
    await asyncio.sleep(min(settle, 1.0))
    received_frames = [f for u, v in observer.seen.items() for f in v[before.get(u, 0) :]]
    versions = Counter((f.notification_id, f.version) for f in received_frames)
    duplicated = sum(n - 1 for n in versions.values() if n > 1)
    received = len(versions)
    lat = list(observer.latencies_ms)
    return RateResult(
        offered_rate=rate,
        achieved_rate=len(events) / elapsed if elapsed > 0 else 0.0,
        sent=len(events),
        received=received,
        lost=max(0, len(events) - received),
        duplicated=duplicated,
        p50_ms=percentile(lat, 0.5),
        p95_ms=percentile(lat, 0.95),
        p99_ms=percentile(lat, 0.99),
    )


def _received(observer: LatencyObserver, before: dict[str, int]) -> int:
    return sum(len(v) - before.get(u, 0) for u, v in observer.seen.items())
