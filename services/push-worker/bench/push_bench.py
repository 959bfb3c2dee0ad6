"""Benchmark of push-worker settling requests for users without a subscription.

Not a test: it measures. Most recipients of a push request never enabled Web Push;
for them push-worker only reports ``skipped`` / ``no_subscription``. Each round:

1. starts ``clarion-push-worker`` as a process on topics and Redis keys of its own
   and waits until it is ready;
2. produces ``--requests`` ``clarion.push-requests.v1`` records (realistic
   :class:`~clarion_contracts.v1.PushRequest` values, ``--users`` distinct
   recipients, none subscribed) as fast as the broker takes them;
3. reads ``clarion.delivery-status.v1`` until every request has its status.

Reported: requests settled per second (first record produced to last status read)
and the worker's CPU microseconds per request (``/proc/<pid>/stat`` user + system
over the same interval). Left out: delivery to push services (nobody is
subscribed), the schedule poller (nothing is deferred).

Usage::

    .venv/bin/python services/push-worker/bench/push_bench.py --requests 50000 --rounds 3
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from clarion_contracts.registry import DELIVERY_STATUS, PUSH_REQUESTS
from clarion_contracts.v1 import PushRequest, utc_now
from clarion_devstack.ports import find_free_port
from clarion_devstack.testing import console_script
from clarion_kit.kafka import OutgoingRecord, send_batches

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of a process so far (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def requests_for(count: int, users: int) -> list[PushRequest]:
    """``count`` push requests spread over ``users`` recipients."""
    now = utc_now()
    return [
        PushRequest.model_validate(
            {
                "request_id": f"n{n}:1:push",
                "notification_id": f"n{n}",
                "version": 1,
                "recipient_id": f"user-{n % users}",
                "type": "issue.commented",
                "category": "activity",
                "title": f"alice and 3 others commented on issue #{n}",
                "body": "Looks good to me, merging once CI is green.",
                "url": f"https://github.com/octo/cat/issues/{n}",
                "urgency": "normal",
                "ttl_seconds": 86400,
                "created_at": now,
            }
        )
        for n in range(count)
    ]


async def _wait_ready(port: int, process: asyncio.subprocess.Process) -> None:
    import httpx

    async with httpx.AsyncClient(timeout=2.0) as http:
        for _ in range(600):
            if process.returncode is not None:
                raise RuntimeError(f"push-worker exited with {process.returncode}")
            try:
                if (await http.get(f"http://127.0.0.1:{port}/readyz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.1)
    raise RuntimeError("push-worker did not become ready")


async def one_round(kafka: str, redis: str, count: int, users: int) -> tuple[float, float]:
    """(requests/s, CPU µs per request) of one round on fresh topics."""
    prefix = f"pb{uuid.uuid4().hex[:8]}."
    http_port = find_free_port("127.0.0.1")
    env = {
        **os.environ,
        "CLARION_KAFKA_BOOTSTRAP_SERVERS": kafka,
        "CLARION_REDIS_URL": redis,
        "CLARION_TOPIC_PREFIX": prefix,
        "CLARION_REDIS_PREFIX": prefix,
        "CLARION_ENVIRONMENT": "test",
        "CLARION_LOG_LEVEL": "WARNING",
        "CLARION_KAFKA_PARTITIONS_OVERRIDE": "1",
        "CLARION_PUSH_HTTP_PORT": str(http_port),
    }
    process = await asyncio.create_subprocess_exec(
        console_script("clarion-push-worker"), env=env, stdout=sys.stderr, stderr=sys.stderr
    )
    requests = requests_for(count, users)
    records = [
        OutgoingRecord(prefix + PUSH_REQUESTS.name, r.recipient_id.encode(), r.to_bytes())
        for r in requests
    ]
    producer = AIOKafkaProducer(bootstrap_servers=kafka, acks="all", linger_ms=5)
    tap = AIOKafkaConsumer(
        prefix + DELIVERY_STATUS.name,
        bootstrap_servers=kafka,
        auto_offset_reset="earliest",
        fetch_max_wait_ms=20,
        max_partition_fetch_bytes=8 * 1024 * 1024,
    )
    try:
        await _wait_ready(http_port, process)
        await producer.start()
        await tap.start()
        cpu_before = cpu_seconds(process.pid)
        started = time.perf_counter()
        await asyncio.gather(*await send_batches(producer, records))
        seen: set[str] = set()
        while len(seen) < count:
            batches = await tap.getmany(timeout_ms=1000, max_records=10_000)
            for part in batches.values():
                for record in part:
                    seen.add(json.loads(record.value)["request_id"])
            if time.perf_counter() - started > 600:
                raise RuntimeError(f"only {len(seen)} of {count} statuses after 600 s")
        elapsed = time.perf_counter() - started
        cpu = cpu_seconds(process.pid) - cpu_before
    finally:
        await tap.stop()
        await producer.stop()
        if process.returncode is None:
            process.terminate()
            await process.wait()
    return count / elapsed, cpu / count * 1e6


async def run_async(args: argparse.Namespace, kafka: str, redis: str) -> dict[str, Any]:
    """Every round; returns the figures."""
    rates, cpus = [], []
    for r in range(args.rounds):
        rate, cpu = await one_round(kafka, redis, args.requests, args.users)
        rates.append(rate)
        cpus.append(cpu)
        print(f"round {r + 1}: {rate:,.0f} requests/s, {cpu:,.1f} µs CPU/request", flush=True)
    return {
        "skipped_requests_per_second_median": round(statistics.median(rates)),
        "skipped_requests_per_second_rounds": [round(x) for x in rates],
        "cpu_us_per_skipped_request_median": round(statistics.median(cpus), 1),
        "cpu_us_per_skipped_request_rounds": [round(x, 1) for x in cpus],
        "requests": args.requests,
    }


def run(args: argparse.Namespace) -> dict[str, Any]:
    """Start the stack (unless servers are given), run the rounds, stop the stack."""
    kafka = os.environ.get("CLARION_KAFKA_BOOTSTRAP_SERVERS")
    redis = os.environ.get("CLARION_REDIS_URL")
    if kafka and redis:
        return asyncio.run(run_async(args, kafka, redis))
    from clarion_devstack.stack import Stack, StackConfig

    data_dir = Path(tempfile.mkdtemp(prefix="clarion-push-bench-"))
    stack = Stack(StackConfig(data_dir=data_dir, environ={}))
    try:
        info = stack.start()
        return asyncio.run(run_async(args, info.kafka_bootstrap_servers, info.redis_url))
    finally:
        stack.stop()
        shutil.rmtree(data_dir, ignore_errors=True)


def main() -> None:
    """Entry point: print (and optionally save) the figures."""
    p = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    p.add_argument("--requests", type=int, default=50_000, help="push requests per round")
    p.add_argument("--users", type=int, default=5_000, help="distinct recipients")
    p.add_argument("--rounds", type=int, default=3, help="rounds (median)")
    p.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = p.parse_args()
    figures = run(args)
    print(json.dumps(figures, indent=2))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")


if __name__ == "__main__":
    main()
