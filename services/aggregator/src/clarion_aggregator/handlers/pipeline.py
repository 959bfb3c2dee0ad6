"""The aggregation pipeline: domain events in, notifications and delivery requests out.

For a batch of domain events, in arrival order:

1. recipients: the event's ``recipients``, or every known user / a segment's
   members for an ``audience`` (fanned out in batches); never the actor;
2. preferences: mutes and per-category channel switches
   (:func:`clarion_aggregator.domain.routing.route`), with presence and quiet hours;
3. aggregation: one atomic Redis Lua call per (recipient, event), pipelined
   (:class:`~clarion_aggregator.adapters.redis_store.RedisStateStore`);
4. rendering and routing of the resulting notification version;
5. every record handed to the producer and digest items buffered in Redis; the
   broker's acknowledgements of all records are awaited before returning.

The caller commits the consumed offsets only after :meth:`Pipeline.process`
returned. A redelivered event is a duplicate in step 3 and re-publishes the
notification's CURRENT version (and its push / immediate email when that
version had one, with the same request ids), so a crash between the Redis update
and the produce loses nothing and downstream upserts by (id, version) keep
users from seeing duplicates.
"""

from __future__ import annotations

import asyncio
import base64
import json
import uuid
from collections import Counter
from collections.abc import Awaitable, Sequence
from dataclasses import dataclass
from typing import Any

import orjson

from clarion_aggregator.adapters.kafka import KafkaPublisher, OutRecord
from clarion_aggregator.adapters.redis_store import (
    AggregateInput,
    DigestEntry,
    GroupSnapshot,
    RedisStateStore,
    UserContext,
)
from clarion_aggregator.domain.clock import Clock, from_ms, to_ms
from clarion_aggregator.domain.grouping import Outcome, group_key, notification_id
from clarion_aggregator.domain.rendering import Rendered, Renderer, with_web_link
from clarion_aggregator.domain.routing import EmailMode, Routing, route
from clarion_aggregator.domain.rules import AggregationRule, RuleSet
from clarion_aggregator.metrics import AggregatorMetrics
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.base import Priority
from clarion_contracts.registry import EMAIL_REQUESTS, NOTIFICATIONS, PUSH_REQUESTS
from clarion_contracts.v1 import (
    DomainEvent,
    EmailItem,
    EmailKind,
    EmailRequest,
    Notification,
    PushRequest,
)
from clarion_kit.tracing import extract, inject

_URGENCY = {
    Priority.LOW: "low",
    Priority.NORMAL: "normal",
    Priority.HIGH: "high",
    Priority.URGENT: "high",
}


def event_priority(event: DomainEvent, rule: AggregationRule) -> Priority:
    """The event's own priority when it set one, else the rule's."""
    return event.priority if "priority" in event.model_fields_set else rule.priority


def push_topic(nid: str) -> str:
    """RFC 8030 Topic for a notification: its UUID bytes in unpadded base64url (22 chars)."""
    try:
        raw = uuid.UUID(nid).bytes
    except ValueError:
        raw = nid.encode()[:24]
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")[:32]


@dataclass
class BatchResult:
    """What one :meth:`Pipeline.process` call did (counts)."""

    pairs: int = 0
    suppressed: int = 0
    created: int = 0
    updated: int = 0
    duplicates: int = 0
    notifications: int = 0
    pushes: int = 0
    emails: int = 0
    digest_items: int = 0


@dataclass(frozen=True)
class _Pair:
    event: DomainEvent
    recipient_id: str
    rule: AggregationRule
    priority: Priority
    routing: Routing
    user: UserContext


class Pipeline:
    """Turns domain events into notifications, push requests, emails and digest items.

    Args:
        settings: throttle, TTLs, batch sizes and topic names.
        store: Redis state.
        publisher: Kafka producer side.
        rules: aggregation rules.
        renderer: templates.
        clock: wall time (routing, throttles, created/updated times).
        metrics: Prometheus counters.
    """

    def __init__(
        self,
        settings: AggregatorSettings,
        store: RedisStateStore,
        publisher: KafkaPublisher,
        rules: RuleSet,
        renderer: Renderer,
        clock: Clock,
        metrics: AggregatorMetrics | None = None,
    ) -> None:
        self.settings = settings
        self.store = store
        self.publisher = publisher
        self.rules = rules
        self.renderer = renderer
        self.clock = clock
        self.metrics = metrics or AggregatorMetrics.create()
        self._trace: dict[Any, dict[str, str]] = {}
        self._acks: list[Awaitable[Any]] = []
        self._contexts: dict[tuple[Any, Priority], str] = {}
        self._renders: dict[tuple[Any, ...], Rendered] = {}
        # Metric increments are tallied per batch: a labelled Prometheus child lookup
        # per record costs more than the counting itself.
        self._tally: Counter[tuple[str, str]] = Counter()
        self._topics = {
            "notifications": settings.topic(NOTIFICATIONS),
            "push": settings.topic(PUSH_REQUESTS),
            "email": settings.topic(EMAIL_REQUESTS),
        }

    def _context_json(self, event: DomainEvent, priority: Priority) -> str:
        key = (event.event_id, priority)
        cached = self._contexts.get(key)
        if cached is None:
            cached = self._contexts[key] = context_json(event, priority)
        return cached

    async def process(
        self, events: Sequence[DomainEvent], headers: Sequence[Any] | None = None
    ) -> BatchResult:
        """Process events in order; returns counts. Raises what Redis or Kafka raise.

        ``headers``: the Kafka headers of each event's record (same order); the records
        an event produces continue its W3C trace (``traceparent``).

        Direct recipients of consecutive events share one Redis pipeline and one
        produce round; an audience event is fanned out in batches of
        ``settings.fanout_batch_size`` recipients.
        """
        total = BatchResult()
        self._acks = []
        self._trace = {
            e.event_id: _trace_headers(h) for e, h in zip(events, headers or (), strict=False)
        }
        self._tally.clear()
        self._tally.update(("events", e.type) for e in events)
        try:
            await self._process(events, total)
        finally:
            self._flush_metrics()
        acks, self._acks = self._acks, []
        if acks:
            await asyncio.gather(*acks)
        return total

    def _flush_metrics(self) -> None:
        m = self.metrics
        children = {
            "events": m.events,
            "suppressed": m.suppressed,
            "groups": m.groups,
            "notifications": m.notifications,
            "emails": m.emails,
        }
        for (name, label), count in self._tally.items():
            if name == "pushes":
                m.pushes.inc(count)
            else:
                children[name].labels(label).inc(count)
        self._tally.clear()

    async def _process(self, events: Sequence[DomainEvent], total: BatchResult) -> None:
        pending: list[tuple[DomainEvent, str]] = []
        for event in events:
            if event.audience is None:
                for rid in dict.fromkeys(event.recipients or ()):
                    if rid != event.actor.id:
                        pending.append((event, rid))
                continue
            await self._run(pending, total)
            pending = []
            segment = None if event.audience.all else event.audience.segment
            async for batch in self.store.audience(
                segment=segment, batch_size=self.settings.fanout_batch_size
            ):
                await self._run([(event, r) for r in batch if r != event.actor.id], total)
        await self._run(pending, total)

    async def _run(self, pairs: list[tuple[DomainEvent, str]], total: BatchResult) -> None:
        if not pairs:
            return
        now = self.clock.now()
        now_ms = to_ms(now)
        # A broadcast's recipients share one context and, per locale, one rendering.
        self._contexts = {}
        self._renders = {}
        users = await self.store.load_contexts(rid for _, rid in pairs)
        routed: list[_Pair] = []
        inputs: list[AggregateInput] = []
        throttle_ms = int(self.settings.push_throttle_seconds * 1000)
        for event, rid in pairs:
            rule = self.rules.for_type(event.type)
            priority = event_priority(event, rule)
            user = users[rid]
            routing = route(
                rule=rule,
                priority=priority,
                object_ref=event.object.ref,
                prefs=user.prefs,
                profile_timezone=user.timezone,
                online=user.online,
                now=now,
            )
            total.pairs += 1
            if routing.suppressed:
                total.suppressed += 1
                self._tally["suppressed", event.type] += 1
                continue
            event_id = str(event.event_id)
            routed.append(_Pair(event, rid, rule, priority, routing, user))
            inputs.append(
                AggregateInput(
                    recipient_id=rid,
                    event_type=event.type,
                    object_ref=event.object.ref,
                    event_id=event_id,
                    occurred_ms=to_ms(event.occurred_at),
                    window_ms=rule.window_ms,
                    max_actors=rule.max_actors,
                    actor=[
                        event.actor.id,
                        event.actor.name,
                        str(event.actor.avatar_url) if event.actor.avatar_url else None,
                    ],
                    candidate_id=notification_id(rid, event.type, event.object.ref, event_id),
                    now_ms=now_ms,
                    context=self._context_json(event, priority),
                    alert_wanted=routing.push or routing.email is EmailMode.IMMEDIATE,
                    throttle_ms=throttle_ms,
                    ttl_seconds=self.settings.state_ttl_seconds,
                )
            )
        snapshots = await self.store.aggregate_many(inputs)
        records: list[OutRecord] = []
        digests: list[DigestEntry] = []
        for pair, snap in zip(routed, snapshots, strict=True):
            if snap is None:
                total.duplicates += 1
                continue
            self._emit(pair, snap, now_ms, records, digests, total)
        # Acknowledgements are awaited at the end of process(), so a fan-out's next
        # batch is aggregated while the broker acknowledges this one.
        self._acks.extend(await self.publisher.send_many(records))
        await self.store.add_digest_items(digests)
        total.digest_items += len(digests)

    def _emit(
        self,
        pair: _Pair,
        snap: GroupSnapshot,
        now_ms: int,
        records: list[OutRecord],
        digests: list[DigestEntry],
        total: BatchResult,
    ) -> None:
        if snap.outcome is Outcome.CREATED:
            total.created += 1
        elif snap.outcome is Outcome.UPDATED:
            total.updated += 1
        else:
            total.duplicates += 1
        self._tally["groups", snap.outcome.value] += 1
        rid = pair.recipient_id
        ctx = snap.context
        priority = Priority(ctx.get("priority", pair.priority))
        rule = pair.rule
        routing = pair.routing
        shown = snap.actors[: rule.max_actors]
        names = tuple(a[1] for a in shown)
        render_key = (rule.template, pair.user.locale, names, snap.actor_count, snap.context_json)
        rendered = self._renders.get(render_key)
        if rendered is None:
            rendered = self.renderer.render(
                rule.template,
                pair.user.locale,
                actor_names=names,
                actor_count=snap.actor_count,
                obj=ctx["object"],
                data=ctx.get("data") or {},
                priority=priority.value,
            )
            self._renders[render_key] = rendered
        created_at = from_ms(snap.created_ms)
        updated_at = from_ms(snap.updated_ms)
        obj = with_web_link(ctx["object"])
        nid = snap.notification_id
        trace_headers = self._trace.get(pair.event.event_id) or None
        if routing.in_app:
            note = Notification.model_validate(
                {
                    "notification_id": nid,
                    "version": snap.version,
                    "recipient_id": rid,
                    "type": pair.event.type,
                    "category": rule.category,
                    "group_key": group_key(
                        rid, pair.event.type, f"{obj['type']}:{obj['id']}", snap.first_occurred_ms
                    ),
                    "object": obj,
                    "actors": [
                        {"id": a[0], "name": a[1], "avatar_url": a[2] if len(a) > 2 else None}
                        for a in shown
                    ],
                    "actor_count": snap.actor_count,
                    "event_ids": snap.event_ids,
                    "title": rendered.title,
                    "body": rendered.body,
                    "body_html": rendered.body_html,
                    "url": obj.get("url"),
                    "priority": priority,
                    "channels": routing.channels,
                    "created_at": created_at,
                    "updated_at": updated_at,
                    "first_occurred_at": from_ms(snap.first_occurred_ms),
                    "last_occurred_at": from_ms(snap.last_occurred_ms),
                    "ingested_at": ctx.get("ingested_at"),
                    "data": ctx.get("data") or {},
                    "tenant_id": ctx.get("tenant_id"),
                }
            )
            records.append(
                OutRecord(self._topics["notifications"], rid, note.to_bytes(), trace_headers)
            )
            total.notifications += 1
            self._tally["notifications", pair.event.type] += 1
        alert_due = snap.alert_version == snap.version
        if routing.push and alert_due:
            icon = shown[0][2] if shown and len(shown[0]) > 2 else None
            push = PushRequest.model_validate(
                {
                    "request_id": f"{nid}:{snap.version}:push",
                    "notification_id": nid,
                    "version": snap.version,
                    "recipient_id": rid,
                    "type": pair.event.type,
                    "category": rule.category,
                    "title": rendered.title,
                    "body": rendered.body,
                    "url": obj.get("url"),
                    "icon": icon,
                    "priority": priority,
                    "urgency": _URGENCY[priority],
                    "ttl_seconds": self.settings.push_ttl_seconds,
                    "topic": push_topic(nid),
                    "created_at": updated_at,
                    "not_before": routing.not_before,
                }
            )
            records.append(OutRecord(self._topics["push"], rid, push.to_bytes(), trace_headers))
            total.pushes += 1
            self._tally["pushes", ""] += 1
        if routing.email is EmailMode.NONE:
            return
        item = EmailItem.model_validate(
            {
                "notification_id": nid,
                "version": snap.version,
                "type": pair.event.type,
                "category": rule.category,
                "title": rendered.title,
                "body": rendered.body,
                "body_html": rendered.body_html,
                "url": obj.get("url"),
                "actor_count": snap.actor_count,
                "occurred_at": from_ms(snap.last_occurred_ms),
            }
        )
        if routing.email is EmailMode.IMMEDIATE:
            if not alert_due:
                return
            email = EmailRequest(
                request_id=f"{nid}:{snap.version}:email",
                recipient_id=rid,
                kind=EmailKind.IMMEDIATE,
                category=rule.category,
                items=[item],
                created_at=updated_at,
                not_before=routing.not_before,
            )
            records.append(OutRecord(self._topics["email"], rid, email.to_bytes(), trace_headers))
            total.emails += 1
            self._tally["emails", "immediate"] += 1
        elif routing.digest is not None:
            digests.append(
                DigestEntry(
                    recipient_id=rid,
                    period_key=routing.digest.key,
                    period_start_ms=to_ms(routing.digest.start),
                    due_ms=to_ms(routing.digest.end),
                    notification_id=nid,
                    item_json=item.model_dump_json(),
                )
            )


_W3C_KEYS = frozenset({"traceparent", "tracestate"})


def _trace_headers(carrier: Any) -> dict[str, str]:
    """The W3C Trace Context headers continuing ``carrier``'s trace (``{}``: none)."""
    # The subscriber hands over the carriers clarion_kit.tracing.continue_traces just
    # injected: already canonical, so they are copied instead of parsed and re-injected.
    if (
        isinstance(carrier, dict)
        and "traceparent" in carrier
        and carrier.keys() <= _W3C_KEYS
        and all(type(v) is str for v in carrier.values())
    ):
        return dict(carrier)
    return inject({}, extract(carrier))


def context_json(event: DomainEvent, priority: Priority) -> str:
    """The group context stored with each version: the event's object, data, priority,
    tenant and ingested_at, as JSON."""
    context: dict[str, Any] = {
        "object": event.object.model_dump(mode="json"),
        "data": event.data,
        "priority": priority.value,
        "tenant_id": event.tenant_id,
        "ingested_at": event.ingested_at.isoformat() if event.ingested_at else None,
    }
    try:
        return orjson.dumps(context, default=str).decode()
    except TypeError:
        # orjson refuses integers beyond 64 bits, which JSON event data may hold.
        return json.dumps(context, default=str)
