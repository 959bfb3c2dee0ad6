"""Preference checks and channel routing for one recipient of one notification.

Rules (in this order):

* A muted object (``"type:id"`` in ``Preferences.muted_objects``) suppresses
  every channel.
* A channel is enabled when the user's category switch says so; an unset
  switch (or no preferences at all) falls back to the rule's default channels.
* In-app: whenever enabled.
* Push: when enabled and the user is offline (no live gateway session; unknown
  presence counts as offline) or the priority is ``high``/``urgent``.
* Email: when enabled, ``high``/``urgent`` go out immediately; anything else
  goes into the user's digest (``email_digest`` hourly or daily, due at the end
  of the period in the user's timezone); ``email_digest="off"`` means no digest
  email, while immediate emails still follow the category switch.
* Quiet hours (in the user's timezone; ``Preferences.timezone``, else the
  profile's, else UTC) defer push and immediate email to the end of the quiet
  period (``not_before``); they are never dropped. ``urgent`` ignores quiet hours.
  Digests check quiet hours when they are flushed.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum

from clarion_aggregator.domain.rules import AggregationRule
from clarion_aggregator.domain.schedule import DigestPeriod, digest_period, quiet_hours_end, zone
from clarion_contracts.base import Channel, Priority
from clarion_contracts.v1 import Preferences

INTERRUPTING = frozenset({Priority.HIGH, Priority.URGENT})
"""Priorities that push even to online users and email immediately."""


class EmailMode(StrEnum):
    """How a notification reaches the user's mailbox."""

    NONE = "none"
    IMMEDIATE = "immediate"
    DIGEST = "digest"


@dataclass(frozen=True)
class Routing:
    """Where one notification version goes.

    Attributes:
        suppressed: nothing at all is delivered (muted, or every channel off).
        in_app: publish on ``clarion.notifications.v1``.
        push: a push request is wanted (subject to the per-notification throttle).
        email: none, immediate or digest.
        not_before: end of quiet hours for push and immediate email, else ``None``.
        digest: the digest period the item goes into when ``email == DIGEST``.
    """

    suppressed: bool
    in_app: bool = False
    push: bool = False
    email: EmailMode = EmailMode.NONE
    not_before: datetime | None = None
    digest: DigestPeriod | None = None

    @property
    def channels(self) -> list[Channel]:
        """The channels this version is routed to, in_app/push/email order."""
        out = []
        if self.in_app:
            out.append(Channel.IN_APP)
        if self.push:
            out.append(Channel.PUSH)
        if self.email is not EmailMode.NONE:
            out.append(Channel.EMAIL)
        return out


SUPPRESSED = Routing(suppressed=True)


def channel_enabled(prefs: Preferences | None, rule: AggregationRule, channel: Channel) -> bool:
    """Whether ``channel`` is on for the rule's category (user switch, else the rule default)."""
    if prefs is not None:
        switches = prefs.categories.get(rule.category)
        if switches is not None:
            value = getattr(switches, channel.value)
            if value is not None:
                return bool(value)
    return channel in rule.channels


def is_muted(prefs: Preferences | None, object_ref: str) -> bool:
    """True when the user muted the object ``object_ref`` (``"type:id"``)."""
    return prefs is not None and object_ref in prefs.muted_objects


def effective_timezone(prefs: Preferences | None, profile_timezone: str | None) -> str:
    """The timezone name used for the user: preferences, then profile, then ``UTC``."""
    if prefs is not None and prefs.timezone:
        return prefs.timezone
    return profile_timezone or "UTC"


def route(
    *,
    rule: AggregationRule,
    priority: Priority,
    object_ref: str,
    prefs: Preferences | None,
    profile_timezone: str | None,
    online: bool,
    now: datetime,
) -> Routing:
    """Decide the channels of one notification version for one recipient (module rules).

    Args:
        rule: the event type's rule (category and default channels).
        priority: the notification's priority.
        object_ref: ``"type:id"`` of the object, for mutes.
        prefs: the user's preferences, ``None`` when unknown (rule defaults apply).
        profile_timezone: the profile's IANA timezone, ``None`` when unknown.
        online: the user has a live session.
        now: the current instant (aware), for quiet hours and the digest period.
    """
    if is_muted(prefs, object_ref):
        return SUPPRESSED
    in_app = channel_enabled(prefs, rule, Channel.IN_APP)
    push_on = channel_enabled(prefs, rule, Channel.PUSH)
    email_on = channel_enabled(prefs, rule, Channel.EMAIL)
    if not (in_app or push_on or email_on):
        return SUPPRESSED
    interrupting = priority in INTERRUPTING
    push = push_on and (interrupting or not online)
    tz = zone(effective_timezone(prefs, profile_timezone))
    email = EmailMode.NONE
    period: DigestPeriod | None = None
    if email_on:
        if interrupting:
            email = EmailMode.IMMEDIATE
        else:
            schedule = prefs.email_digest if prefs is not None else "daily"
            digest_hour = prefs.digest_hour if prefs is not None else 9
            period = digest_period(now, schedule, tz, digest_hour)
            email = EmailMode.DIGEST if period is not None else EmailMode.NONE
    not_before = None
    if priority is not Priority.URGENT and (push or email is EmailMode.IMMEDIATE):
        not_before = quiet_hours_end(now, prefs.quiet_hours if prefs else None, tz)
    return Routing(
        suppressed=False,
        in_app=in_app,
        push=push,
        email=email,
        not_before=not_before,
        digest=period,
    )
