"""The batch consumers' failure handling, without a broker or database.

Poison records go to the dead-letter function, transient failures are retried
with backoff, and a batch the database refuses is split so only the refused
record is dead-lettered. The happy path runs on the embedded stack in
``test_inbox_api.py``.
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy.exc import DBAPIError, OperationalError

from clarion_contracts.v1 import Notification
from clarion_ingest.adapters.consumers import Backoff, InboxProjector, refused_by_database

AT = datetime(2026, 11, 24, 10, 0, tzinfo=UTC)


class _Orig(Exception):
    def __init__(self, sqlstate: str) -> None:
        super().__init__(f"sqlstate {sqlstate}")
        self.sqlstate = sqlstate


def db_error(sqlstate: str) -> DBAPIError:
    return DBAPIError("INSERT ...", {}, _Orig(sqlstate))


@dataclass
class Rec:
    value: bytes | None
    offset: int
    topic: str = "t.clarion.notifications.v1"
    partition: int = 0
    key: bytes | None = b"bob"
    headers: Any = field(default_factory=list)


def note(nid: str) -> Notification:
    return Notification(
        notification_id=nid,
        version=1,
        recipient_id="bob",
        type="post.liked",
        category="social",
        group_key=f"bob|post.liked|post:{nid}|0",
        object={"type": "post", "id": nid},
        actors=[{"id": "alice", "name": "Alice"}],
        actor_count=1,
        event_ids=[uuid.uuid4()],
        title=nid,
        body="b",
        body_html="<p>b</p>",
        channels=["in_app"],
        created_at=AT,
        updated_at=AT,
        first_occurred_at=AT,
        last_occurred_at=AT,
    )


class Harness:
    """An :class:`InboxProjector` whose apply step is scripted."""

    def __init__(self, failures: list[BaseException]) -> None:
        self.failures = failures
        self.applied: list[list[str]] = []
        self.dead: list[tuple[int, str]] = []
        self.slept: list[float] = []

        async def dead_letter(record: Any, exc: BaseException) -> None:
            self.dead.append((record.offset, type(exc).__name__))

        async def sleep(seconds: float) -> None:
            self.slept.append(seconds)

        self.projector = InboxProjector(
            engine=None,  # type: ignore[arg-type]
            counts=None,  # type: ignore[arg-type]
            service="ingest-api-test",
            dead_letter=dead_letter,
            backoff=Backoff(initial_seconds=0.1, max_seconds=0.3),
            sleep=sleep,
        )

    async def apply(self, batch: Sequence[Notification]) -> None:
        ids = [n.notification_id for n in batch]
        if self.failures:
            raise self.failures.pop(0)
        if "refused" in ids and len(ids) == 1:
            raise db_error("22021")
        if "refused" in ids:
            raise db_error("22P05")
        self.applied.append(ids)

    async def run(self, records: list[Rec]) -> None:
        await self.projector._consume(records, Notification, self.apply, "notifications")


async def test_poison_records_are_dead_lettered_and_the_rest_applied_once() -> None:
    h = Harness([])
    await h.run(
        [
            Rec(note("a").to_bytes(), 0),
            Rec(b"{broken", 1),
            Rec(None, 2),
            Rec(b'{"schema_version": 1}', 3),
            Rec(note("b").to_bytes(), 4),
        ]
    )
    assert h.applied == [["a", "b"]]
    assert h.dead == [(1, "ValidationError"), (2, "ValueError"), (3, "ValidationError")]
    assert h.slept == []


async def test_transient_failures_are_retried_with_capped_backoff() -> None:
    lost = OperationalError("INSERT ...", {}, _Orig("08006"))
    h = Harness([lost, lost, lost, ConnectionResetError("reset")])
    await h.run([Rec(note("a").to_bytes(), 0)])
    assert h.slept == [0.1, 0.2, 0.3, 0.3]
    assert h.applied == [["a"]]
    assert h.dead == []


async def test_a_refused_batch_is_split_and_only_the_refused_record_dead_lettered() -> None:
    h = Harness([])
    await h.run(
        [
            Rec(note("a").to_bytes(), 0),
            Rec(note("refused").to_bytes(), 1),
            Rec(note("c").to_bytes(), 2),
        ]
    )
    assert h.applied == [["a"], ["c"]]
    assert h.dead == [(1, "DBAPIError")]


async def test_without_a_dead_letter_producer_a_poison_record_fails_the_batch() -> None:
    projector = InboxProjector(None, None, "ingest-api-test")  # type: ignore[arg-type]

    async def apply(batch: Sequence[Notification]) -> None:
        raise AssertionError("nothing may be applied")

    with pytest.raises(RuntimeError, match="no dead-letter producer"):
        await projector._consume([Rec(b"{", 0)], Notification, apply, "notifications")


@pytest.mark.parametrize(
    ("sqlstate", "refused"),
    [("22021", True), ("23505", True), ("54000", True), ("40001", False), ("08006", False)],
)
def test_refused_by_database_means_the_data_itself(sqlstate: str, refused: bool) -> None:
    assert refused_by_database(db_error(sqlstate)) is refused


def test_errors_other_than_database_errors_are_transient() -> None:
    assert refused_by_database(ValueError("x")) is False
    assert refused_by_database(ConnectionResetError()) is False


def test_backoff_doubles_up_to_its_cap() -> None:
    backoff = Backoff(initial_seconds=0.2, max_seconds=1.0)
    assert [backoff.delay(n) for n in range(1, 6)] == [0.2, 0.4, 0.8, 1.0, 1.0]
