"""Batch handling: poison records go to the DLQ, failed batches are retried, never dropped."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from analytics_messages import make_notification
from prometheus_client import CollectorRegistry
from sqlalchemy.exc import DBAPIError, OperationalError

from clarion_analytics.adapters.postgres import Applied
from clarion_analytics.handlers.consume import BackoffPolicy, BatchHandler, refused_by_database
from clarion_analytics.handlers.metrics import AnalyticsMetrics
from clarion_contracts.registry import DOMAIN_EVENTS, NOTIFICATIONS


@dataclass
class Record:
    topic: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes | None
    headers: Any = ()


class FlakyRepo:
    """Fails the first ``failures`` calls, then applies."""

    def __init__(self, failures: int) -> None:
        self.failures = failures
        self.calls: list[list[Any]] = []

    async def apply_notifications(self, batch: Sequence[Any]) -> Applied:
        self.calls.append(list(batch))
        if len(self.calls) <= self.failures:
            raise ConnectionError("database unreachable")
        return Applied(applied=len(batch))


async def test_poison_is_dead_lettered_and_the_rest_applied_after_retries() -> None:
    repo = FlakyRepo(failures=3)
    dead: list[tuple[Record, str]] = []
    waits: list[float] = []

    async def dead_letter(record: Any, exc: BaseException) -> None:
        dead.append((record, type(exc).__name__))

    async def sleep(seconds: float) -> None:
        waits.append(seconds)

    registry = CollectorRegistry()
    handler = BatchHandler(
        repo,  # type: ignore[arg-type]
        dead_letter,
        AnalyticsMetrics(registry),
        BackoffPolicy(initial_seconds=0.5, max_seconds=1.5),
        sleep,
    )
    good = make_notification("n1").to_bytes()
    records = [
        Record("t", 0, 1, b"alice", good),
        Record("t", 0, 2, b"alice", b"{broken json"),
        Record("t", 0, 3, b"alice", None),
        Record("t", 0, 4, b"alice", good),
    ]
    applied = await handler.handle(NOTIFICATIONS, records)
    assert applied.applied == 2
    assert [(r.offset, name) for r, name in dead] == [(2, "ValidationError"), (3, "ValueError")]
    assert len(repo.calls) == 4  # three failures, then success, always the same batch
    assert all(len(call) == 2 for call in repo.calls)
    assert waits == [0.5, 1.0, 1.5]  # exponential, capped
    sample = registry.get_sample_value
    labels = {"topic": NOTIFICATIONS.name}
    assert sample("clarion_analytics_messages_total", {**labels, "outcome": "poison"}) == 2
    assert sample("clarion_analytics_messages_total", {**labels, "outcome": "applied"}) == 2
    failures = sample(
        "clarion_analytics_batch_failures_total", {**labels, "error_type": "ConnectionError"}
    )
    assert failures == 3


async def test_unknown_topic_is_a_programming_error() -> None:
    async def dead_letter(record: Any, exc: BaseException) -> None:
        raise AssertionError("not expected")

    handler = BatchHandler(FlakyRepo(0), dead_letter, AnalyticsMetrics(CollectorRegistry()))  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="does not consume"):
        await handler.handle(DOMAIN_EVENTS, [])


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(sqlstate)
        self.sqlstate = sqlstate


class RefusingRepo:
    """Refuses any batch holding notification ``bad`` (value out of range), as PostgreSQL
    would; fails once with a connection error first."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    async def apply_notifications(self, batch: Sequence[Any]) -> Applied:
        ids = [n.notification_id for n in batch]
        self.calls.append(ids)
        if len(self.calls) == 1:
            raise OperationalError("SELECT 1", {}, _Orig("08006"))  # connection failure
        if "bad" in ids:
            raise DBAPIError("INSERT", {}, _Orig("22003"))  # numeric value out of range
        return Applied(applied=len(batch))


async def test_refused_batch_is_split_and_only_the_refused_record_dead_lettered() -> None:
    repo = RefusingRepo()
    dead: list[int] = []

    async def dead_letter(record: Any, exc: BaseException) -> None:
        dead.append(record.offset)

    async def sleep(seconds: float) -> None:
        return None

    handler = BatchHandler(
        repo,  # type: ignore[arg-type]
        dead_letter,
        AnalyticsMetrics(CollectorRegistry()),
        sleep=sleep,
    )
    records = [
        Record("t", 0, offset, b"k", make_notification(nid).to_bytes())
        for offset, nid in enumerate(["a", "bad", "c"])
    ]
    applied = await handler.handle(NOTIFICATIONS, records)
    assert applied.applied == 2
    assert dead == [1]
    assert repo.calls == [["a", "bad", "c"], ["a", "bad", "c"], ["a"], ["bad"], ["c"]]


def test_only_data_errors_count_as_refused() -> None:
    assert refused_by_database(DBAPIError("x", {}, _Orig("23505")))
    assert refused_by_database(DBAPIError("x", {}, _Orig("54000")))
    assert not refused_by_database(OperationalError("x", {}, _Orig("40P01")))  # deadlock
    assert not refused_by_database(OperationalError("x", {}, _Orig("57P01")))  # shutdown
    assert not refused_by_database(ConnectionError("reset"))
