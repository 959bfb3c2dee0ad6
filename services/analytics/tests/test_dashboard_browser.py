"""The dashboard in headless Chromium over generated traffic, down to a screenshot.

analytics runs as an HTTP server (uvicorn, in this process) on the embedded stack, a
few hours of plausible traffic is published to its topics, and Chromium loads ``/``:
the rendered DOM must hold the four charts drawn from the API, and a screenshot is
taken (into the test's temporary folder: the one in docs/ comes from a real replay,
``tests-e2e/screenshot.py``).
"""

from __future__ import annotations

import asyncio
import shutil
import socket
import tempfile
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from aiokafka import AIOKafkaProducer
from analytics_messages import demo_dataset
from prometheus_client import CollectorRegistry

from clarion_analytics.app import create_app
from clarion_analytics.settings import AnalyticsSettings
from clarion_contracts.registry import DELIVERY_STATUS, INBOX_EVENTS, NOTIFICATIONS, PRESENCE
from clarion_kit.auth import issue_token

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
KINDS = {
    "notification": NOTIFICATIONS,
    "status": DELIVERY_STATUS,
    "inbox": INBOX_EVENTS,
    "presence": PRESENCE,
}

pytestmark = [
    pytest.mark.browser,
    pytest.mark.timeout(300),
    pytest.mark.skipif(not Path(CHROMIUM).exists(), reason="Chromium is not installed"),
]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@pytest.fixture
async def served(
    devstack: Any, topic_prefix: str, fresh_database_url: str
) -> AsyncIterator[tuple[str, AnalyticsSettings]]:
    settings = AnalyticsSettings(
        kafka_bootstrap_servers=devstack.kafka_bootstrap_servers,
        database_url=fresh_database_url,
        topic_prefix=topic_prefix,
        consumer_group=f"analytics-{topic_prefix}",
        environment="development",
        kafka_partitions_override=2,
        http_port=_free_port(),
        log_json=False,
        log_level="WARNING",
    )
    app = create_app(settings, registry=CollectorRegistry())
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=settings.http_port, log_config=None)
    )
    task = asyncio.create_task(server.serve())
    deadline = time.monotonic() + 60
    while not server.started:
        assert not task.done(), "analytics did not start"
        assert time.monotonic() < deadline, "analytics did not start within 60 s"
        await asyncio.sleep(0.1)
    try:
        yield f"http://127.0.0.1:{settings.http_port}", settings
    finally:
        server.should_exit = True
        await asyncio.wait_for(task, 30)


async def _chromium(*args: str) -> str:
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
            "--virtual-time-budget=15000",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        stdout, _ = await asyncio.wait_for(proc.communicate(), 120)
        assert proc.returncode == 0, f"chromium exited with {proc.returncode}"
        return stdout.decode(errors="replace")
    finally:
        shutil.rmtree(profile, ignore_errors=True)


async def test_dashboard_renders_charts_and_takes_a_screenshot(
    served: tuple[str, AnalyticsSettings], tmp_path: Path
) -> None:
    base_url, settings = served
    now = datetime.now(UTC)
    dataset = demo_dataset(now, hours=12.0, notifications=450)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka_bootstrap_servers, acks="all", enable_idempotence=False
    )
    await producer.start()
    try:
        for kind, key, message in dataset:
            producer_topic = settings.topic(KINDS[kind])
            await producer.send(producer_topic, message.to_bytes(), key=key.encode())
        await producer.flush()
    finally:
        await producer.stop()

    expected_created = len({m.notification_id for k, _, m in dataset if k == "notification"})
    token = issue_token(settings, "ops", scopes=("admin",))
    async with httpx.AsyncClient(base_url=base_url, timeout=10) as client:
        deadline = time.monotonic() + 90
        while True:
            body = (
                await client.get(
                    "/v1/analytics/summary",
                    params={"from": "2026-01-01T00:00:00Z"},
                    headers={"Authorization": f"Bearer {token}"},
                )
            ).json()
            if body.get("totals", {}).get("created") == expected_created:
                break
            assert time.monotonic() < deadline, f"not all notifications counted: {body}"
            await asyncio.sleep(0.5)
        # Let the remaining topics (reads, presence) drain too.
        await asyncio.sleep(3)

    dom = await _chromium("--dump-dom", f"{base_url}/")
    assert 'data-rendered="true"' in dom
    for chart in ("funnel", "latency", "failures", "online"):
        assert f'data-chart="{chart}"' in dom, f"chart {chart} not drawn"
    assert 'class="bar' in dom
    assert 'class="line"' in dom
    assert 'data-kpi="created"' in dom

    screenshot = tmp_path / "analytics-dashboard.png"
    await _chromium(f"--screenshot={screenshot}", f"{base_url}/")
    assert screenshot.stat().st_size > 20_000
    assert screenshot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


# Classes only the rendered pages have (Swagger UI's operation rows, ReDoc's side menu),
# never the HTML the service sends.
@pytest.mark.parametrize(
    ("page", "rendered"), [("/docs", "opblock-summary"), ("/redoc", "menu-content")]
)
async def test_api_docs_render_with_no_host_but_the_service_reachable(
    served: tuple[str, AnalyticsSettings], page: str, rendered: str
) -> None:
    base_url, _ = served
    # Every other host resolves to nothing, as on an air-gapped installation: a page
    # that loads its JavaScript from a CDN stays blank.
    offline = "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1"
    dom = await _chromium(offline, "--dump-dom", f"{base_url}{page}")
    assert rendered in dom, dom[:2000]
