"""End to end: analytics figures equal what users can see through the public API.

Real GH Archive events (the 800-event sample of 2021-07-21, or the file named by
``CLARION_E2E_ANALYTICS_SOURCE``, e.g. the 2015-01-01-15 hour) go through all six
services as processes, on a database of its own (so analytics holds this run's
counters only). The figures of ``GET /v1/analytics/summary`` and ``/funnel`` are then
compared with counts gathered independently of analytics:

- created: distinct notification ids in every recipient's inbox (ingest-api), which
  also equals the number of notifications the aggregation rules give for the file
  (expected.py);
- updated: the sum of ``version - 1`` over those notifications (every later version
  is an update);
- delivered in-app: distinct notifications whose frame the realtime-gateway wrote to a
  WebSocket session (the gateway reports ``delivered`` once per notification version
  written to a session; analytics counts each notification once), as seen by the
  sessions of the busiest recipients;
- read: notifications marked read through the API (a read, unread, read again counts
  once in the funnel and three times as inbox actions).
"""

from __future__ import annotations

import asyncio
import dataclasses
import os
import time
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from expected import expected_groups
from harness import DATA, PIPELINE_GROUPS, Clarion, inbox, launch, wait_outbox_relayed

from clarion_devstack.drain import wait_drained
from clarion_devstack.observer import LatencyObserver, dev_token
from clarion_devstack.replay.client import ReplayClient, replay
from clarion_devstack.replay.sources import read_events
from clarion_devstack.stack import StackInfo

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(600)]

SOURCE = Path(os.environ.get("CLARION_E2E_ANALYTICS_SOURCE", DATA / "2021-07-21-sample800.json.gz"))
"""The replayed GH Archive file (the sample keeps the test to a few minutes)."""
WATCHED = 20
"""Busiest recipients with a WebSocket session open during the replay."""
READERS = 30
"""Recipients who mark their newest notification read."""
REREADERS = 5
"""Of those, recipients who then mark it unread and read again."""


def _settings() -> Any:
    from clarion_kit.settings import ServiceSettings

    return ServiceSettings(environment="test")


def admin_token() -> str:
    from clarion_kit.auth import issue_token

    return issue_token(_settings(), "e2e-analytics-admin", scopes=("admin",))


def dev_key() -> str:
    from clarion_kit.auth import dev_api_key

    return dev_api_key(_settings())


async def all_inboxes(clarion: Clarion, users: list[str]) -> dict[str, list[dict[str, Any]]]:
    """Every recipient's whole inbox, through ``GET /v1/me/notifications``."""
    async with httpx.AsyncClient(base_url=clarion.api, timeout=30) as client:
        semaphore = asyncio.Semaphore(8)

        async def one(user: str) -> tuple[str, list[dict[str, Any]]]:
            async with semaphore:
                return user, await inbox(client, dev_token(user))

        return dict(await asyncio.gather(*(one(u) for u in users)))


async def mark_some_read(
    clarion: Clarion, inboxes: dict[str, list[dict[str, Any]]]
) -> tuple[set[str], int, int]:
    """Mark the newest notification of ``READERS`` recipients read (some of them twice).

    Returns:
        (ids marked read, read actions sent, unread actions sent).
    """
    readers = [u for u in sorted(inboxes) if inboxes[u]][:READERS]
    marked: set[str] = set()
    reads = unreads = 0
    async with httpx.AsyncClient(base_url=clarion.api, timeout=30) as client:
        for n, user in enumerate(readers):
            headers = {"Authorization": f"Bearer {dev_token(user)}"}
            nid = str(inboxes[user][0]["id"])
            actions = ["read", "unread", "read"] if n < REREADERS else ["read"]
            for action in actions:
                response = await client.post(
                    f"/v1/me/notifications/{nid}/{action}", headers=headers
                )
                assert response.status_code == 200, response.text
                assert response.json()["read"] is (action == "read")
                reads += action == "read"
                unreads += action == "unread"
            marked.add(nid)
    return marked, reads, unreads


async def analytics(clarion: Clarion, path: str, start: datetime) -> dict[str, Any]:
    params = {
        "from": start.isoformat(),
        "to": (datetime.now(UTC) + timedelta(minutes=10)).isoformat(),
    }
    async with httpx.AsyncClient(
        base_url=f"http://127.0.0.1:{clarion.ports.analytics}", timeout=30
    ) as client:
        response = await client.get(
            f"/v1/analytics/{path}",
            params=params,
            headers={"Authorization": f"Bearer {admin_token()}"},
        )
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


async def settled_summary(
    clarion: Clarion, start: datetime, want: dict[str, int], timeout: float = 120.0
) -> dict[str, Any]:
    """The summary once its headline figures equal ``want`` (or the last one at timeout).

    Delivery statuses travel gateway -> Kafka -> analytics after the frames were written,
    so the figures are read until they stop changing towards the expected ones.
    """
    deadline = time.monotonic() + timeout
    while True:
        summary = await analytics(clarion, "summary", start)
        totals = summary["totals"]
        got = {
            "created": totals["created"],
            "updated": totals["updated"],
            "delivered_in_app": totals["delivered"]["in_app"],
            "read": totals["read"],
        }
        if got == want or time.monotonic() > deadline:
            return summary
        await asyncio.sleep(0.5)


@pytest.fixture
def source() -> Path:
    if not SOURCE.is_file():
        pytest.fail(f"the real events are missing: {SOURCE}")
    return SOURCE


async def test_analytics_equals_counts_seen_through_the_api(
    devstack: StackInfo, fresh_database_url: str, tmp_path: Path, source: Path
) -> None:
    start = datetime.now(UTC) - timedelta(minutes=1)
    info = dataclasses.replace(devstack, database_url=fresh_database_url)
    groups = expected_groups(source)
    events = list(read_events(source))
    recipients = sorted({r for e in events for r in e.recipients or []})
    busiest = [u for u, _ in Counter(g.recipient for g in groups).most_common(WATCHED)]

    async with launch(info, tmp_path) as clarion:
        observer = LatencyObserver(clarion.gateway(), busiest)
        await observer.start(timeout=30)
        async with ReplayClient(clarion.api, dev_key()) as client:
            await client.ensure_profiles(recipients)
            await replay(events, client, batch_size=100)
        await wait_outbox_relayed(clarion.info.database_url)
        await wait_drained(
            clarion.info.kafka_bootstrap_servers,
            topic_prefix=clarion.topic_prefix,
            timeout=300,
            expect=PIPELINE_GROUPS,
        )

        inboxes = await all_inboxes(clarion, recipients)
        items = [item for user_items in inboxes.values() for item in user_items]
        ids = {str(item["id"]) for item in items}
        assert len(ids) == len(items), "a notification appears twice in an inbox"
        assert len(ids) == len(groups), "the inboxes do not hold the expected notifications"
        updated = sum(int(item["version"]) - 1 for item in items)
        assert updated == sum(g.events - 1 for g in groups)

        marked, reads, unreads = await mark_some_read(clarion, inboxes)
        await wait_outbox_relayed(clarion.info.database_url)
        await wait_drained(
            clarion.info.kafka_bootstrap_servers, topic_prefix=clarion.topic_prefix, timeout=120
        )

        # Every notification of a watched user reaches its session (frames are written
        # after the gateway committed its offsets, so they may trail the drain a little).
        watched_ids = {str(item["id"]) for u in busiest for item in inboxes[u]}

        def framed_ids() -> set[str]:
            return {f.notification_id for frames in observer.seen.values() for f in frames}

        deadline = time.monotonic() + 60
        while (framed := framed_ids()) != watched_ids:
            if time.monotonic() > deadline:
                break
            await asyncio.sleep(0.2)
        assert framed == watched_ids, "the watched sessions did not get every notification"

        want = {
            "created": len(ids),
            "updated": updated,
            "delivered_in_app": len(framed),
            "read": len(marked),
        }
        summary = await settled_summary(clarion, start, want)
        funnel = await analytics(clarion, "funnel", start)
        await observer.stop()

    totals = summary["totals"]
    assert {
        "created": totals["created"],
        "updated": totals["updated"],
        "delivered_in_app": totals["delivered"]["in_app"],
        "read": totals["read"],
    } == want
    assert totals["routed"]["in_app"] == len(ids)
    assert len(framed) <= totals["reached"] <= len(ids)
    assert summary["inbox"]["read"] == reads
    assert summary["inbox"]["unread"] == unreads
    assert sum(t["created"] for t in summary["types"]) == len(ids)
    assert sum(d["created"] for d in summary["days"]) == len(ids)

    steps = {s["step"]: s["count"] for s in funnel["steps"]}
    assert steps["created"] == len(ids)
    assert steps["reached"] == totals["reached"]
    assert steps["read"] == len(marked)
    in_app = {s["step"]: s["count"] for s in funnel["channels"]["in_app"]}
    assert in_app["routed"] == len(ids)
    assert in_app["delivered"] == len(framed)
    print(
        f"\nanalytics e2e ({source.name}): {len(events)} events, {len(recipients)} recipients, "
        f"created={len(ids)} updated={updated} delivered_in_app={len(framed)} "
        f"reached={totals['reached']} read={len(marked)} inbox={summary['inbox']} "
        f"routed={totals['routed']} delivered={totals['delivered']}"
    )
