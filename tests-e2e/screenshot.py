"""Screenshots of Clarion on real data: the analytics dashboard and the demo inbox.

Starts the embedded stack and all six services (``environment=development``, so the
dashboard gets its admin token from ``GET /v1/dev/admin-token`` and the demo inbox is
served at ``/``), replays the GH Archive hour 2015-01-01 15:00 while WebSocket sessions
of the busiest recipients are open (in-app deliveries), marks some notifications read,
waits until every consumer group has caught up, then has headless Chromium draw:

- ``docs/analytics-dashboard.png``: the analytics dashboard;
- ``docs/demo-inbox.png``: the demo inbox of the busiest recipient.

Usage: ``.venv/bin/python tests-e2e/screenshot.py [--out DIR] [--source FILE]``.
"""

from __future__ import annotations

import argparse
import asyncio
import shutil
import sys
import tempfile
import time
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

import httpx

from clarion_devstack.drain import wait_drained
from clarion_devstack.launch import LaunchConfig, Ports, service_specs
from clarion_devstack.observer import LatencyObserver
from clarion_devstack.replay.client import ReplayClient, replay
from clarion_devstack.replay.sources import read_events
from clarion_devstack.stack import Stack, StackConfig, StackInfo
from clarion_devstack.supervisor import Supervisor
from clarion_kit.auth import dev_api_key, issue_token
from clarion_kit.settings import ServiceSettings

ROOT = Path(__file__).resolve().parents[1]
HOUR_FILE = ROOT.parent / "shared" / "data" / "gharchive" / "2015-01-01-15.json.gz"
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
WATCHED = 40
"""Busiest recipients with a live WebSocket session during the replay."""
READERS = 60
"""Recipients who read their newest notification (the ``read`` step of the funnel)."""


def settings() -> ServiceSettings:
    return ServiceSettings(environment="development")


async def chromium_screenshot(url: str, out: Path, budget_ms: int = 20_000) -> None:
    """Load ``url`` in headless Chromium and save a 1400x1000 PNG to ``out``.

    ``--virtual-time-budget`` lets the page's scripts fetch and draw before the shot.
    """
    profile = tempfile.mkdtemp(prefix="clarion-chromium-")
    try:
        proc = await asyncio.create_subprocess_exec(
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--hide-scrollbars",
            f"--user-data-dir={profile}",
            "--window-size=1400,1000",
            f"--virtual-time-budget={budget_ms}",
            f"--screenshot={out}",
            url,
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, err = await asyncio.wait_for(proc.communicate(), timeout=180)
        if proc.returncode != 0:
            raise RuntimeError(f"chromium failed ({proc.returncode}): {err.decode()[-2000:]}")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


INBOX_READY = (
    "document.getElementById('status').dataset.state === 'open'"
    " && document.querySelectorAll('#list li').length > 0"
)
"""The demo inbox is drawn: its WebSocket session is open and the list is filled."""


async def chromium_capture(url: str, out: Path, ready_js: str, timeout: float = 90.0) -> None:
    """Screenshot ``url`` once the page script says it is ready (Chrome DevTools Protocol).

    For pages that fill themselves over a WebSocket, which ``--virtual-time-budget``
    does not wait for: the page is loaded in headless Chromium, ``ready_js`` is
    evaluated until it is true (bounded by ``timeout`` seconds), then
    ``Page.captureScreenshot`` gives the PNG.

    Raises:
        TimeoutError: the page did not become ready in time.
    """
    import base64
    import json
    import socket

    import websockets

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    profile = tempfile.mkdtemp(prefix="clarion-chromium-")
    proc = await asyncio.create_subprocess_exec(
        CHROMIUM,
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-background-networking",
        "--disable-component-update",
        "--no-first-run",
        "--hide-scrollbars",
        f"--user-data-dir={profile}",
        "--window-size=1400,1000",
        "--remote-debugging-address=127.0.0.1",
        f"--remote-debugging-port={port}",
        "about:blank",
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
    )
    try:
        async with asyncio.timeout(timeout):
            targets: list[dict[str, str]] = []
            async with httpx.AsyncClient() as http:
                while not targets:
                    try:
                        listed = await http.get(f"http://127.0.0.1:{port}/json/list")
                        targets = [t for t in listed.json() if t.get("type") == "page"]
                    except httpx.HTTPError:
                        pass
                    if not targets:
                        await asyncio.sleep(0.2)
            async with websockets.connect(targets[0]["webSocketDebuggerUrl"], max_size=None) as cdp:
                ids = iter(range(1, 1_000_000))

                async def call(method: str, **params: object) -> dict[str, object]:
                    ident = next(ids)
                    await cdp.send(json.dumps({"id": ident, "method": method, "params": params}))
                    while True:
                        answer = json.loads(await cdp.recv())
                        if answer.get("id") == ident:
                            result: dict[str, object] = answer.get("result", {})
                            return result

                await call("Page.enable")
                await call("Page.navigate", url=url)
                while True:
                    done = await call("Runtime.evaluate", expression=ready_js)
                    value: Any = done.get("result")
                    if isinstance(value, dict) and value.get("value") is True:
                        break
                    await asyncio.sleep(0.25)
                await asyncio.sleep(1.0)  # let the last frames' rendering settle
                shot = await call("Page.captureScreenshot", format="png")
                png = base64.b64decode(str(shot["data"]))
        await asyncio.to_thread(out.write_bytes, png)
    finally:
        proc.terminate()
        await proc.wait()
        shutil.rmtree(profile, ignore_errors=True)


async def mark_read(api: str, inboxes: dict[str, str]) -> int:
    """Mark the newest notification of each user read; return how many were marked."""
    marked = 0
    async with httpx.AsyncClient(base_url=api, timeout=30) as client:
        for user in inboxes:
            headers = {"Authorization": f"Bearer {issue_token(settings(), user)}"}
            page = await client.get("/v1/me/notifications", params={"limit": 1}, headers=headers)
            page.raise_for_status()
            items = page.json()["items"]
            if items:
                done = await client.post(
                    f"/v1/me/notifications/{items[0]['id']}/read", headers=headers
                )
                done.raise_for_status()
                marked += 1
    return marked


async def run(info: StackInfo, state: Path, out: Path, source: Path) -> None:
    suffix = uuid.uuid4().hex[:8]
    config = LaunchConfig(
        info=info,
        ports=Ports.free(),
        state_dir=state,
        environment="development",
        topic_prefix=f"shot{suffix}.",
        redis_prefix=f"shot{suffix}:",
        extra_env={"CLARION_LOG_LEVEL": "WARNING"},
    )
    supervisor = Supervisor(state / "logs", lambda *_: None, max_restarts=3)
    try:
        for spec in service_specs(config):
            await supervisor.start(spec)
        for name in supervisor.names:
            await supervisor.wait_ready(name, timeout=180)
        ports = config.ports
        api = f"http://127.0.0.1:{ports.ingest}"
        events = list(read_events(source))
        counts = Counter(r for e in events for r in e.recipients or [] if r != e.actor.id)
        busiest = [u for u, _ in counts.most_common(WATCHED)]
        observer = LatencyObserver(
            f"ws://127.0.0.1:{ports.gateway}/v1/ws",
            busiest,
            token_for=lambda user: issue_token(settings(), user),
        )
        await observer.start(timeout=30)
        started = time.monotonic()
        async with ReplayClient(api, dev_api_key(settings())) as client:
            await client.ensure_profiles(counts)
            await replay(events, client, batch_size=100)
        await wait_drained(info.kafka_bootstrap_servers, topic_prefix=config.topic_prefix)
        readers = {u: u for u, _ in counts.most_common(READERS)}
        marked = await mark_read(api, readers)
        await wait_drained(info.kafka_bootstrap_servers, topic_prefix=config.topic_prefix)
        await observer.stop()
        print(
            f"replayed {len(events)} events in {time.monotonic() - started:.1f}s; "
            f"{observer.frames} frames to {len(busiest)} sessions; {marked} marked read"
        )

        dashboard = out / "analytics-dashboard.png"
        await chromium_screenshot(f"http://127.0.0.1:{ports.analytics}/", dashboard)
        print(f"wrote {dashboard}")
        user = busiest[0]
        token = issue_token(settings(), user)
        inbox = out / "demo-inbox.png"
        await chromium_capture(f"{api}/?user={user}#token={token}", inbox, INBOX_READY)
        print(f"wrote {inbox} (user {user}, {counts[user]} events addressed to them)")
    finally:
        await supervisor.stop()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--source", type=Path, default=HOUR_FILE)
    args = parser.parse_args()
    if not args.source.exists():
        sys.exit(f"missing GH Archive file: {args.source}")
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="clarion-shot-") as tmp:
        data = Path(tmp) / "stack"
        data.mkdir()
        data.chmod(0o755)  # PostgreSQL may run under another account that must reach it
        Path(tmp).chmod(0o755)
        stack = Stack(StackConfig(data_dir=data))
        info = stack.start()
        try:
            asyncio.run(run(info, Path(tmp) / "run", args.out, args.source))
        finally:
            stack.stop()
    for name in ("analytics-dashboard.png", "demo-inbox.png"):
        if not (args.out / name).is_file():
            sys.exit(f"no screenshot was written: {args.out / name}")


if __name__ == "__main__":
    main()
