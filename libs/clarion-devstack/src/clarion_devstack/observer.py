"""WebSocket clients that watch users' live frames and measure delivery latency.

One client per watched user connects to the realtime-gateway with a development
token (``{"type":"connect","token":...,"since":null}``, see
docs/gateway-protocol.md) and records every ``notification.created`` /
``notification.updated`` frame. Latency is the frame's arrival time minus the
notification's ``ingested_at`` (when ingest-api accepted the domain event), on
this machine's wall clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import websockets

NOTIFICATION_FRAMES = ("notification.created", "notification.updated")


@dataclass(frozen=True)
class SeenFrame:
    """One notification frame a watched user received."""

    user: str
    frame_type: str
    notification_id: str
    version: int
    actor_count: int
    offset: str
    received_at: float


def percentile(values: list[float], q: float) -> float | None:
    """The ``q`` quantile (0..1) of ``values`` by the nearest-rank method; None when empty."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(0, min(len(ordered) - 1, round(q * len(ordered) + 0.5) - 1))
    return ordered[rank]


def dev_token(user: str) -> str:
    """A development JWT for ``user`` signed with the configured (or dev) secret."""
    from clarion_kit.auth import issue_token
    from clarion_kit.settings import ServiceSettings

    return issue_token(ServiceSettings(), subject=user)


class LatencyObserver:
    """Connect one WebSocket session per user and collect their notification frames.

    Args:
        gateway_url: ``ws://host:port/v1/ws``.
        users: the user ids to watch.
        token_for: makes a JWT for a user (default :func:`dev_token`).
    """

    def __init__(self, gateway_url: str, users: Iterable[str], token_for: Any = dev_token) -> None:
        self._url = gateway_url
        self._users = list(users)
        self._token_for = token_for
        self._tasks: list[asyncio.Task[None]] = []
        self._ready: dict[str, asyncio.Event] = {u: asyncio.Event() for u in self._users}
        self.latencies_ms: list[float] = []
        self.seen: dict[str, list[SeenFrame]] = defaultdict(list)
        self.errors: list[str] = []
        #: Per user, how often a reconnect was answered ``recovered: false``: the client
        #: was told its history is gone and must refetch the inbox over REST.
        self.refetches: dict[str, int] = defaultdict(int)

    @property
    def frames(self) -> int:
        """Notification frames received so far, all users together."""
        return sum(len(v) for v in self.seen.values())

    async def start(self, timeout: float = 10.0) -> None:
        """Open every session and wait until each got its ``connected`` frame."""
        for user in self._users:
            self._tasks.append(asyncio.create_task(self._watch(user)))
        with contextlib.suppress(TimeoutError):
            async with asyncio.timeout(timeout):
                await asyncio.gather(*(e.wait() for e in self._ready.values()))

    async def _watch(self, user: str) -> None:
        since: str | None = None
        connected_before = False
        while True:
            try:
                async with websockets.connect(self._url, compression=None) as ws:
                    await ws.send(
                        json.dumps(
                            {"type": "connect", "token": self._token_for(user), "since": since}
                        )
                    )
                    async for raw in ws:
                        frame = json.loads(raw)
                        kind = frame.get("type")
                        if kind == "connected":
                            self._ready[user].set()
                            if connected_before and frame.get("recovered") is False:
                                self.refetches[user] += 1
                            connected_before = True
                        if "offset" in frame:
                            since = frame["offset"]
                        if kind in NOTIFICATION_FRAMES:
                            self._record(user, frame)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a gateway restart: reconnect with the last offset
                self.errors.append(f"{user}: {exc!r}")
                await asyncio.sleep(0.2)

    def _record(self, user: str, frame: dict[str, Any]) -> None:
        now = time.time()
        note = frame["notification"]
        self.seen[user].append(
            SeenFrame(
                user=user,
                frame_type=frame["type"],
                notification_id=note["notification_id"],
                version=int(note["version"]),
                actor_count=int(note["actor_count"]),
                offset=str(frame.get("offset")),
                received_at=now,
            )
        )
        ingested = note.get("ingested_at")
        if ingested:
            accepted = datetime.fromisoformat(ingested.replace("Z", "+00:00")).timestamp()
            self.latencies_ms.append((now - accepted) * 1000.0)

    def percentiles_ms(self) -> tuple[float | None, float | None]:
        """(p50, p99) of accepted -> frame latency in milliseconds so far."""
        return percentile(self.latencies_ms, 0.5), percentile(self.latencies_ms, 0.99)

    async def stop(self) -> None:
        """Close every session."""
        for task in self._tasks:
            task.cancel()
        for task in self._tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
