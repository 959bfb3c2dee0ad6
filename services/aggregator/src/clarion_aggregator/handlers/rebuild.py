"""Detecting the loss of Redis state and rebuilding it from durable topics.

Redis holds the aggregator's state as a cache: materialised preferences,
profiles and presence come from their topics, and aggregation groups and dedup
keys are derivable from ``clarion.notifications.v1``, the aggregator's own output
(:mod:`clarion_aggregator.domain.rebuild`). The marker key ``P state`` says the
cache is complete; the aggregation script refuses to run without it
(:class:`~clarion_aggregator.adapters.redis_store.StateLost`), so an event is
never aggregated on empty state and a redelivery never looks new.

:meth:`StateRebuilder.ensure` runs at start-up and whenever the pipeline meets
:class:`StateLost`. Domain-event consumption waits meanwhile (the batch's
handler is the one awaiting it). One instance rebuilds under the lock
``P state:lock``; the others wait for the marker:

1. wait ``rebuild_settle_seconds`` so that records other instances were producing
   when Redis was lost reach the topic before its end is taken;
2. re-read ``clarion.preferences.v1``, ``clarion.user-profiles.v1`` and
   ``clarion.presence.v1`` from their beginning into Redis;
3. read ``clarion.notifications.v1`` from ``now - rebuild_lookback_seconds`` (by
   record timestamp) to its end and write back groups, open pointers and dedup keys;
4. write the marker with a new random state epoch, only if the lock is still ours
   (else Redis lost data again meanwhile: start over).

Redelivered domain events (consumed after the last offset commit) then dedup
against the rebuilt ``seen:`` keys, or join the rebuilt groups with the next version.

Digest buffers are rebuilt from the same read: the latest version of each
notification routed to a digest (email channel, priority low or normal) goes back
into the digest of the period it was routed to, when that digest is not due yet
(:func:`~clarion_aggregator.domain.rebuild.restore_digest_items`). Items of digests
already due are left out and counted in
``clarion_aggregator_rebuild_digest_items_unrestored_total``: they were sent, unless
Redis lost them within the last flusher interval before their due time.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from typing import Any, TypeVar

from pydantic import ValidationError

from clarion_aggregator.adapters.rebuild_store import RebuildStore
from clarion_aggregator.adapters.redis_store import DigestEntry, RedisStateStore, StateLost
from clarion_aggregator.adapters.topic_scan import scan_topic
from clarion_aggregator.domain.clock import Clock, to_ms
from clarion_aggregator.domain.rebuild import StateRebuild, restore_digest_items
from clarion_aggregator.handlers.pipeline import BatchResult, Pipeline
from clarion_aggregator.metrics import AggregatorMetrics
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.base import ContractModel
from clarion_contracts.registry import NOTIFICATIONS, PREFERENCES, PRESENCE, USER_PROFILES
from clarion_contracts.v1 import (
    DomainEvent,
    Notification,
    Preferences,
    PresenceEvent,
    UserProfile,
)
from clarion_kit.logging import get_logger

log = get_logger(__name__)
M = TypeVar("M", bound=ContractModel)

POLL_SECONDS = 0.1
"""How often an instance waiting for another one's rebuild looks at the marker."""


class StateRebuilder:
    """Makes sure Redis holds complete aggregation state before events are aggregated.

    Args:
        settings: topics, lookback, settle time, lock lease, state TTL.
        store: the aggregator's Redis state (materialised users and presence).
        rebuild_store: marker, lock and bulk restore.
        clock: wall time (lookback start, marker time).
        metrics: rebuild counters.
    """

    def __init__(
        self,
        settings: AggregatorSettings,
        store: RedisStateStore,
        rebuild_store: RebuildStore,
        clock: Clock,
        metrics: AggregatorMetrics,
    ) -> None:
        self.settings = settings
        self.store = store
        self.rebuild_store = rebuild_store
        self.clock = clock
        self.metrics = metrics
        self._running: asyncio.Lock = asyncio.Lock()

    async def ensure(self) -> bool:
        """Return once the state marker exists; rebuild first when it is missing.

        Also hands the marker's state epoch to the store, whose aggregation calls
        then refuse to run on another generation of the state.

        Returns True when this call rebuilt the state. Concurrent calls in one
        process share one rebuild.

        Raises:
            redis.RedisError / aiokafka.errors.KafkaError: a store failed (the lock is
                released; the caller retries).
        """
        async with self._running:
            rebuilt = False
            while (marker := await self.rebuild_store.marker()) is None:
                token = uuid.uuid4().hex
                lease_ms = int(self.settings.rebuild_lock_seconds * 1000)
                if not await self.rebuild_store.acquire(token, lease_ms):
                    await self._wait_for_other()
                    continue
                try:
                    rebuilt = await self._rebuild(token, lease_ms) or rebuilt
                except BaseException:
                    await asyncio.shield(self._release_quietly(token))
                    raise
            # From now on the aggregation script refuses to run on any other generation
            # of the state (see AGGREGATE_LUA).
            self.store.state_epoch = marker["epoch"]
            return rebuilt

    async def _release_quietly(self, token: str) -> None:
        try:
            await self.rebuild_store.release(token)
        except Exception:  # Redis down: the lease expires by itself
            log.warning("rebuild_lock_release_failed")

    async def _wait_for_other(self) -> None:
        log.info("state_rebuild_waiting")
        while await self.rebuild_store.marker() is None:
            if not await self.rebuild_store.lock_held():
                return  # the rebuilder gave up or died: take over
            await asyncio.sleep(POLL_SECONDS)

    async def _rebuild(self, token: str, lease_ms: int) -> bool:
        started = time.perf_counter()
        log.warning("state_rebuild_started", instance=self.settings.instance_id)
        await asyncio.sleep(self.settings.rebuild_settle_seconds)
        users = await self._materialise(token, lease_ms)
        fold = StateRebuild()
        since_ms = to_ms(self.clock.now()) - int(self.settings.rebuild_lookback_seconds * 1000)
        async for records in scan_topic(
            self.settings, self.settings.topic(NOTIFICATIONS), since_ms=since_ms
        ):
            for rec in records:
                note = _parse(Notification, rec.value)
                if note is not None:
                    fold.add(note)
            await self.rebuild_store.extend(token, lease_ms)
        state = fold.result()
        await self.rebuild_store.restore(state, self.settings.state_ttl_seconds)
        digests, past_due = await self._restore_digests(fold)
        epoch = await self.rebuild_store.finish(token, to_ms(self.clock.now()))
        if epoch is None:
            log.warning("state_rebuild_lost_lock")
            return False
        self.metrics.digest_items_unrestored.inc(past_due)
        self.metrics.rebuilds.inc()
        log.warning(
            "state_rebuilt",
            epoch=epoch,
            users=users,
            versions_read=fold.versions_read,
            groups=len(state.groups),
            dedup_keys=len(state.seen),
            digest_items=digests,
            digest_items_past_due=past_due,
            seconds=round(time.perf_counter() - started, 3),
        )
        return True

    async def _restore_digests(self, fold: StateRebuild) -> tuple[int, int]:
        candidates = fold.digest_candidates()
        if not candidates:
            return 0, 0
        users = await self.store.load_contexts(n.recipient_id for n in candidates)
        items, past_due = restore_digest_items(
            candidates,
            {uid: ctx.prefs for uid, ctx in users.items()},
            {uid: ctx.timezone for uid, ctx in users.items()},
            self.clock.now(),
        )
        await self.store.add_digest_items(
            [
                DigestEntry(
                    recipient_id=it.recipient_id,
                    period_key=it.period.key,
                    period_start_ms=to_ms(it.period.start),
                    due_ms=to_ms(it.period.end),
                    notification_id=it.item.notification_id,
                    item_json=it.item.model_dump_json(),
                )
                for it in items
            ]
        )
        return len(items), past_due

    async def _materialise(self, token: str, lease_ms: int) -> int:
        count = 0
        for spec in (PREFERENCES, USER_PROFILES, PRESENCE):
            async for records in scan_topic(self.settings, self.settings.topic(spec)):
                await self.rebuild_store.extend(token, lease_ms)
                if spec is PREFERENCES:
                    prefs = [p for r in records if (p := _parse(Preferences, r.value))]
                    await self.store.put_preferences_many(prefs)
                    count += len(prefs)
                elif spec is USER_PROFILES:
                    profiles = [u for r in records if (u := _parse(UserProfile, r.value))]
                    await self.store.put_profiles(profiles)
                    count += len(profiles)
                else:
                    for rec in records:
                        event = _parse(PresenceEvent, rec.value)
                        if event is not None:
                            await self.store.put_presence(event)
        return count


async def process_rebuilding(
    pipeline: Pipeline,
    rebuilder: StateRebuilder | None,
    events: Sequence[DomainEvent],
    headers: Sequence[Any] | None = None,
) -> BatchResult:
    """:meth:`Pipeline.process`, waiting for a rebuild and trying again whenever the
    state turns out lost (what the domain-event subscriber runs for each batch).

    Raises:
        StateLost: without a ``rebuilder``.
        Exception: what :meth:`Pipeline.process` or the rebuild raise otherwise.
    """
    while True:
        try:
            return await pipeline.process(events, headers)
        except StateLost:
            if rebuilder is None:
                raise
            # Consumption of domain events waits here until the state is back.
            log.warning("state_lost", events=len(events))
            await rebuilder.ensure()


def _parse(model: type[M], value: Any) -> M | None:
    # Invalid records went to the DLQ when they were first consumed; tombstones are skipped.
    if value is None:
        return None
    try:
        return model.from_bytes(value)
    except (ValidationError, ValueError):
        return None
