"""Launch the whole of Clarion as separate processes on the embedded stack."""

from __future__ import annotations

import asyncio
import contextlib
import time
import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx

from clarion_devstack.launch import LaunchConfig, Ports, service_specs
from clarion_devstack.probes import asyncpg_dsn
from clarion_devstack.stack import StackInfo
from clarion_devstack.supervisor import Supervisor

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "gharchive"
HOUR_FILE = DATA / "2015-01-01-15.json.gz"

PIPELINE_GROUPS = ("aggregator", "ingest-api")
"""Consumer groups (without the topic prefix) that must have committed before a run
counts as drained: domain events to notifications, notifications to the inbox."""


@dataclass
class Clarion:
    """A running Clarion: its supervisor, ports and isolation prefixes."""

    supervisor: Supervisor
    ports: Ports
    info: StackInfo
    topic_prefix: str
    log_dir: Path

    @property
    def api(self) -> str:
        return f"http://127.0.0.1:{self.ports.ingest}"

    def gateway(self, second: bool = False) -> str:
        port = self.ports.gateway_b if second else self.ports.gateway
        return f"ws://127.0.0.1:{port}/v1/ws"


@contextlib.asynccontextmanager
async def launch(
    info: StackInfo, tmp: Path, *, gateways: int = 1, max_restarts: int = 3
) -> AsyncIterator[Clarion]:
    """Start every service with fresh ports and prefixes; stop them at exit.

    A service that exits is started again, ``max_restarts`` times at most.
    """
    suffix = uuid.uuid4().hex[:8]
    config = LaunchConfig(
        info=info,
        ports=Ports.free(),
        state_dir=tmp,
        environment="test",
        topic_prefix=f"e2e{suffix}.",
        redis_prefix=f"e2e{suffix}:",
        gateways=gateways,
        extra_env={"CLARION_LOG_LEVEL": "WARNING"},
    )
    lines: list[str] = []

    def echo(name: str, _colour: str, line: str) -> None:
        lines.append(f"{name} | {line}")

    supervisor = Supervisor(tmp / "logs", echo, max_restarts=max_restarts)
    try:
        for spec in service_specs(config):
            await supervisor.start(spec)
        for name in supervisor.names:
            await supervisor.wait_ready(name, timeout=120)
        yield Clarion(supervisor, config.ports, info, config.topic_prefix, tmp / "logs")
    except BaseException:
        print("\n".join(lines[-200:]))
        raise
    finally:
        await supervisor.stop()


async def inbox(client: httpx.AsyncClient, token: str) -> list[dict[str, object]]:
    """Every notification of the token's user, following cursors."""
    items: list[dict[str, object]] = []
    cursor: str | None = None
    while True:
        params: dict[str, str | int] = {"limit": 100}
        if cursor:
            params["cursor"] = cursor
        response = await client.get(
            "/v1/me/notifications", params=params, headers={"Authorization": f"Bearer {token}"}
        )
        assert response.status_code == 200, response.text
        page = response.json()
        items.extend(page["items"])
        cursor = page.get("next_cursor")
        if not cursor:
            return items


async def wait_outbox_relayed(database_url: str, timeout: float = 300.0) -> None:
    """Wait until ingest-api's outbox holds no record still to relay to the broker.

    A ``202`` means stored in the outbox; consumer lag says nothing about records the
    relay has not produced yet, so a drained pipeline is an empty outbox first.

    Raises:
        TimeoutError: records still pending after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    pending = -1
    while time.monotonic() < deadline:
        try:
            conn = await asyncpg.connect(asyncpg_dsn(database_url))
            try:
                pending = int(
                    await conn.fetchval(
                        "SELECT count(*) FROM ingest.outbox WHERE relayed_at IS NULL"
                    )
                )
            finally:
                await conn.close()
        except (OSError, asyncpg.PostgresError):
            pending = -1  # the database is restarting: ask again
        if pending == 0:
            return
        await asyncio.sleep(0.2)
    raise TimeoutError(f"ingest-api's outbox still holds {pending} records to relay")
