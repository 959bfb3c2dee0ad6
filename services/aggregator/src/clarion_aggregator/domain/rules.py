"""Aggregation rules: per domain event type, how notifications are grouped and delivered.

The rules live in a small YAML file shipped with the package
(``clarion_aggregator/rules.yaml``; another file can be configured with
``CLARION_AGGREGATOR_RULES_PATH``). Its shape::

    default:            # every key of a rule; fills what a rule leaves out
      window: 10m       # aggregation window in event time: "<n>s" | "<n>m" | "<n>h" | 0
      max_actors: 3     # actor names shown, newest first
      category: general # preference category
      channels: [in_app, push, email]   # the category's default channels
      priority: normal  # used when the event carries no priority of its own
      template: default # templates/<locale>/<template>.j2
    rules:
      post.liked: {window: 5m, max_actors: 3, category: social, template: post.liked}

A type without a rule gets ``default`` (category ``general``, 10 minutes, 3 names).
Parsing is pure: :func:`parse_rules` takes the loaded mapping, :func:`load_rules`
reads a file.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from datetime import timedelta
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from clarion_contracts.base import Channel, Priority

_DURATION = re.compile(r"^\s*(\d+)\s*([smh]?)\s*$")
_UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600}
RULE_KEYS = frozenset({"window", "max_actors", "category", "channels", "priority", "template"})


class RulesError(ValueError):
    """The rules document is malformed (unknown key, bad duration, bad channel...)."""


def parse_duration(value: object) -> timedelta:
    """Parse a window such as ``0``, ``90``, ``"30s"``, ``"5m"``, ``"1h"`` (bare numbers: seconds).

    Raises:
        RulesError: not a non-negative whole number of seconds, minutes or hours.
    """
    if isinstance(value, bool):
        raise RulesError(f"bad duration {value!r}")
    if isinstance(value, int):
        if value < 0:
            raise RulesError(f"negative duration {value!r}")
        return timedelta(seconds=value)
    match = _DURATION.match(str(value))
    if not match:
        raise RulesError(f"bad duration {value!r}: use e.g. 0, 30s, 5m, 1h")
    return timedelta(seconds=int(match[1]) * _UNIT_SECONDS[match[2]])


@dataclass(frozen=True)
class AggregationRule:
    """How events of one type become notifications.

    Attributes:
        event_type: the domain event type (``"*"`` for the default rule).
        window: aggregation window in event time; ``timedelta(0)`` disables grouping.
        max_actors: actor names shown and kept in ``Notification.actors`` (>= 1).
        category: preference category.
        channels: channels a user gets for this category unless they changed it.
        priority: priority when the event does not carry one.
        template: template name (``templates/<locale>/<template>.j2``).
    """

    event_type: str
    window: timedelta
    max_actors: int
    category: str
    channels: frozenset[Channel]
    priority: Priority
    template: str

    @property
    def window_ms(self) -> int:
        """The window in whole milliseconds."""
        return int(self.window.total_seconds() * 1000)


def _rule_from(
    event_type: str, raw: Mapping[str, Any], base: AggregationRule | None
) -> AggregationRule:
    unknown = set(raw) - RULE_KEYS
    if unknown:
        raise RulesError(f"rule {event_type!r}: unknown keys {sorted(unknown)}")
    values: dict[str, Any] = {}
    try:
        if "window" in raw:
            values["window"] = parse_duration(raw["window"])
        if "max_actors" in raw:
            max_actors = int(raw["max_actors"])
            if max_actors < 1:
                raise RulesError(f"rule {event_type!r}: max_actors must be >= 1")
            values["max_actors"] = max_actors
        if "category" in raw:
            values["category"] = str(raw["category"])
        if "channels" in raw:
            values["channels"] = frozenset(Channel(c) for c in raw["channels"])
        if "priority" in raw:
            values["priority"] = Priority(raw["priority"])
        if "template" in raw:
            values["template"] = str(raw["template"])
    except (TypeError, ValueError) as exc:
        if isinstance(exc, RulesError):
            raise
        raise RulesError(f"rule {event_type!r}: {exc}") from exc
    if base is None:
        missing = RULE_KEYS - set(raw)
        if missing:
            raise RulesError(f"default rule misses {sorted(missing)}")
        return AggregationRule(event_type=event_type, **values)
    return replace(base, event_type=event_type, **values)


@dataclass(frozen=True)
class RuleSet:
    """Every configured rule plus the default; look up with :meth:`for_type`."""

    default: AggregationRule
    rules: Mapping[str, AggregationRule] = field(default_factory=dict)

    def for_type(self, event_type: str) -> AggregationRule:
        """The rule of ``event_type``, or the default rule (with that type) when none is set."""
        rule = self.rules.get(event_type)
        if rule is not None:
            return rule
        return replace(self.default, event_type=event_type)


def parse_rules(document: Mapping[str, Any]) -> RuleSet:
    """Build a :class:`RuleSet` from the parsed YAML mapping described in the module docstring.

    Raises:
        RulesError: missing ``default``, unknown keys, bad values.
    """
    if not isinstance(document, Mapping) or "default" not in document:
        raise RulesError("rules document needs a 'default' rule")
    unknown = set(document) - {"default", "rules"}
    if unknown:
        raise RulesError(f"unknown top-level keys {sorted(unknown)}")
    default = _rule_from("*", document["default"], None)
    rules_raw = document.get("rules") or {}
    if not isinstance(rules_raw, Mapping):
        raise RulesError("'rules' must map event types to rules")
    rules = {
        str(name): _rule_from(str(name), raw or {}, default) for name, raw in rules_raw.items()
    }
    return RuleSet(default=default, rules=rules)


def default_rules_path() -> Path:
    """Path of the rules file shipped in the package."""
    return Path(str(resources.files("clarion_aggregator").joinpath("rules.yaml")))


def load_rules(path: str | Path | None = None) -> RuleSet:
    """Read and parse a rules YAML file (``None``: the packaged ``rules.yaml``).

    Raises:
        OSError: the file cannot be read.
        RulesError: the document is malformed (YAML errors are re-raised as this).
    """
    source = Path(path) if path else default_rules_path()
    try:
        document = yaml.safe_load(source.read_text(encoding="utf-8"))
    except yaml.YAMLError as exc:
        raise RulesError(f"{source}: {exc}") from exc
    return parse_rules(document)
