"""End to end: the real GH Archive hour 2015-01-01 15:00 through all six services.

The expected notifications are computed from the raw file and the aggregation
rules (expected.py), independently of Clarion's code; the inbox must hold
exactly those, once each, with the right actor counts and unread counts, and the
WebSocket sessions of the 20 busiest users must have received every version of
every one of their notifications, in version order, none twice.
"""

from __future__ import annotations

import asyncio
import signal
from collections import Counter, defaultdict
from pathlib import Path

import httpx
import pytest
from expected import Group, expected_groups
from harness import PIPELINE_GROUPS, Clarion, inbox, launch, wait_outbox_relayed

from clarion_devstack.drain import wait_drained
from clarion_devstack.observer import LatencyObserver, dev_token
from clarion_devstack.replay.client import ReplayClient, replay
from clarion_devstack.replay.sources import read_events
from clarion_devstack.stack import StackInfo

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(900)]


def dev_key() -> str:
    from clarion_kit.auth import dev_api_key
    from clarion_kit.settings import ServiceSettings

    return dev_api_key(ServiceSettings(environment="test"))


def expected_by_user(groups: list[Group]) -> dict[str, Counter[tuple[str, str, int, int]]]:
    by_user: dict[str, Counter[tuple[str, str, int, int]]] = defaultdict(Counter)
    for g in groups:
        by_user[g.recipient][(g.type, g.object_ref, len(g.actors), g.events)] += 1
    return by_user


async def check_inbox(clarion: Clarion, groups: list[Group]) -> None:
    want = expected_by_user(groups)
    async with httpx.AsyncClient(base_url=clarion.api, timeout=30) as client:
        semaphore = asyncio.Semaphore(8)

        async def one(user: str) -> tuple[str, list[dict[str, object]], dict[str, object]]:
            async with semaphore:
                token = dev_token(user)
                items = await inbox(client, token)
                counts = await client.get(
                    "/v1/me/notifications/counts", headers={"Authorization": f"Bearer {token}"}
                )
                assert counts.status_code == 200, counts.text
                return user, items, counts.json()

        results = await asyncio.gather(*(one(user) for user in want))
    mismatched = []
    for user, items, counts in results:
        ids = [item["id"] for item in items]
        assert len(ids) == len(set(ids)), f"{user}: a notification appears twice"
        got = Counter(
            (
                str(item["type"]),
                f"{item['object']['type']}:{item['object']['id']}",  # type: ignore[index]
                int(item["actor_count"]),  # type: ignore[arg-type]
                int(item["version"]),  # type: ignore[arg-type]
            )
            for item in items
        )
        if got != want[user]:
            mismatched.append((user, want[user] - got, got - want[user]))
        assert counts["total"] == len(items)
        assert counts["unread"] == sum(1 for item in items if not item["read"]) == len(items)
    assert not mismatched, f"{len(mismatched)} inboxes differ, e.g. {mismatched[:3]}"


def check_frames(observer: LatencyObserver, groups: list[Group], *, strict: bool) -> None:
    final_versions: dict[str, Counter[tuple[str, str]]] = defaultdict(Counter)
    for g in groups:
        final_versions[g.recipient][(g.type, g.object_ref)] += 1
    for user, frames in observer.seen.items():
        versions: dict[str, list[int]] = defaultdict(list)
        for frame in frames:
            versions[frame.notification_id].append(frame.version)
        expected_finals = sorted(g.events for g in groups if g.recipient == user)
        assert len(versions) == len(expected_finals), f"{user}: notifications seen differ"
        got_finals = sorted(v[-1] for v in versions.values())
        assert got_finals == expected_finals, f"{user}: final versions differ"
        for notification_id, seen in versions.items():
            assert seen == sorted(set(seen)), (
                f"{user} {notification_id}: {seen} repeats or reorders"
            )
            if strict:
                assert seen == list(range(1, seen[-1] + 1)), f"{user}: versions missing: {seen}"


async def run_replay(clarion: Clarion, hour_file: Path, on_third: object = None) -> None:
    events = list(read_events(hour_file))
    async with ReplayClient(clarion.api, dev_key()) as client:
        await client.ensure_profiles({r for e in events for r in e.recipients or []})
        third = len(events) // 3
        await replay(events[:third], client, batch_size=100)
        if on_third is not None:
            await on_third()  # type: ignore[operator]
        await replay(events[third:], client, batch_size=100)
    await wait_outbox_relayed(clarion.info.database_url)
    await wait_drained(
        clarion.info.kafka_bootstrap_servers,
        topic_prefix=clarion.topic_prefix,
        timeout=600,
        expect=PIPELINE_GROUPS,
    )


async def test_replayed_hour_gives_exactly_the_expected_notifications(
    devstack: StackInfo, tmp_path: Path, hour_file: Path
) -> None:
    groups = expected_groups(hour_file)
    busiest = [u for u, _ in Counter(g.recipient for g in groups).most_common(20)]
    async with launch(devstack, tmp_path) as clarion:
        observer = LatencyObserver(clarion.gateway(), busiest)
        await observer.start()
        await run_replay(clarion, hour_file)
        await asyncio.sleep(1.0)
        await observer.stop()
        await check_inbox(clarion, groups)
        check_frames(observer, groups, strict=True)


@pytest.mark.xfail(
    strict=False,
    reason=(
        "known intermittent failure under investigation: after kill -9 the restarted "
        "aggregator was once seen in a Stable consumer group of the embedded broker with "
        "no partition assigned, consuming nothing (the drain wait then times out); the "
        "same kill in `make chaos` kill-services was exact in every run"
    ),
)
async def test_killing_aggregator_and_a_gateway_mid_replay_changes_nothing(
    devstack: StackInfo, tmp_path: Path, hour_file: Path
) -> None:
    groups = expected_groups(hour_file)
    busiest = [u for u, _ in Counter(g.recipient for g in groups).most_common(20)]
    async with launch(devstack, tmp_path, gateways=2) as clarion:
        observer = LatencyObserver(clarion.gateway(second=True), busiest)
        await observer.start()

        async def crash() -> None:
            await clarion.supervisor.kill("aggregator", signal.SIGKILL)
            await clarion.supervisor.kill("realtime-gateway-b", signal.SIGKILL)
            # The supervisor restarts both; wait until they answer again.
            await asyncio.sleep(1.5)
            await clarion.supervisor.wait_ready("aggregator", timeout=120)
            await clarion.supervisor.wait_ready("realtime-gateway-b", timeout=120)

        await run_replay(clarion, hour_file, on_third=crash)
        await asyncio.sleep(1.0)
        await observer.stop()
        await check_inbox(clarion, groups)
        check_frames(observer, groups, strict=False)
