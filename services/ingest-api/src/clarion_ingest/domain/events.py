"""Validation of producers' domain events (``POST /v1/events`` and ``:batch``).

The contract models ignore unknown fields so consumers tolerate newer producers;
the public API is stricter: an unknown top-level field is refused (422) so a
producer's typo (``recipient`` for ``recipients``) never silently drops data.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime
from typing import Any

from pydantic import ValidationError

from clarion_contracts.v1 import DomainEvent

ErrorItem = dict[str, Any]
"""One validation error: ``{"loc": [...], "msg": str, "type": str}`` (pydantic's shape)."""


class EventValidationError(ValueError):
    """The request body is not a valid event (or batch); ``errors`` lists every problem."""

    def __init__(self, errors: Sequence[ErrorItem]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors: list[ErrorItem] = list(errors)


def _known_fields(model: type[DomainEvent]) -> frozenset[str]:
    names: set[str] = set()
    for name, info in model.model_fields.items():
        names.add(name)
        if info.alias:
            names.add(info.alias)
    return frozenset(names)


DOMAIN_EVENT_FIELDS = _known_fields(DomainEvent)


def _errors_of(exc: ValidationError, prefix: tuple[str | int, ...]) -> list[ErrorItem]:
    return [
        {"loc": [*prefix, *err["loc"]], "msg": err["msg"], "type": err["type"]}
        for err in exc.errors(include_url=False, include_context=False, include_input=False)
    ]


def parse_event(raw: Any, ingested_at: datetime, prefix: tuple[str | int, ...] = ()) -> DomainEvent:
    """Validate one decoded JSON value as a :class:`DomainEvent` and stamp ``ingested_at``.

    Args:
        raw: the decoded JSON value (must be an object).
        ingested_at: the acceptance time (timezone-aware); it replaces any value sent.
        prefix: location prefix of reported errors (``("events", 3)`` in a batch).

    Raises:
        EventValidationError: not an object, an unknown top-level field, or the
            contract refuses it.
    """
    if not isinstance(raw, dict):
        raise EventValidationError(
            [{"loc": list(prefix), "msg": "an event must be a JSON object", "type": "dict_type"}]
        )
    unknown = sorted(set(raw) - DOMAIN_EVENT_FIELDS)
    if unknown:
        raise EventValidationError(
            [
                {"loc": [*prefix, name], "msg": "unknown field", "type": "extra_forbidden"}
                for name in unknown
            ]
        )
    try:
        event = DomainEvent.model_validate({**raw, "ingested_at": ingested_at})
    except ValidationError as exc:
        raise EventValidationError(_errors_of(exc, prefix)) from exc
    return event


def parse_batch(raw: Any, ingested_at: datetime, max_events: int) -> list[DomainEvent]:
    """Validate a batch body ``{"events": [event, ...]}`` of 1..``max_events`` events.

    All or nothing: any invalid event refuses the whole batch, every error reported
    with its index. Duplicate ``event_id`` values within the batch are refused too,
    since ``event_id`` is the idempotency key.

    Raises:
        EventValidationError: the body's shape, size or any event is invalid.
    """
    if not isinstance(raw, dict):
        raise EventValidationError(
            [{"loc": [], "msg": "the body must be a JSON object", "type": "dict_type"}]
        )
    unknown = sorted(set(raw) - {"events"})
    if unknown:
        raise EventValidationError(
            [{"loc": [name], "msg": "unknown field", "type": "extra_forbidden"} for name in unknown]
        )
    events_raw = raw.get("events")
    if not isinstance(events_raw, list):
        raise EventValidationError(
            [{"loc": ["events"], "msg": "events must be a JSON array", "type": "list_type"}]
        )
    if not 1 <= len(events_raw) <= max_events:
        raise EventValidationError(
            [
                {
                    "loc": ["events"],
                    "msg": f"a batch holds 1 to {max_events} events, got {len(events_raw)}",
                    "type": "too_long" if events_raw else "too_short",
                }
            ]
        )
    errors: list[ErrorItem] = []
    events: list[DomainEvent] = []
    seen: dict[str, int] = {}
    for index, item in enumerate(events_raw):
        try:
            event = parse_event(item, ingested_at, ("events", index))
        except EventValidationError as exc:
            errors.extend(exc.errors)
            continue
        key = str(event.event_id)
        if key in seen:
            errors.append(
                {
                    "loc": ["events", index, "event_id"],
                    "msg": f"duplicate event_id (also at index {seen[key]})",
                    "type": "duplicate",
                }
            )
            continue
        seen[key] = index
        events.append(event)
    if errors:
        raise EventValidationError(errors)
    return events


def event_records(event: DomainEvent) -> list[tuple[bytes, DomainEvent]]:
    """Split an event into the records to produce: ``[(key, event), ...]``.

    An event with explicit ``recipients`` becomes one record per recipient, keyed
    by that recipient and listing only them, so every record about a user lands
    on the user's partition and the aggregator sees each user's events in
    arrival order (event-time aggregation windows depend on it). The records keep
    the ``event_id``; the aggregator deduplicates per (recipient, event_id). An
    ``audience`` event is one record keyed by ``event_id``: the aggregator fans
    it out.
    """
    if event.recipients is None:
        return [(str(event.event_id).encode(), event)]
    if len(event.recipients) == 1:
        return [(event.recipients[0].encode(), event)]
    return [
        (recipient.encode(), event.model_copy(update={"recipients": [recipient]}))
        for recipient in event.recipients
    ]
