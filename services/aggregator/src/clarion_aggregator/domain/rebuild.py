"""Rebuilding aggregation state from the aggregator's own output.

Redis holds the aggregation groups and dedup keys only as a cache of what
``clarion.notifications.v1`` already says: every published version carries the
group's identity (recipient, type, object), its version, newest actors,
``actor_count``, the newest event ids and its times. :class:`StateRebuild` folds
the versions read from that topic (in topic order) into what the Lua script needs:

* the latest version of each notification (``n:`` hash fields);
* the distinct actors (``na:`` set): the listed actors' ids, plus placeholder
  members ``~1``, ``~2``... standing for the actors beyond ``max_actors`` that
  the notification only counts, so ``SCARD`` equals ``actor_count`` again;
* the open group of each ``(recipient, type, object ref)`` (``open:``): the one
  created last, i.e. whose version 1 comes last in the topic (a group whose
  version 1 is older than the part read counts as created before all others,
  ties broken by window start);
* dedup keys (``seen:``): every event id listed by any version read. Version
  ``v``'s ``event_ids[0]`` is the event that produced it, so every event whose
  version reached the topic is remembered, even beyond the list's cap.

Digest buffers are restored too (:func:`restore_digest_items`): the latest version
of each notification routed to a digest goes back into its period's digest when
that digest is not due yet.

Known approximations: an actor hidden behind a placeholder who acts again is
counted once more; the push/immediate-email throttle restarts (no alert time is
published); a group published only before the part read is not restored (an
event joining it later starts a new group, which is why the part read reaches
back further than the longest aggregation window).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import datetime

import orjson

from clarion_aggregator.domain.clock import to_ms
from clarion_aggregator.domain.routing import effective_timezone
from clarion_aggregator.domain.schedule import DigestPeriod, digest_period, zone
from clarion_contracts.base import Channel, Priority
from clarion_contracts.v1 import EmailItem, Notification, Preferences

_DIGEST_PRIORITIES = frozenset({Priority.LOW, Priority.NORMAL})

PLACEHOLDER_PREFIX = "~"
"""Prefix of ``na:`` members standing for counted but unlisted actors."""


@dataclass(frozen=True)
class RebuiltGroup:
    """One notification's group state, ready to be written back.

    Attributes:
        notification_id / recipient_id / event_type / object_ref: identity.
        fields: the ``n:`` hash (version, first_ms, last_ms, first_event, actors,
            events, created_ms, updated_ms, ctx), all strings.
        actor_ids: the ``na:`` members (real ids, then placeholders).
    """

    notification_id: str
    recipient_id: str
    event_type: str
    object_ref: str
    fields: dict[str, str]
    actor_ids: tuple[str, ...]

    @property
    def open_key(self) -> str:
        """``recipient|type|object ref``: the suffix of the ``open:`` key."""
        return f"{self.recipient_id}|{self.event_type}|{self.object_ref}"


@dataclass
class RebuiltState:
    """What a rebuild writes: groups by id, open group per key, dedup entries."""

    groups: dict[str, RebuiltGroup] = field(default_factory=dict)
    open_groups: dict[str, str] = field(default_factory=dict)
    seen: dict[tuple[str, str], str] = field(default_factory=dict)


def group_context(note: Notification) -> str:
    """The ``ctx`` JSON the pipeline stores with a version (object, data, priority,
    tenant, ingested_at), recovered from the published notification."""
    context = {
        "object": note.object.model_dump(mode="json"),
        "data": note.data,
        "priority": note.priority.value,
        "tenant_id": note.tenant_id,
        "ingested_at": note.ingested_at.isoformat() if note.ingested_at else None,
    }
    return orjson.dumps(context, default=str).decode()


def group_fields(note: Notification) -> dict[str, str]:
    """The ``n:`` hash of the aggregation script for the version ``note``."""
    events = [str(e) for e in note.event_ids]
    # The first event is known only while the capped list still holds every event.
    first_event = events[-1] if events and len(events) == note.version else ""
    actors = [[a.id, a.name, str(a.avatar_url) if a.avatar_url else None] for a in note.actors]
    return {
        "version": str(note.version),
        "first_ms": str(to_ms(note.first_occurred_at)),
        "last_ms": str(to_ms(note.last_occurred_at)),
        "first_event": first_event,
        "actors": orjson.dumps(actors).decode(),
        "events": orjson.dumps(events).decode(),
        "created_ms": str(to_ms(note.created_at)),
        "updated_ms": str(to_ms(note.updated_at)),
        "ctx": group_context(note),
    }


def actor_members(note: Notification) -> tuple[str, ...]:
    """``na:`` members whose count is ``max(actor_count, listed actors)``."""
    ids = list(dict.fromkeys(a.id for a in note.actors))
    hidden = max(0, note.actor_count - len(ids))
    return (*ids, *(f"{PLACEHOLDER_PREFIX}{i}" for i in range(1, hidden + 1)))


class StateRebuild:
    """Folds notification versions, in topic order, into a :class:`RebuiltState`.

    Feed every version read with :meth:`add` (any order across recipients; per
    recipient in topic order, which is the order the aggregator produced them),
    then call :meth:`result`.
    """

    def __init__(self) -> None:
        self._latest: dict[str, Notification] = {}
        self._rank: dict[str, tuple[int, int]] = {}
        self._seen: dict[tuple[str, str], str] = {}
        self._position = 0
        self.versions_read = 0

    def add(self, note: Notification) -> None:
        """Take one published version into account."""
        self._position += 1
        self.versions_read += 1
        nid = note.notification_id
        held = self._latest.get(nid)
        if held is None or note.version >= held.version:
            self._latest[nid] = note
        created_at = self._position if note.version == 1 else -1
        rank = (created_at, to_ms(note.first_occurred_at))
        if nid not in self._rank or rank > self._rank[nid]:
            self._rank[nid] = rank
        for event_id in note.event_ids:
            self._seen[(note.recipient_id, str(event_id))] = nid

    def digest_candidates(self) -> list[Notification]:
        """Latest versions that went into an email digest: the email channel at
        priority low or normal (high and urgent are emailed at once)."""
        return [
            note
            for note in self._latest.values()
            if Channel.EMAIL in note.channels and note.priority in _DIGEST_PRIORITIES
        ]

    def latest(self) -> list[Notification]:
        """The latest version read of each notification."""
        return list(self._latest.values())

    def result(self) -> RebuiltState:
        """The state to write back (see the module docstring)."""
        state = RebuiltState(seen=dict(self._seen))
        best: dict[str, tuple[int, int]] = {}
        for nid, note in self._latest.items():
            group = RebuiltGroup(
                notification_id=nid,
                recipient_id=note.recipient_id,
                event_type=note.type,
                object_ref=note.object.ref,
                fields=group_fields(note),
                actor_ids=actor_members(note),
            )
            state.groups[nid] = group
            rank = self._rank[nid]
            key = group.open_key
            if key not in best or rank > best[key]:
                best[key] = rank
                state.open_groups[key] = nid
        return state


@dataclass(frozen=True)
class RestoredDigestItem:
    """A digest item to buffer again: the period it belongs to and the ``EmailItem``."""

    recipient_id: str
    period: DigestPeriod
    item: EmailItem


def restore_digest_items(
    notes: Iterable[Notification],
    prefs: Mapping[str, Preferences | None],
    profile_timezones: Mapping[str, str | None],
    now: datetime,
) -> tuple[list[RestoredDigestItem], int]:
    """The digest items of ``notes`` (from :meth:`StateRebuild.digest_candidates`) whose
    digest is not due yet at ``now``, so cannot have been sent.

    A version was routed when it was made (its ``updated_at``), into the period
    :func:`~clarion_aggregator.domain.schedule.digest_period` gives for that instant
    with the user's digest schedule, hour and timezone (read from ``prefs`` and
    ``profile_timezones`` as they are now). Returns the items and how many were
    left out because their digest was due before ``now``: those were sent, unless
    Redis lost them in the last flusher interval before their due time.
    """
    items: list[RestoredDigestItem] = []
    past_due = 0
    for note in notes:
        user_prefs = prefs.get(note.recipient_id)
        schedule = user_prefs.email_digest if user_prefs is not None else "daily"
        hour = user_prefs.digest_hour if user_prefs is not None else 9
        tz = zone(effective_timezone(user_prefs, profile_timezones.get(note.recipient_id)))
        period = digest_period(note.updated_at, schedule, tz, hour)
        if period is None:
            continue
        if period.end <= now:
            past_due += 1
            continue
        item = EmailItem.model_validate(
            {
                "notification_id": note.notification_id,
                "version": note.version,
                "type": note.type,
                "category": note.category,
                "title": note.title,
                "body": note.body,
                "body_html": note.body_html,
                "url": note.url,
                "actor_count": note.actor_count,
                "occurred_at": note.last_occurred_at,
            }
        )
        items.append(RestoredDigestItem(note.recipient_id, period, item))
    return items, past_due
