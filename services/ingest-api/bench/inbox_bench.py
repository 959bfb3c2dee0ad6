"""Benchmark of ingest-api's inbox read model: consumer throughput and end-to-end latency.

Not a test: it measures. It starts the embedded stack (Tansu, Redis, PostgreSQL) in a
temporary directory, then ``clarion-ingest-api`` and ``clarion-aggregator`` as
processes with the same ``CLARION_*`` environment, and runs four phases, each
``--rounds`` times (medians reported):

* **inbox**: ``--notifications`` ``Notification`` records (1,000 recipients) are
  produced to ``clarion.notifications.v1`` as fast as the broker takes them; the
  figure is records / seconds until every row is in ``ingest.inbox``.
* **delivery**: one ``DeliveryStatus`` per row of the previous phase on
  ``clarion.delivery-status.v1``; statuses / seconds until every row records it.
* **profiles**: ``--profiles`` ``PUT /v1/users/{id}`` from 4 concurrent clients,
  requests/s; like the replay client, a 429 or 503 is retried after its Retry-After.
  Then as many profiles through ``PUT /v1/users:batch`` in batches of
  ``--profile-batch`` from 4 clients (as the replay client creates them), profiles/s.
* **latency**: ``POST /v1/events`` at ``--rate`` events/s for ``--duration`` seconds
  (``issue.opened``, aggregation window 0, one object per event), each round on
  freshly started services and topics of its own (the embedded broker slows down as
  the records it stores pile up; see docs/benchmarks.md); the real aggregator
  turns each into a notification and ingest-api materialises it. A trigger installed in
  the benchmark's throwaway database sends ``pg_notify`` on every inserted inbox row,
  so the latency is POST sent -> row committed (p50/p95/p99). A consumer of the
  notifications topic in this process splits it into POST -> notification produced
  (ingest-api + aggregator) and notification -> row (ingest-api's consumer), and the
  CPU each service process used per event is printed: on a shared machine the
  stages show which process saturates first.

The service settings are the defaults (``--rate-limit-api-key`` overrides the
producer rate limit). ``PYTHONPATH=<other checkout>/src`` runs another version of
``clarion_ingest`` in the service process, for before/after figures.

Usage::

    .venv/bin/python services/ingest-api/bench/inbox_bench.py
    .venv/bin/python services/ingest-api/bench/inbox_bench.py --notifications 2000 --rounds 1
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from clarion_contracts.registry import DELIVERY_STATUS, NOTIFICATIONS
from clarion_contracts.v1 import DeliveryStatus, Notification
from clarion_devstack.stack import Stack, StackConfig
from clarion_kit.auth import dev_api_key
from clarion_kit.settings import ServiceSettings

VENV_BIN = Path(sys.executable).parent
TRIGGER_SQL = """
CREATE OR REPLACE FUNCTION public.clarion_bench_notify() RETURNS trigger AS $$
BEGIN
  PERFORM pg_notify('clarion_bench', NEW.object->>'id');
  RETURN NEW;
END $$ LANGUAGE plpgsql;
DROP TRIGGER IF EXISTS clarion_bench ON ingest.inbox;
CREATE TRIGGER clarion_bench AFTER INSERT ON ingest.inbox
  FOR EACH ROW EXECUTE FUNCTION public.clarion_bench_notify();
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def pct(values: list[float], q: float) -> float:
    """The ``q`` quantile (0..1) of ``values`` by nearest rank."""
    ordered = sorted(values)
    if not ordered:
        return float("nan")
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


class Proc:
    """A service process whose output goes to a log file in the data directory."""

    def __init__(self, name: str, argv: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("wb")
        self.popen = subprocess.Popen(argv, env=env, stdout=self._log, stderr=subprocess.STDOUT)

    def cpu_seconds(self) -> float:
        """User + system CPU seconds the process used so far (Linux ``/proc``)."""
        fields = Path(f"/proc/{self.popen.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def tail(self, lines: int = 20) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])

    def stop(self) -> None:
        if self.popen.poll() is None:
            self.popen.send_signal(signal.SIGTERM)
            try:
                self.popen.wait(20)
            except subprocess.TimeoutExpired:
                self.popen.kill()
                self.popen.wait(5)
        self._log.close()


async def wait_ready(proc: Proc, url: str, timeout: float = 180.0) -> None:
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(timeout=5) as http:
        while time.monotonic() < deadline:
            if proc.popen.poll() is not None:
                raise RuntimeError(f"{proc.name} exited:\n{proc.tail()}")
            with contextlib.suppress(httpx.HTTPError):
                if (await http.get(url)).status_code == 200:
                    return
            await asyncio.sleep(0.25)
    raise RuntimeError(f"{proc.name} not ready after {timeout}s:\n{proc.tail()}")


async def start_service(
    name: str, script: str, port: str, env: dict[str, str], log_dir: Path, procs: list[Proc]
) -> Proc:
    """Start the console script ``script`` as ``name``, add it to ``procs`` (the caller
    stops them) and wait until ``/readyz`` answers on ``CLARION_<port>_HTTP_PORT``."""
    proc = Proc(name, [str(VENV_BIN / script)], env, log_dir)
    procs.append(proc)
    await wait_ready(proc, f"http://127.0.0.1:{env[f'CLARION_{port}_HTTP_PORT']}/readyz")
    return proc


def notification(nid: str, user: str, now: datetime) -> Notification:
    return Notification(
        notification_id=nid,
        version=1,
        recipient_id=user,
        type="issue.opened",
        category="issues",
        group_key=f"{user}|issue.opened|issue:{nid}|0",
        object={"type": "issue", "id": nid, "title": "Crash when the inbox is empty"},
        actors=[{"id": "octocat", "name": "The Octocat"}],
        actor_count=1,
        event_ids=[uuid.uuid4()],
        title="The Octocat opened an issue",
        body="Crash when the inbox is empty",
        body_html="<p>Crash when the inbox is empty</p>",
        channels=["in_app", "push"],
        created_at=now,
        updated_at=now,
        first_occurred_at=now,
        last_occurred_at=now,
    )


async def produce_all(bootstrap: str, topic: str, records: list[tuple[bytes, bytes]]) -> None:
    producer = AIOKafkaProducer(
        bootstrap_servers=bootstrap, acks="all", linger_ms=5, max_batch_size=256 * 1024
    )
    await producer.start()
    try:
        futures = [await producer.send(topic, value, key=key) for key, value in records]
        await asyncio.gather(*futures)
    finally:
        await producer.stop()


async def wait_count(
    db: asyncpg.Connection, sql: str, arg: str, want: int, timeout: float
) -> tuple[int, float]:
    """Poll ``sql`` until it counts ``want``.

    Returns:
        (count, seconds until the last change, seconds until the first row).
    """
    started = time.perf_counter()
    last, last_at, first_at = -1, 0.0, 0.0
    while time.perf_counter() - started < timeout:
        got = int(await db.fetchval(sql, arg))
        if got != last:
            last, last_at = got, time.perf_counter() - started
            if not first_at and got:
                first_at = last_at
        if got >= want:
            break
        await asyncio.sleep(0.02)
    return last, last_at, first_at


async def measure(
    db: asyncpg.Connection,
    bootstrap: str,
    topic: str,
    records: list[tuple[bytes, bytes]],
    sql: str,
    arg: str,
    timeout: float,
) -> tuple[float, float, str]:
    """Produce ``records``, wait until ``sql`` counts them all.

    Returns:
        (records/s from the first send to the last row, records/s once the producer
        finished: rows still missing then / time to the last row, a summary line).
    """
    n = len(records)
    started = time.perf_counter()
    await produce_all(bootstrap, topic, records)
    produced = time.perf_counter() - started
    at_produced = int(await db.fetchval(sql, arg))
    got, at, _ = await wait_count(db, sql, arg, n, timeout)
    elapsed = time.perf_counter() - started
    rate = got / elapsed if got >= n else got / max(at + produced, 1e-9)
    drain = (got - at_produced) / max(elapsed - produced, 1e-9)
    line = (
        f"{got}/{n} rows in {elapsed:.2f}s (produced in {produced:.2f}s, {at_produced} rows"
        f" by then) -> {rate:,.0f}/s end to end, {drain:,.0f}/s after the producer finished"
    )
    return rate, drain, line


async def inbox_round(
    db: asyncpg.Connection, bootstrap: str, prefix: str, run: str, n: int, timeout: float
) -> tuple[float, float]:
    """Returns (notifications/s, delivery statuses/s), end to end."""
    now = datetime.now(UTC)
    notes = [notification(f"{run}-{i}", f"u{i % 1000}", now) for i in range(n)]
    records = [(x.recipient_id.encode(), x.to_bytes()) for x in notes]
    rate, _, line = await measure(
        db,
        bootstrap,
        prefix + NOTIFICATIONS.name,
        records,
        "SELECT count(*) FROM ingest.inbox WHERE notification_id LIKE $1",
        f"{run}-%",
        timeout,
    )
    print(f"  inbox    {run}: {line}", flush=True)
    statuses = [
        DeliveryStatus(
            status_id=f"s-{x.notification_id}",
            notification_id=x.notification_id,
            version=1,
            recipient_id=x.recipient_id,
            channel="push",
            status="delivered",
            occurred_at=now,
        )
        for x in notes
    ]
    records = [(s.notification_id.encode(), s.to_bytes()) for s in statuses]
    drate, _, line = await measure(
        db,
        bootstrap,
        prefix + DELIVERY_STATUS.name,
        records,
        "SELECT count(*) FROM ingest.inbox WHERE notification_id LIKE $1"
        " AND deliveries->>'push' = 'delivered'",
        f"{run}-%",
        timeout,
    )
    print(f"  delivery {run}: {line}", flush=True)
    return rate, drate


async def watch_topic(bootstrap: str, topic: str, arrived: dict[str, float]) -> None:
    """Note when each notification (by object id) appears on ``topic``, until cancelled."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=5)
    await consumer.start()
    try:
        parts = consumer.partitions_for_topic(topic) or set()
        tps = [TopicPartition(topic, p) for p in sorted(parts)]
        consumer.assign(tps)
        await consumer.seek_to_end(*tps)
        while True:
            batch = await consumer.getmany(timeout_ms=20)
            now = time.perf_counter()
            for records in batch.values():
                for record in records:
                    oid = json.loads(record.value)["object"]["id"]
                    arrived.setdefault(oid, now)
    finally:
        await consumer.stop()


def _ms(values: list[float]) -> str:
    return " / ".join(f"{pct(values, q) * 1000:.1f}" for q in (0.5, 0.95, 0.99))


async def latency_round(
    database_url: str,
    base_url: str,
    api_key: str,
    run: str,
    rate: float,
    duration: float,
    bootstrap: str,
    topic: str,
    procs: list[Proc],
) -> list[float]:
    """POST events at ``rate``/s for ``duration`` s; seconds from POST to inbox row.

    Also prints the stages (p50 / p95 / p99, ms): the POST's 202, POST -> notification
    on the topic (ingest-api + aggregator), topic -> inbox row (ingest-api's consumer).
    """
    listener = await asyncpg.connect(database_url)
    seen: dict[str, float] = {}

    def on_notify(_conn: Any, _pid: int, _channel: str, payload: str) -> None:
        seen.setdefault(payload, time.perf_counter())

    await listener.add_listener("clarion_bench", on_notify)
    arrived: dict[str, float] = {}
    watcher = asyncio.create_task(watch_topic(bootstrap, topic, arrived))
    await asyncio.sleep(1.0)
    answered: list[float] = []
    sent: dict[str, float] = {}
    failures = 0
    headers = {"Authorization": f"Bearer {api_key}"}
    # aiohttp: about half httpx's CPU per request, and the client shares the machine.
    connector = aiohttp.TCPConnector(limit=64)
    timeout = aiohttp.ClientTimeout(total=30)
    cpu_before = {p.name: p.cpu_seconds() for p in procs}
    async with aiohttp.ClientSession(base_url, connector=connector, timeout=timeout) as http:

        async def post(i: int) -> None:
            nonlocal failures
            oid = f"{run}-{i}"
            body = {
                "event_id": str(uuid.uuid4()),
                "type": "issue.opened",
                "occurred_at": datetime.now(UTC).isoformat(),
                "actor": {"id": "octocat", "name": "The Octocat"},
                "recipients": [f"lu{i % 500}"],
                "object": {"type": "issue", "id": oid, "title": "Crash on empty inbox"},
            }
            sent[oid] = time.perf_counter()
            try:
                async with http.post("/v1/events", json=body, headers=headers) as response:
                    await response.read()
                    status = response.status
            except (aiohttp.ClientError, TimeoutError):
                failures += 1
                return
            answered.append(time.perf_counter() - sent[oid])
            if status != 202:
                failures += 1

        total = int(rate * duration)
        tasks: list[asyncio.Task[None]] = []
        start = time.perf_counter()
        for i in range(total):
            delay = start + i / rate - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            tasks.append(asyncio.create_task(post(i)))
        await asyncio.gather(*tasks)
        posting = time.perf_counter() - start
        for _ in range(600):  # at most 30 s for the last rows
            if all(k in seen for k in sent):
                break
            await asyncio.sleep(0.05)
    await listener.close()
    watcher.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await watcher
    cpu = {p.name: (p.cpu_seconds() - cpu_before[p.name]) / max(len(sent), 1) * 1000 for p in procs}
    latencies = [seen[k] - t for k, t in sent.items() if k in seen]
    to_topic = [arrived[k] - t for k, t in sent.items() if k in arrived]
    to_row = [seen[k] - arrived[k] for k in sent if k in seen and k in arrived]
    missing = len(sent) - len(latencies)
    print(
        f"  latency  {run}: {len(latencies)}/{len(sent)} rows, {failures} not answered 202, "
        f"{missing} missing; POST -> row p50/p95/p99 {_ms(latencies)} ms\n"
        f"           202 answered {_ms(answered)} ms; POST -> notification on topic "
        f"{_ms(to_topic)} ms; topic -> row {_ms(to_row)} ms\n"
        f"           posted in {posting:.1f}s; CPU ms per event: "
        + ", ".join(f"{name} {ms:.2f}" for name, ms in cpu.items()),
        flush=True,
    )
    return latencies


async def profiles_round(base_url: str, api_key: str, run: str, n: int, clients: int) -> float:
    """``PUT /v1/users/{id}`` ``n`` times from ``clients`` concurrent clients; requests/s.

    Like the replay client, a 429 or 503 is retried after its ``Retry-After``.
    """
    headers = {"Authorization": f"Bearer {api_key}"}
    failures = 0
    throttled = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=30) as http:

        async def client(c: int) -> None:
            nonlocal failures, throttled
            for i in range(c, n, clients):
                body = {
                    "name": f"User {i}",
                    "email": f"user{i}@example.com",
                    "locale": "en",
                    "timezone": "Europe/Paris",
                }
                for _ in range(20):
                    response = await http.put(f"/v1/users/{run}-{i}", json=body, headers=headers)
                    if response.status_code not in (429, 503):
                        break
                    throttled += 1
                    await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 30))
                if response.status_code != 200:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - started
    rate = n / elapsed
    print(
        f"  profiles {run}: {n} PUT in {elapsed:.2f}s, {throttled} answered 429/503 and retried,"
        f" {failures} failed -> {rate:,.0f} req/s",
        flush=True,
    )
    return rate


async def profile_batches_round(
    base_url: str, api_key: str, run: str, n: int, clients: int, batch: int
) -> float:
    """``n`` profiles through ``PUT /v1/users:batch``, ``batch`` per request, from
    ``clients`` concurrent clients; profiles/s (429 and 503 retried after Retry-After)."""
    headers = {"Authorization": f"Bearer {api_key}"}
    failures = 0
    throttled = 0
    bodies = [
        {
            "profiles": [
                {
                    "user_id": f"{run}-{i}",
                    "name": f"User {i}",
                    "email": f"user{i}@example.com",
                    "locale": "en",
                    "timezone": "Europe/Paris",
                }
                for i in range(start, min(start + batch, n))
            ]
        }
        for start in range(0, n, batch)
    ]
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as http:

        async def client(c: int) -> None:
            nonlocal failures, throttled
            for body in bodies[c::clients]:
                for _ in range(20):
                    response = await http.put("/v1/users:batch", json=body, headers=headers)
                    if response.status_code not in (429, 503):
                        break
                    throttled += 1
                    await asyncio.sleep(min(float(response.headers.get("Retry-After", "1")), 30))
                if response.status_code != 200:
                    failures += 1

        started = time.perf_counter()
        await asyncio.gather(*(client(c) for c in range(clients)))
        elapsed = time.perf_counter() - started
    rate = n / elapsed
    print(
        f"  profiles {run}: {n} in {len(bodies)} PUT /v1/users:batch in {elapsed:.2f}s,"
        f" {throttled} answered 429/503 and retried, {failures} failed -> {rate:,.0f} profiles/s",
        flush=True,
    )
    return rate


async def fresh_latency_round(
    args: argparse.Namespace,
    env: dict[str, str],
    log_dir: Path,
    pg_url: str,
    api_key: str,
    run: str,
) -> list[float]:
    """One latency round on freshly started ingest-api and aggregator, on topics of its own.

    The embedded broker keeps every record in memory and lists a partition's stored
    batches on each fetch, so rounds sharing topics would each measure a slower
    broker than the one before; a fresh topic prefix gives every round the same start.
    """
    round_env = {**env, "CLARION_TOPIC_PREFIX": f"{env['CLARION_TOPIC_PREFIX']}{run}."}
    bootstrap = env["CLARION_KAFKA_BOOTSTRAP_SERVERS"]
    base_url = f"http://127.0.0.1:{env['CLARION_INGEST_HTTP_PORT']}"
    procs: list[Proc] = []
    try:
        for name, port in (("ingest-api", "INGEST"), ("aggregator", "AGGREGATOR")):
            await start_service(f"{name}-{run}", f"clarion-{name}", port, round_env, log_dir, procs)
        topic = round_env["CLARION_TOPIC_PREFIX"] + NOTIFICATIONS.name
        await latency_round(
            pg_url, base_url, api_key, f"{run}-warm", 20, 5, bootstrap, topic, procs
        )
        return await latency_round(
            pg_url, base_url, api_key, run, args.rate, args.duration, bootstrap, topic, procs
        )
    finally:
        for proc in reversed(procs):
            proc.stop()


async def run_bench(args: argparse.Namespace, env: dict[str, str], log_dir: Path) -> None:
    settings = ServiceSettings(
        kafka_bootstrap_servers=env["CLARION_KAFKA_BOOTSTRAP_SERVERS"],
        redis_url=env["CLARION_REDIS_URL"],
        database_url=env["CLARION_DATABASE_URL"],
        environment="development",
        jwt_secret=env["CLARION_JWT_SECRET"],
    )
    prefix = env["CLARION_TOPIC_PREFIX"]
    bootstrap = env["CLARION_KAFKA_BOOTSTRAP_SERVERS"]
    pg_url = env["CLARION_DATABASE_URL"].replace("postgresql+asyncpg://", "postgresql://")
    ingest_port = int(env["CLARION_INGEST_HTTP_PORT"])
    base_url = f"http://127.0.0.1:{ingest_port}"
    procs: list[Proc] = []
    try:
        ingest = await start_service(
            "ingest-api", "clarion-ingest-api", "INGEST", env, log_dir, procs
        )
        print("ingest-api ready", flush=True)
        db = await asyncpg.connect(pg_url)
        key = dev_api_key(settings)
        puts = [
            await profiles_round(base_url, key, f"p{r}", args.profiles, 4)
            for r in range(args.rounds if args.profiles > 0 else 0)
        ]
        batched = [
            await profile_batches_round(
                base_url, key, f"b{r}", args.profiles, 4, args.profile_batch
            )
            for r in range(args.rounds if args.profiles > 0 else 0)
        ]
        rates: list[tuple[float, float]] = []
        if args.notifications > 0:
            for r in range(args.rounds):
                rates.append(
                    await inbox_round(
                        db, bootstrap, prefix, f"t{r}", args.notifications, args.timeout
                    )
                )
        if args.duration > 0:
            await db.execute(TRIGGER_SQL)
            ingest.stop()
            procs.remove(ingest)
            runs = [
                await fresh_latency_round(args, env, log_dir, pg_url, key, f"l{r}")
                for r in range(args.rounds)
            ]
        await db.close()
        print("\nresults (median of rounds)")
        if puts:
            print(f"  PUT /v1/users/{{id}} (4 clients): {statistics.median(puts):,.0f} req/s")
            print(
                f"  PUT /v1/users:batch ({args.profile_batch} per request, 4 clients):"
                f" {statistics.median(batched):,.0f} profiles/s"
            )
        if rates:
            print(f"  inbox consumer:    {statistics.median(r for r, _ in rates):,.0f} notif/s")
            print(f"  delivery consumer: {statistics.median(d for _, d in rates):,.0f} status/s")
        figures: dict[str, Any] = {}
        if puts:
            figures["put_users_per_second_median"] = round(statistics.median(puts))
            figures["put_users_batch_profiles_per_second_median"] = round(
                statistics.median(batched)
            )
        if rates:
            figures["inbox_notifications_per_second_median"] = round(
                statistics.median(r for r, _ in rates)
            )
            figures["delivery_statuses_per_second_median"] = round(
                statistics.median(d for _, d in rates)
            )
        if args.duration > 0:
            figures["post_to_inbox_rate"] = args.rate
            for q in (0.5, 0.95, 0.99):
                med = statistics.median(pct(lat, q) for lat in runs) * 1000
                figures[f"post_to_inbox_p{round(q * 100)}_ms_median"] = round(med, 1)
                print(f"  POST -> inbox p{round(q * 100)}: {med:.1f} ms at {args.rate:g} events/s")
        if args.json is not None:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            args.json.write_text(json.dumps(figures, indent=2) + "\n")
    finally:
        for proc in reversed(procs):
            proc.stop()
        print(f"service logs: {log_dir}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--notifications", type=int, default=20_000)
    parser.add_argument("--profiles", type=int, default=4000, help="PUT /v1/users per round")
    parser.add_argument(
        "--profile-batch", type=int, default=500, help="profiles per PUT /v1/users:batch"
    )
    parser.add_argument("--rate", type=float, default=500.0, help="events/s in the latency phase")
    parser.add_argument("--duration", type=float, default=10.0, help="seconds per latency round")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--timeout", type=float, default=300.0, help="seconds per inbox round")
    parser.add_argument(
        "--rate-limit-api-key",
        type=int,
        default=None,
        help="CLARION_INGEST_RATE_LIMIT_API_KEY for the run (default: the service's; 0: off)",
    )
    parser.add_argument("--keep", action="store_true", help="keep the data directory")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()

    data_dir = Path(tempfile.mkdtemp(prefix="clarion-inbox-bench-"))
    stack = Stack(StackConfig(data_dir=data_dir / "stack", environ={}))
    info = stack.start()
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("CLARION_")}
        env.update(info.env())
        env.update(
            {
                "CLARION_ENVIRONMENT": "development",
                "CLARION_TOPIC_PREFIX": f"bench{uuid.uuid4().hex[:6]}.",
                "CLARION_JWT_SECRET": "inbox-bench-secret-0123456789abcdef",
                "CLARION_LOG_LEVEL": "WARNING",
                # As `make run`: one partition per topic on the embedded broker.
                "CLARION_KAFKA_PARTITIONS_OVERRIDE": "1",
                "CLARION_INGEST_HTTP_PORT": str(free_port()),
                "CLARION_AGGREGATOR_HTTP_PORT": str(free_port()),
            }
        )
        if args.rate_limit_api_key is not None:
            env["CLARION_INGEST_RATE_LIMIT_API_KEY"] = str(args.rate_limit_api_key)
        log_dir = data_dir / "logs"
        log_dir.mkdir()
        asyncio.run(run_bench(args, env, log_dir))
    finally:
        stack.stop()
        if not args.keep:
            shutil.rmtree(data_dir / "stack", ignore_errors=True)


if __name__ == "__main__":
    main()
