"""Aggregation groups: which notification a (recipient, domain event) pair lands in.

The rule, applied per recipient, in ARRIVAL order of events (the order the
aggregator consumes them, which is per-recipient order on the topic):

1. Dedup: an event id the recipient already has is ignored (no new version, no
   new actor); the notification it went into is re-published as it is now.
2. Group key: ``(recipient_id, event type, object ref "type:id")``. Each key has
   at most one OPEN group, the one created last.
3. Join or start: the event joins the open group when the rule's window is > 0 and
   ``event.occurred_at < group.first_occurred_at + window`` (event time, so a
   replay at any speed gives the same notifications). Otherwise it starts a new
   group, which becomes the open one. An event older than the group's first
   event therefore joins it too.
4. Joining bumps ``version`` by one, puts the actor first in ``actors``
   (moving them up when already there; at most ``max_actors`` kept), counts
   ``actor_count`` as distinct actor ids, puts the event id first in
   ``event_ids`` (at most :data:`MAX_EVENT_IDS` kept) and sets
   ``last_occurred_at`` to the latest occurred_at seen.
5. A new group has ``version = 1`` and
   ``notification_id = uuid5(NOTIFICATION_NAMESPACE, "recipient|type|object ref|first event id")``,
   so a retry of the same first event can never fork the group.

The Redis Lua script in :mod:`clarion_aggregator.adapters.redis_store` applies
exactly this rule atomically; :class:`InMemoryGroups` is the pure reference used
by tests and by anyone recomputing expected notifications from raw events.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from enum import StrEnum

NOTIFICATION_NAMESPACE = uuid.UUID("0b5c7f3e-8f2a-5d3c-9e61-6c1a2f4d8e70")
"""Namespace of deterministic notification ids (UUIDv5, RFC 9562 §5.5)."""

MAX_EVENT_IDS = 20
"""How many absorbed event ids a notification lists (newest first)."""


def notification_id(
    recipient_id: str, event_type: str, object_ref: str, first_event_id: str
) -> str:
    """Deterministic id of the group started by ``first_event_id`` (a UUIDv5 string)."""
    name = f"{recipient_id}|{event_type}|{object_ref}|{first_event_id}"
    return str(uuid.uuid5(NOTIFICATION_NAMESPACE, name))


def group_key(recipient_id: str, event_type: str, object_ref: str, first_occurred_ms: int) -> str:
    """``Notification.group_key``: ``recipient|type|object ref|window start (epoch ms)``."""
    return f"{recipient_id}|{event_type}|{object_ref}|{first_occurred_ms}"


def joins_group(first_occurred_ms: int, occurred_ms: int, window_ms: int) -> bool:
    """True when an event at ``occurred_ms`` joins a group that started at ``first_occurred_ms``.

    All arguments are epoch milliseconds / milliseconds. ``window_ms <= 0`` never joins.
    """
    return window_ms > 0 and occurred_ms < first_occurred_ms + window_ms


class Outcome(StrEnum):
    """What absorbing an event did to the recipient's groups."""

    CREATED = "created"
    UPDATED = "updated"
    DUPLICATE = "duplicate"


@dataclass
class GroupState:
    """One aggregation group (= one notification) as stored.

    Times are epoch milliseconds. ``actors`` holds ``(actor_id, name)`` newest first.
    """

    notification_id: str
    recipient_id: str
    event_type: str
    object_ref: str
    first_event_id: str
    first_occurred_ms: int
    last_occurred_ms: int
    version: int = 1
    actors: list[tuple[str, str]] = field(default_factory=list)
    actor_ids: set[str] = field(default_factory=set)
    event_ids: list[str] = field(default_factory=list)

    @property
    def actor_count(self) -> int:
        """Distinct actors absorbed so far."""
        return len(self.actor_ids)

    @property
    def group_key(self) -> str:
        """``recipient|type|object ref|window start``."""
        return group_key(
            self.recipient_id, self.event_type, self.object_ref, self.first_occurred_ms
        )

    def absorb(
        self, event_id: str, occurred_ms: int, actor_id: str, actor_name: str, max_actors: int
    ) -> None:
        """Add one (not yet seen) event: rule step 4 of the module docstring."""
        self.version += 1
        self._add(event_id, occurred_ms, actor_id, actor_name, max_actors)

    def _add(
        self, event_id: str, occurred_ms: int, actor_id: str, actor_name: str, max_actors: int
    ) -> None:
        self.actors = [(actor_id, actor_name)] + [a for a in self.actors if a[0] != actor_id]
        del self.actors[max_actors:]
        self.actor_ids.add(actor_id)
        self.event_ids.insert(0, event_id)
        del self.event_ids[MAX_EVENT_IDS:]
        self.last_occurred_ms = max(self.last_occurred_ms, occurred_ms)

    @classmethod
    def start(
        cls,
        *,
        recipient_id: str,
        event_type: str,
        object_ref: str,
        event_id: str,
        occurred_ms: int,
        actor_id: str,
        actor_name: str,
        max_actors: int,
    ) -> GroupState:
        """A new group holding one event (rule step 5)."""
        group = cls(
            notification_id=notification_id(recipient_id, event_type, object_ref, event_id),
            recipient_id=recipient_id,
            event_type=event_type,
            object_ref=object_ref,
            first_event_id=event_id,
            first_occurred_ms=occurred_ms,
            last_occurred_ms=occurred_ms,
        )
        group._add(event_id, occurred_ms, actor_id, actor_name, max_actors)
        return group


@dataclass
class InMemoryGroups:
    """The reference implementation of the aggregation rule, in memory.

    ``apply`` takes events in arrival order and returns the outcome and the group
    the event is (or already was) in.
    """

    groups: dict[str, GroupState] = field(default_factory=dict)
    open_groups: dict[tuple[str, str, str], str] = field(default_factory=dict)
    seen: dict[tuple[str, str], str] = field(default_factory=dict)

    def apply(
        self,
        *,
        recipient_id: str,
        event_type: str,
        object_ref: str,
        event_id: str,
        occurred_ms: int,
        actor_id: str,
        actor_name: str,
        window_ms: int,
        max_actors: int,
    ) -> tuple[Outcome, GroupState]:
        """Apply one (recipient, event) pair; see the module docstring for the rule."""
        already = self.seen.get((recipient_id, event_id))
        if already is not None:
            return Outcome.DUPLICATE, self.groups[already]
        key = (recipient_id, event_type, object_ref)
        open_id = self.open_groups.get(key)
        group = self.groups.get(open_id) if open_id else None
        if group is not None and joins_group(group.first_occurred_ms, occurred_ms, window_ms):
            group.absorb(event_id, occurred_ms, actor_id, actor_name, max_actors)
            outcome = Outcome.UPDATED
        else:
            group = GroupState.start(
                recipient_id=recipient_id,
                event_type=event_type,
                object_ref=object_ref,
                event_id=event_id,
                occurred_ms=occurred_ms,
                actor_id=actor_id,
                actor_name=actor_name,
                max_actors=max_actors,
            )
            self.groups[group.notification_id] = group
            self.open_groups[key] = group.notification_id
            outcome = Outcome.CREATED
        self.seen[(recipient_id, event_id)] = group.notification_id
        return outcome, group
