"""The demo inbox page in real headless Chromium against the whole of Clarion.

Every service runs as its own process on the embedded stack (``clarion_devstack.launch``);
Chromium is driven over the Chrome DevTools Protocol with ``websockets``. A domain event
posted to ``POST /v1/events`` must appear live with the badge incremented; marking it
read must decrement the badge; after the gateway is killed and restarted the page must
recover what was published meanwhile. The final page is captured as a PNG (into the
test's folder; docs/demo-inbox.png comes from a real replay, ``tests-e2e/screenshot.py``).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import itertools
import json
import shutil
import subprocess
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from websockets.asyncio.client import ClientConnection, connect

from clarion_kit.auth import dev_api_key
from clarion_kit.settings import ServiceSettings

pytestmark = [pytest.mark.browser, pytest.mark.integration]

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"


class Page:
    """A Chrome DevTools Protocol session on one page target."""

    def __init__(self, ws: ClientConnection) -> None:
        self.ws = ws
        self.ids = itertools.count(1)

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        msg_id = next(self.ids)
        await self.ws.send(json.dumps({"id": msg_id, "method": method, "params": params}))
        while True:
            reply = json.loads(await asyncio.wait_for(self.ws.recv(), 30))
            if reply.get("id") == msg_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return dict(reply.get("result", {}))

    async def js(self, expression: str) -> Any:
        result = await self.call(
            "Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True
        )
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    async def wait(self, expression: str, timeout: float = 60.0) -> Any:
        deadline = time.monotonic() + timeout
        while True:
            try:
                value = await self.js(expression)
            except RuntimeError:  # the page is still loading
                value = None
            if value:
                return value
            if time.monotonic() > deadline:
                state = await self.js(
                    "JSON.stringify({url: location.href, status: "
                    "document.getElementById('status')?.textContent, "
                    "message: document.getElementById('message')?.textContent})"
                )
                raise AssertionError(f"timed out waiting for: {expression} ({state})")
            await asyncio.sleep(0.2)


@contextlib.asynccontextmanager
async def chromium(tmp: Path) -> AsyncIterator[Page]:
    profile = tmp / "chromium-profile"
    profile.mkdir()
    proc = await asyncio.create_subprocess_exec(
        *[
            CHROMIUM,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-background-networking",
            "--disable-component-update",
            "--no-first-run",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            "--remote-debugging-port=0",
            "--remote-debugging-address=127.0.0.1",
            "--window-size=1280,900",
            "about:blank",
        ],
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 30
        while not port_file.exists() or not port_file.read_text().strip():
            if time.monotonic() > deadline or proc.returncode is not None:
                raise RuntimeError("chromium did not start")
            await asyncio.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        async with httpx.AsyncClient() as http:
            targets = (await http.get(f"http://127.0.0.1:{port}/json/list")).json()
        target = next(t for t in targets if t["type"] == "page")
        async with connect(target["webSocketDebuggerUrl"], max_size=2**26) as ws:
            page = Page(ws)
            await page.call("Page.enable")
            await page.call("Runtime.enable")
            yield page
    finally:
        proc.terminate()
        try:
            await asyncio.wait_for(proc.wait(), 10)
        except TimeoutError:
            proc.kill()
            await proc.wait()


RETRY_PROBE = """(async () => {
  const real = window.fetch;
  let calls = 0;
  window.fetch = (url, init) => {
    if (String(url).endsWith("/read") && ++calls <= 2) {
      const body = JSON.stringify({ status: 404, detail: "not stored yet" });
      const headers = { "Content-Type": "application/problem+json" };
      return Promise.resolve(new Response(body, { status: 404, headers }));
    }
    return real(url, init);
  };
  try {
    const asked = document.querySelector("#list .item.unread").dataset.id;
    const updated = await window.clarion.markRead(asked);
    return { calls, asked, id: updated.id };
  } finally {
    window.fetch = real;
  }
})()"""


def domain_event(user: str, actor: str, post: str) -> dict[str, Any]:
    return {
        "event_id": str(uuid.uuid4()),
        "type": "post.liked",
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": {"id": actor, "name": f"{actor} <img src=x onerror=alert(1)>"},
        "recipients": [user],
        "object": {"type": "post", "id": post, "title": f"Post {post}"},
    }


async def test_demo_inbox_live_read_and_recovery(devstack: Any, tmp_path: Path) -> None:
    from clarion_devstack.launch import LaunchConfig, Ports, service_specs
    from clarion_devstack.supervisor import Supervisor

    suffix = uuid.uuid4().hex[:8]
    config = LaunchConfig(
        info=devstack,
        ports=Ports.free(),
        state_dir=tmp_path,
        environment="development",
        topic_prefix=f"br{suffix}.",
        redis_prefix=f"br{suffix}:",
        extra_env={"CLARION_LOG_LEVEL": "WARNING"},
    )
    lines: list[str] = []
    supervisor = Supervisor(
        tmp_path / "logs", lambda name, _c, line: lines.append(f"{name} | {line}"), max_restarts=3
    )
    settings = ServiceSettings(environment="development")
    user = f"ada{suffix}"
    api = f"http://127.0.0.1:{config.ports.ingest}"
    headers = {"X-API-Key": dev_api_key(settings)}
    try:
        for spec in service_specs(config):
            await supervisor.start(spec)
        for name in supervisor.names:
            await supervisor.wait_ready(name, timeout=120)
        async with chromium(tmp_path) as page, httpx.AsyncClient(timeout=10) as http:
            # The demo URL `make run` prints: no token, no click; the page gets a
            # development token and goes live by itself.
            await page.call("Page.navigate", url=f"{api}/?user={user}")
            await page.wait("document.getElementById('status').dataset.state === 'open'")
            issued = await page.js("document.getElementById('token').value")
            assert issued, "the page did not fetch a development token"

            posted = await http.post(
                f"{api}/v1/events", json=domain_event(user, "grace", "p1"), headers=headers
            )
            assert posted.status_code == 202, posted.text
            await page.wait("document.querySelectorAll('#list .item').length === 1")
            await page.wait("document.getElementById('badge').textContent === '1'")
            title = await page.js("document.querySelector('#list .item .title').textContent")
            assert "grace <img src=x onerror=alert(1)>" in title
            assert await page.js("document.querySelectorAll('#list img').length") == 0
            assert await page.wait("document.querySelectorAll('.toast').length >= 1")

            await page.js("document.querySelector('#list .item .mark-read').click()")
            await page.wait("document.getElementById('badge').hidden")
            assert await page.js("document.getElementById('badge').textContent") == "0"

            offset_before = await page.js("window.clarion.offset")
            connects = await page.js("window.clarion.connects")
            await supervisor.kill("realtime-gateway")
            await page.wait("document.getElementById('status').dataset.state !== 'open'")
            for actor, post in (("heidi", "p2"), ("ivan", "p3")):
                posted = await http.post(
                    f"{api}/v1/events", json=domain_event(user, actor, post), headers=headers
                )
                assert posted.status_code == 202, posted.text
            await supervisor.wait_ready("realtime-gateway", timeout=120)
            await page.wait(f"window.clarion.connects > {connects}", timeout=90)
            await page.wait("document.querySelectorAll('#list .item').length === 3", timeout=60)
            await page.wait("document.getElementById('badge').textContent === '2'")
            connected = await page.js("window.clarion.lastConnected")
            assert connected["recovered"] is True, (connected, offset_before)
            titles = await page.js(
                "[...document.querySelectorAll('#list .item .title')].map(e => e.textContent)"
            )
            assert any("heidi" in t for t in titles)
            assert any("ivan" in t for t in titles)

            # A live frame can outrun the inbox row: markRead retries a 404 (the first
            # two answers here are made 404s), then succeeds.
            retried = await page.js(RETRY_PROBE)
            assert retried["calls"] == 3, retried
            assert retried["id"] == retried["asked"], retried
            await page.wait("document.getElementById('badge').textContent === '1'")

            shot = await page.call("Page.captureScreenshot", format="png")
            png = base64.b64decode(shot["data"])
            assert png[:8] == b"\x89PNG\r\n\x1a\n"
            (tmp_path / "demo-inbox.png").write_bytes(png)
    except BaseException:
        print("\n".join(lines[-150:]))
        raise
    finally:
        await supervisor.stop()
