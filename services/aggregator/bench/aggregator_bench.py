"""Benchmark of the aggregator on the embedded stack: throughput and fan-out time.

Not a test: it measures. It starts the embedded stack (Tansu, Redis) in a
temporary directory unless ``CLARION_KAFKA_BOOTSTRAP_SERVERS`` and
``CLARION_REDIS_URL`` name running servers, then runs two phases, each
``--rounds`` times on fresh topic and key prefixes (medians reported):

* **throughput**: ``--events`` ``post.liked`` domain events (one recipient each,
  ``--recipients`` recipients x 20 posts, 500 actors, event times spread so
  aggregation both creates and updates notifications) are produced to
  ``clarion.domain-events.v1`` first; then ONE aggregator instance (the real
  FastStream app, in this process) consumes them. The figure is events / second
  from the start of the first consumed batch to the end of the last one (each
  batch's notifications and push requests acknowledged by the broker).
* **fan-out**: ``--users`` user profiles are stored, then one
  ``clarion.announcement`` with ``audience: {"all": true}`` goes through the
  pipeline; the figure is the seconds until every recipient's notification (and
  push request) was acknowledged by the broker.

Usage::

    .venv/bin/python services/aggregator/bench/aggregator_bench.py
    .venv/bin/python services/aggregator/bench/aggregator_bench.py --events 20000 --rounds 1

:func:`run` returns the figures as a dict, for ``clarion bench``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gc
import json
import os
import random
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaProducer

from clarion_aggregator.app import build_service
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.registry import DOMAIN_EVENTS
from clarion_contracts.v1 import DomainEvent, UserProfile
from clarion_kit.process import freeze_startup_heap

T0 = datetime(2026, 3, 2, 12, 0, tzinfo=UTC)


def settings_for(kafka: str, redis: str, **extra: Any) -> AggregatorSettings:
    """Settings of one benchmark round (fresh prefixes)."""
    name = f"bench{uuid.uuid4().hex[:8]}"
    return AggregatorSettings(
        kafka_bootstrap_servers=kafka,
        redis_url=redis,
        topic_prefix=name + ".",
        redis_prefix=name + ":",
        kafka_partitions_override=3,
        http_port=0,
        environment="test",
        log_level="WARNING",
        **extra,
    )


def like_events(count: int, recipients: int, seed: int) -> list[bytes]:
    """``count`` serialised ``post.liked`` events over ``recipients`` x 20 posts."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        rid = f"user{rng.randrange(recipients)}"
        actor = f"actor{rng.randrange(500)}"
        event = DomainEvent.model_validate(
            {
                "event_id": str(uuid.UUID(int=rng.getrandbits(128))),
                "type": "post.liked",
                "occurred_at": (T0 + timedelta(milliseconds=i * 50)).isoformat(),
                "actor": {"id": actor, "name": actor.title()},
                "recipients": [rid],
                "object": {"type": "post", "id": f"{rid}-{rng.randrange(20)}", "title": "A post"},
            }
        )
        out.append(event.to_bytes())
    return out


async def produce(kafka: str, topic: str, values: list[bytes]) -> None:
    """Produce every value (keyed by position) and wait for the acknowledgements."""
    # Batched like a busy producer (ingest-api under load): 20 ms linger, 512 KiB batches.
    producer = AIOKafkaProducer(
        bootstrap_servers=kafka,
        acks="all",
        enable_idempotence=False,
        linger_ms=20,
        max_batch_size=512 * 1024,
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, v, key=str(i).encode()) for i, v in enumerate(values)]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


@contextlib.contextmanager
def _frozen_startup_heap() -> Iterator[None]:
    """The heap frozen as ``clarion-aggregator`` freezes it once started, for one round
    (unfrozen after it, so one round's objects do not stay frozen in the next)."""
    freeze_startup_heap()
    try:
        yield
    finally:
        gc.unfreeze()


async def throughput_round(
    kafka: str, redis: str, events: int, recipients: int, seed: int
) -> tuple[float, float]:
    """Events / second one aggregator instance sustains (see the module docstring), and
    the CPU time of this process per event in µs over the same span (less sensitive
    to other load on the machine than the wall-clock rate)."""
    settings = settings_for(kafka, redis)
    service = build_service(settings, serve_http=False, start_flusher=False)
    from clarion_aggregator.adapters.kafka import ensure_topics

    await ensure_topics(settings)
    await produce(kafka, settings.topic(DOMAIN_EVENTS), like_events(events, recipients, seed))
    pipeline = service.pipeline
    original = pipeline.process
    done = 0
    first_start: float | None = None
    last_end = 0.0
    cpu_start = cpu_end = 0.0
    finished = asyncio.Event()

    async def timed(batch: Any, *args: Any, **kwargs: Any) -> Any:
        nonlocal done, first_start, last_end, cpu_start, cpu_end
        started = time.perf_counter()
        if first_start is None:
            first_start = started
            cpu_start = time.process_time()
        result = await original(batch, *args, **kwargs)
        last_end = time.perf_counter()
        cpu_end = time.process_time()
        done += len(batch)
        if done >= events:
            finished.set()
        return result

    pipeline.process = timed  # type: ignore[method-assign]
    with _frozen_startup_heap():
        async with service.app:
            await asyncio.wait_for(finished.wait(), timeout=max(120.0, events / 200))
    await service.redis.aclose()
    assert first_start is not None
    return events / (last_end - first_start), (cpu_end - cpu_start) / events * 1e6


async def fanout_round(kafka: str, redis: str, users: int) -> float:
    """Seconds to fan one announcement out to ``users`` known users."""
    settings = settings_for(kafka, redis)
    service = build_service(settings, serve_http=False, start_flusher=False)
    with _frozen_startup_heap():
        async with service.app:
            profiles = [
                UserProfile(user_id=f"member{i}", name=f"Member {i}", updated_at=T0)
                for i in range(users)
            ]
            for i in range(0, users, 5000):
                await service.store.put_profiles(profiles[i : i + 5000])
            announcement = DomainEvent.model_validate(
                {
                    "event_id": str(uuid.uuid4()),
                    "type": "clarion.announcement",
                    "occurred_at": T0.isoformat(),
                    "actor": {"id": "admin", "name": "Clarion"},
                    "audience": {"all": True},
                    "object": {"type": "announcement", "id": "a1", "title": "Maintenance tonight"},
                    "data": {"body": "From 22:00 UTC"},
                }
            )
            started = time.perf_counter()
            result = await service.pipeline.process([announcement])
            elapsed = time.perf_counter() - started
    if result.notifications != users:
        raise RuntimeError(f"fan-out made {result.notifications} notifications, not {users}")
    return elapsed


async def run_async(args: argparse.Namespace, kafka: str, redis: str) -> dict[str, Any]:
    """Run both phases; returns the figures."""
    rates = []
    cpus = []
    for r in range(args.rounds):
        rate, cpu = await throughput_round(kafka, redis, args.events, args.recipients, seed=r)
        rates.append(rate)
        cpus.append(cpu)
        print(
            f"throughput round {r + 1}: {rate:,.0f} events/s, {cpu:,.0f} µs CPU/event",
            flush=True,
        )
    fanouts = []
    for r in range(args.rounds if args.users > 0 else 0):
        seconds = await fanout_round(kafka, redis, args.users)
        fanouts.append(seconds)
        print(f"fan-out round {r + 1}: {args.users:,} recipients in {seconds:.2f} s", flush=True)
    return {
        "aggregator_events_per_second_median": round(statistics.median(rates)),
        "aggregator_events_per_second_rounds": [round(x) for x in rates],
        "aggregator_cpu_us_per_event_median": round(statistics.median(cpus), 1),
        "aggregator_cpu_us_per_event_rounds": [round(x, 1) for x in cpus],
        "aggregator_events": args.events,
        "fanout_recipients": args.users,
        "fanout_seconds_median": round(statistics.median(fanouts), 2) if fanouts else None,
        "fanout_seconds_rounds": [round(x, 2) for x in fanouts],
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack (unless servers are given), run the benchmark, stop the stack."""
    kafka = os.environ.get("CLARION_KAFKA_BOOTSTRAP_SERVERS")
    redis = os.environ.get("CLARION_REDIS_URL")
    if kafka and redis:
        return asyncio.run(run_async(args, kafka, redis))
    from clarion_devstack.stack import Stack, StackConfig

    data_dir = Path(tempfile.mkdtemp(prefix="clarion-aggregator-bench-"))
    stack = Stack(StackConfig(data_dir=data_dir))
    try:
        info = stack.start()
        return asyncio.run(run_async(args, info.kafka_bootstrap_servers, info.redis_url))
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def parser() -> argparse.ArgumentParser:
    """Command-line options."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--events", type=int, default=50_000, help="domain events per round")
    p.add_argument("--recipients", type=int, default=2_000, help="distinct recipients")
    p.add_argument("--users", type=int, default=100_000, help="fan-out audience size (0: skip)")
    p.add_argument("--rounds", type=int, default=3, help="rounds per phase (median)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    return p


def main() -> None:
    """Entry point: print (and optionally save) the figures."""
    args = parser().parse_args()
    figures = run(args)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
