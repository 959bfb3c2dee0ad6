"""Fault injection on the whole of Clarion: replay real events, break one part, count.

Each scenario starts an embedded stack of its own (a crashed PostgreSQL, Redis or
broker disturbs nothing else), every service as a process (:func:`harness.launch`),
and WebSocket sessions for the 20 busiest recipients. It replays the first
``events`` GitHub events of the hour file through ``POST /v1/events:batch``,
injects its fault a third of the way in while the replay goes on, waits until
every consumer group has drained, and then counts against the notifications
computed independently from the same events (``expected.py``):

=============== ===============================================================
expected        notifications the events must give
found           inbox rows in PostgreSQL (every user, read straight from the table)
missing         expected (recipient, type, object, actors, version) not found
extra           found but not expected (a notification started twice, a stale
                version, a user who should have nothing)
dup frames      a (user, notification, version) frame received twice
missed frames   a watched user whose frames stop short of a final version and who
                was never told ``recovered: false`` (told: it refetches the inbox)
refetches       reconnects answered ``recovered: false``
5xx             ingest-api answers >= 500 other than 503 (the replay retries them)
503             ingest-api's "retry later" answers
dlq             records in any ``*.dlq`` topic
data loss       ``broker_data_loss_total`` summed over the services' metrics
recover s       from the fault until every service answers ``/readyz`` again
=============== ===============================================================

A scenario passes with 0 missing, 0 extra, 0 duplicated or missed frames and an
empty DLQ. The broker restart (the memory-only broker loses every record and
committed offset) passes either that way or loudly: a data-loss metric above 0.

Run ``make chaos`` (every scenario, 6,000 events each, the table on stdout and in
``.clarion/chaos/report.md``) or ``python tests-e2e/chaos.py --scenario
postgres-restart --events 3000``. ``test_chaos_e2e.py`` runs some of them in
``make test``.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import re
import signal
import sys
import tempfile
import time
from collections import Counter, defaultdict
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import asyncpg
import httpx
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient

sys.path.insert(0, str(Path(__file__).resolve().parent))

from expected import Group, expected_groups
from harness import HOUR_FILE, PIPELINE_GROUPS, Clarion, launch, wait_outbox_relayed

from clarion_devstack.drain import wait_drained
from clarion_devstack.observer import LatencyObserver
from clarion_devstack.probes import asyncpg_dsn
from clarion_devstack.replay.client import ReplayClient, replay
from clarion_devstack.replay.sources import read_events
from clarion_devstack.stack import Stack, StackConfig

WATCHED_USERS = 20
KILLED_SERVICES = ("ingest-api", "aggregator", "push-worker", "email-worker", "analytics")


@dataclass
class Faults:
    """What a fault can reach: the stack's servers and the supervised services."""

    stack: Stack
    clarion: Clarion
    pause_seconds: float
    down_seconds: float

    async def crash_server(self, name: str) -> None:
        """SIGKILL a server, keep it down ``down_seconds``, start it on its port again."""
        self.stack.signal(name, signal.SIGKILL)
        await asyncio.sleep(self.down_seconds)
        await asyncio.to_thread(self.stack.restart, name)

    async def pause_server(self, name: str) -> None:
        """SIGSTOP a server for ``pause_seconds``, then SIGCONT."""
        self.stack.signal(name, signal.SIGSTOP)
        try:
            await asyncio.sleep(self.pause_seconds)
        finally:
            self.stack.signal(name, signal.SIGCONT)

    async def kill_services(self, *names: str) -> None:
        """SIGKILL services; the supervisor starts them again."""
        for name in names:
            await self.clarion.supervisor.kill(name, signal.SIGKILL)


async def _burn_cpu(seconds: float) -> None:
    """Keep both cores busy for ``seconds`` with two spinning processes."""
    code = f"import time\nend = time.monotonic() + {seconds}\nwhile time.monotonic() < end: pass"
    procs = [await asyncio.create_subprocess_exec(sys.executable, "-c", code) for _ in range(2)]
    await asyncio.gather(*(p.wait() for p in procs))


@dataclass(frozen=True)
class Scenario:
    """One fault: its name, what it does, and whether a loud data loss also passes."""

    name: str
    description: str
    inject: Callable[[Faults], Awaitable[None]]
    loud_loss_passes: bool = False


SCENARIOS: dict[str, Scenario] = {
    s.name: s
    for s in (
        Scenario(
            "kill-services",
            "kill -9 ingest-api, aggregator, push-worker, email-worker, analytics",
            lambda f: f.kill_services(*KILLED_SERVICES),
        ),
        Scenario(
            "kill-gateway",
            "kill -9 realtime-gateway with the watched clients connected",
            lambda f: f.kill_services("realtime-gateway"),
        ),
        Scenario(
            "broker-pause",
            "SIGSTOP the Kafka broker, SIGCONT after the pause",
            lambda f: f.pause_server("kafka"),
        ),
        Scenario(
            "postgres-restart",
            "kill -9 PostgreSQL, restart it on the same port",
            lambda f: f.crash_server("postgres"),
        ),
        Scenario(
            "redis-restart",
            "kill -9 Redis, restart it empty on the same port",
            lambda f: f.crash_server("redis"),
        ),
        Scenario(
            "broker-gap",
            "both cores busy while consumers fetch with short waits",
            lambda f: _burn_cpu(f.pause_seconds),
        ),
        Scenario(
            "broker-restart",
            "kill -9 the memory-only broker, restart it empty on the same port",
            lambda f: f.crash_server("kafka"),
            loud_loss_passes=True,
        ),
    )
}


@dataclass
class Result:
    """The counts of one scenario run (see the module docstring)."""

    scenario: str
    expected: int = 0
    found: int = 0
    missing: int = 0
    extra: int = 0
    dup_frames: int = 0
    missed_frames: int = 0
    refetches: int = 0
    http_5xx: int = 0
    http_503: int = 0
    dlq: int = 0
    data_loss: int = 0
    recover_s: float | None = None
    not_ready: list[str] = field(default_factory=list)
    error: str | None = None

    @property
    def exact(self) -> bool:
        """Nothing lost, nothing doubled, nothing dead-lettered."""
        return (
            self.error is None
            and self.missing == self.extra == self.dup_frames == self.missed_frames == 0
            and self.dlq == 0
        )

    def passed(self, scenario: Scenario) -> bool:
        """Exact, or (where the scenario allows it) a loss that was made loud: counted
        in a data-loss metric and a service reporting not ready at the end."""
        loud = self.data_loss > 0 and bool(self.not_ready)
        return self.exact or (scenario.loud_loss_passes and loud)


def first_events(source: Path, count: int, into: Path) -> Path:
    """Write the first ``count`` lines of a GH Archive file to ``into`` (gzip)."""
    with gzip.open(source, "rt", encoding="utf-8") as src, gzip.open(into, "wt") as dst:
        for number, line in enumerate(src):
            if number >= count:
                break
            dst.write(line)
    return into


def _want(groups: list[Group]) -> Counter[tuple[str, str, str, int, int]]:
    return Counter((g.recipient, g.type, g.object_ref, len(g.actors), g.events) for g in groups)


async def inbox_rows(database_url: str) -> Counter[tuple[str, str, str, int, int]]:
    """Every inbox row as (user, type, object ref, actor count, version)."""
    conn = await asyncpg.connect(asyncpg_dsn(database_url))
    try:
        rows = await conn.fetch(
            "SELECT user_id, type, object->>'type' AS ot, object->>'id' AS oid,"
            " actor_count, version FROM ingest.inbox"
        )
    finally:
        await conn.close()
    return Counter(
        (r["user_id"], r["type"], f"{r['ot']}:{r['oid']}", r["actor_count"], r["version"])
        for r in rows
    )


def frame_counts(observer: LatencyObserver, groups: list[Group]) -> tuple[int, int, int]:
    """(duplicated frames, missed frames, refetches) of the watched users."""
    duplicated = 0
    missed = 0
    for user, frames in observer.seen.items():
        seen = Counter((f.notification_id, f.version) for f in frames)
        duplicated += sum(n - 1 for n in seen.values())
        if observer.refetches.get(user):
            continue  # told to refetch: the inbox, not the frames, must be complete
        finals: dict[str, int] = defaultdict(int)
        for f in frames:
            finals[f.notification_id] = max(finals[f.notification_id], f.version)
        want = Counter(g.events for g in groups if g.recipient == user)
        missed += sum((want - Counter(finals.values())).values())
    return duplicated, missed, sum(observer.refetches.values())


async def dlq_records(bootstrap: str, prefix: str) -> int:
    """Records in every ``<prefix>*.dlq`` topic."""
    admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
    await admin.start()
    try:
        topics = [
            t for t in await admin.list_topics() if t.startswith(prefix) and t.endswith(".dlq")
        ]
    finally:
        await admin.close()
    if not topics:
        return 0
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap)
    await consumer.start()
    try:
        parts = [
            TopicPartition(t, p) for t in topics for p in consumer.partitions_for_topic(t) or ()
        ]
        if not parts:
            return 0
        starts = await consumer.beginning_offsets(parts)
        ends = await consumer.end_offsets(parts)
        return sum(ends[tp] - starts[tp] for tp in parts)
    finally:
        await consumer.stop()


_LOSS = re.compile(r"^clarion_\w+_broker_data_loss_total\{[^}]*\}\s+([0-9.e+]+)$", re.M)


async def service_health(clarion: Clarion) -> tuple[list[str], int]:
    """(services not ready, data-loss count summed from every service's ``/metrics``)."""
    not_ready: list[str] = []
    loss = 0
    async with httpx.AsyncClient(timeout=5.0) as http:
        for name in clarion.supervisor.names:
            url = clarion.supervisor.ready_url(name)
            if url is None:
                continue
            try:
                if (await http.get(url)).status_code != 200:
                    not_ready.append(name)
                text = (await http.get(url.rsplit("/", 1)[0] + "/metrics")).text
            except httpx.HTTPError:
                not_ready.append(name)
                continue
            loss += int(sum(float(v) for v in _LOSS.findall(text)))
    return not_ready, loss


async def _wait_all_ready(clarion: Clarion, timeout: float) -> None:
    for name in clarion.supervisor.names:
        await clarion.supervisor.wait_ready(name, timeout=timeout)


def _dev_key() -> str:
    from clarion_kit.auth import dev_api_key
    from clarion_kit.settings import ServiceSettings

    return dev_api_key(ServiceSettings(environment="test"))


async def run_scenario(
    scenario: Scenario,
    source: Path,
    work: Path,
    *,
    events: int = 6000,
    pause_seconds: float = 30.0,
    down_seconds: float = 3.0,
    drain_timeout: float = 300.0,
) -> Result:
    """Run one scenario on a stack of its own under ``work``; never raises for a finding."""
    result = Result(scenario.name)
    await asyncio.to_thread(work.mkdir, parents=True, exist_ok=True)
    hour = first_events(source, events, work / "events.json.gz")
    groups = expected_groups(hour)
    want = _want(groups)
    result.expected = sum(want.values())
    replayed = list(read_events(hour))
    busiest = [u for u, _ in Counter(g.recipient for g in groups).most_common(WATCHED_USERS)]
    stack = Stack(StackConfig(data_dir=work / "stack", environ={}))
    info = await asyncio.to_thread(stack.start)
    try:
        async with launch(info, work, max_restarts=20) as clarion:
            observer = LatencyObserver(clarion.gateway(), busiest)
            await observer.start()
            faults = Faults(stack, clarion, pause_seconds, down_seconds)
            fault_task: asyncio.Task[None] | None = None
            fault_started = 0.0
            # Enough attempts to outlast any fault here: a producer retries with the same ids.
            async with ReplayClient(clarion.api, _dev_key(), attempts=60) as client:
                await client.ensure_profiles({r for e in replayed for r in e.recipients or []})
                third = len(replayed) // 3
                await replay(replayed[:third], client, batch_size=100)
                fault_started = time.monotonic()
                fault_task = asyncio.create_task(scenario.inject(faults))
                try:
                    await replay(replayed[third:], client, batch_size=100)
                finally:
                    await fault_task
                result.http_5xx = client.stats.server_errors
                result.http_503 = client.stats.unavailable
            try:
                # A loss made loud keeps readiness false: waiting longer proves nothing.
                ready_timeout = 60.0 if scenario.loud_loss_passes else drain_timeout
                await _wait_all_ready(clarion, timeout=ready_timeout)
                result.recover_s = round(time.monotonic() - fault_started, 1)
                await wait_outbox_relayed(info.database_url, timeout=drain_timeout)
                await wait_drained(
                    info.kafka_bootstrap_servers,
                    topic_prefix=clarion.topic_prefix,
                    timeout=drain_timeout,
                    expect=PIPELINE_GROUPS,
                )
            except (TimeoutError, RuntimeError) as exc:
                result.error = f"did not drain: {exc}"[:300]
            await asyncio.sleep(1.0)
            await observer.stop()
            got = await inbox_rows(info.database_url)
            result.found = sum(got.values())
            result.missing = sum((want - got).values())
            result.extra = sum((got - want).values())
            result.dup_frames, result.missed_frames, result.refetches = frame_counts(
                observer, groups
            )
            result.dlq = await dlq_records(info.kafka_bootstrap_servers, clarion.topic_prefix)
            result.not_ready, result.data_loss = await service_health(clarion)
    except Exception as exc:  # a scenario that could not run is a failed row, not a crash
        result.error = f"{type(exc).__name__}: {exc}"[:300]
    finally:
        await asyncio.to_thread(stack.stop)
    return result


COLUMNS = (
    ("scenario", "scenario"),
    ("expected", "expected"),
    ("found", "found"),
    ("missing", "missing"),
    ("extra", "extra"),
    ("dup frames", "dup_frames"),
    ("missed frames", "missed_frames"),
    ("refetches", "refetches"),
    ("5xx", "http_5xx"),
    ("503", "http_503"),
    ("dlq", "dlq"),
    ("data loss", "data_loss"),
    ("recover s", "recover_s"),
    ("not ready", "not_ready"),
)


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, list):
        return ", ".join(str(v) for v in value) or "-"
    return str(value)


def render_table(results: list[Result]) -> str:
    """The results as a Markdown table with a verdict column."""
    head = "| " + " | ".join(title for title, _ in COLUMNS) + " | verdict |"
    rule = "|" + " --- |" * (len(COLUMNS) + 1)
    lines = [head, rule]
    for r in results:
        values = asdict(r)
        cells = [_cell(values[attr]) for _, attr in COLUMNS]
        verdict = "ok" if r.passed(SCENARIOS[r.scenario]) else "FAIL"
        if r.exact is False and verdict == "ok":
            verdict = "ok (loud)"
        if r.error:
            verdict += f": {r.error}"
        lines.append("| " + " | ".join([*cells, verdict]) + " |")
    return "\n".join(lines)


@contextlib.contextmanager
def _work_dir(path: Path | None) -> Iterator[Path]:
    if path is not None:
        path.mkdir(parents=True, exist_ok=True)
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="clarion-chaos-") as tmp:
        Path(tmp).chmod(0o755)
        yield Path(tmp)


async def _main(args: argparse.Namespace) -> int:
    names = args.scenario or list(SCENARIOS)
    results: list[Result] = []
    with _work_dir(args.work) as work:
        for name in names:
            print(f"chaos: {name}: {SCENARIOS[name].description} ...", flush=True)
            result = await run_scenario(
                SCENARIOS[name],
                args.source,
                work / name,
                events=args.events,
                pause_seconds=args.pause,
                down_seconds=args.down,
            )
            results.append(result)
            print(render_table([result]).splitlines()[-1], flush=True)
    table = render_table(results)
    print()
    print(table)
    if args.report is not None:
        args.report.parent.mkdir(parents=True, exist_ok=True)
        args.report.write_text(table + "\n", "utf-8")
    return 0 if all(r.passed(SCENARIOS[r.scenario]) for r in results) else 1


def main() -> None:
    """``make chaos``: run the scenarios, print the table, exit 1 if any failed."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenario", action="append", choices=list(SCENARIOS))
    parser.add_argument("--events", type=int, default=6000, help="GitHub events replayed")
    parser.add_argument("--source", type=Path, default=HOUR_FILE)
    parser.add_argument("--pause", type=float, default=30.0, help="broker pause / load, s")
    parser.add_argument("--down", type=float, default=3.0, help="crashed server's down time, s")
    parser.add_argument("--work", type=Path, default=None, help="keep logs in this directory")
    parser.add_argument("--report", type=Path, default=None, help="also write the table here")
    raise SystemExit(asyncio.run(_main(parser.parse_args())))


if __name__ == "__main__":
    main()
