"""Per-notification funnel facts: first-time semantics and independence of arrival order."""

from __future__ import annotations

from collections import Counter
from datetime import date, timedelta

from analytics_messages import T0, make_notification, make_status
from hypothesis import given, settings
from hypothesis import strategies as st

from clarion_analytics.domain.counters import ANY, CounterKey
from clarion_analytics.domain.facts import (
    NotificationFacts,
    observe_notification,
    observe_read,
    observe_status,
)
from clarion_contracts.base import Channel
from clarion_contracts.v1 import DeliveryState

DAY = date(2026, 11, 24)
TYPE = "repo.starred"


def key(channel: str, metric: str, reason: str = "", type_: str = TYPE) -> CounterKey:
    return CounterKey(DAY, type_, channel, metric, reason)


def test_created_routed_updated_count_once_per_notification() -> None:
    facts = NotificationFacts("n1")
    v1 = make_notification("n1", channels=(Channel.IN_APP, Channel.PUSH))
    assert observe_notification(facts, v1, T0) == [
        key(ANY, "created"),
        key("in_app", "routed"),
        key("push", "routed"),
    ]
    assert observe_notification(facts, make_notification("n1", version=2), T0) == [
        key(ANY, "updated")
    ]
    assert observe_notification(facts, make_notification("n1", version=3), T0) == [
        key(ANY, "updated")
    ]


def test_first_version_seen_late_still_creates_once() -> None:
    facts = NotificationFacts("n1")
    got = observe_notification(facts, make_notification("n1", version=2), T0)
    assert got == [key(ANY, "created"), key(ANY, "updated")]
    # Routing is that of the creation (version 1), whenever it arrives.
    assert observe_notification(facts, make_notification("n1", version=1), T0) == [
        key("in_app", "routed")
    ]


def test_delivery_read_click_count_first_time_only() -> None:
    facts = NotificationFacts("n1")
    observe_notification(facts, make_notification("n1"), T0)
    at = T0 + timedelta(seconds=1)
    d1 = make_status("n1", Channel.IN_APP, DeliveryState.DELIVERED, at=at)
    assert observe_status(facts, d1) == [key("in_app", "delivered"), key(ANY, "reached")]
    d2 = make_status("n1", Channel.IN_APP, DeliveryState.DELIVERED, at=at, version=2)
    assert observe_status(facts, d2) == []
    push = make_status("n1", Channel.PUSH, DeliveryState.DELIVERED, at=at)
    assert observe_status(facts, push) == [key("push", "delivered")]
    assert observe_read(facts, at) == [key(ANY, "read")]
    assert observe_read(facts, at + timedelta(seconds=5)) == []
    click = make_status("n1", Channel.PUSH, DeliveryState.CLICKED, at=at)
    assert observe_status(facts, click) == [key("push", "clicked")]
    click_again = make_status("n1", Channel.IN_APP, DeliveryState.CLICKED, at=at)
    assert observe_status(facts, click_again) == []


def test_failures_count_every_report_with_reason() -> None:
    facts = NotificationFacts("n1")
    observe_notification(facts, make_notification("n1"), T0)
    fail = make_status("n1", Channel.EMAIL, DeliveryState.FAILED, at=T0, reason="smtp_550")
    assert observe_status(facts, fail) == [key("email", "failed", "smtp_550")]
    again = make_status("n1", Channel.EMAIL, DeliveryState.FAILED, at=T0, reason="smtp_550")
    assert observe_status(facts, again) == [key("email", "failed", "smtp_550")]
    bounce = make_status("n1", Channel.EMAIL, DeliveryState.BOUNCED, at=T0)
    assert observe_status(facts, bounce) == [key("email", "bounced", "bounced")]
    retry = make_status("n1", Channel.PUSH, DeliveryState.RETRYING, at=T0, reason="429")
    assert observe_status(facts, retry) == [key("push", "retrying", "429")]


def test_failure_before_its_notification_is_held_until_the_cohort_is_known() -> None:
    facts = NotificationFacts("nx")
    later = T0 + timedelta(days=2)
    fail = make_status("nx", Channel.PUSH, DeliveryState.FAILED, at=later, reason="gone")
    assert observe_status(facts, fail) == []
    assert facts.pending_failures == [["push", "failed", "gone"]]
    got = observe_notification(facts, make_notification("nx"), T0)
    assert key("push", "failed", "gone") in got  # counted on the creation day (cohort)
    assert facts.pending_failures == []


def test_facts_before_cohort_are_counted_when_it_arrives() -> None:
    facts = NotificationFacts("n1")
    at = T0 + timedelta(seconds=1)
    assert (
        observe_status(facts, make_status("n1", Channel.IN_APP, DeliveryState.DELIVERED, at=at))
        == []
    )
    assert observe_read(facts, at) == []
    assert (
        observe_status(facts, make_status("n1", Channel.PUSH, DeliveryState.CLICKED, at=at)) == []
    )
    got = observe_notification(facts, make_notification("n1"), T0)
    assert sorted(got) == sorted(
        [
            key("in_app", "delivered"),
            key("push", "delivered"),
            key(ANY, "reached"),
            key(ANY, "read"),
            key("push", "clicked"),
            key(ANY, "created"),
            key("in_app", "routed"),
        ]
    )


def test_status_with_type_and_creation_time_reveals_the_cohort() -> None:
    facts = NotificationFacts("n1")
    status = make_status(
        "n1",
        Channel.IN_APP,
        DeliveryState.DELIVERED,
        at=T0,
        type_=TYPE,
        notification_created_at=T0,
    )
    assert observe_status(facts, status) == [key("in_app", "delivered"), key(ANY, "reached")]
    # The notification arriving later only adds its creation.
    assert observe_notification(facts, make_notification("n1"), T0) == [
        key(ANY, "created"),
        key("in_app", "routed"),
    ]


def _messages() -> list[tuple[str, object]]:
    at = T0 + timedelta(seconds=2)
    return [
        ("n", make_notification("n1", channels=(Channel.IN_APP, Channel.EMAIL))),
        ("n", make_notification("n1", version=2)),
        ("s", make_status("n1", Channel.IN_APP, DeliveryState.DELIVERED, at=at)),
        ("s", make_status("n1", Channel.EMAIL, DeliveryState.DELIVERED, at=at)),
        ("s", make_status("n1", Channel.EMAIL, DeliveryState.CLICKED, at=at)),
        ("s", make_status("n1", Channel.EMAIL, DeliveryState.FAILED, at=at, reason="x")),
        ("r", at),
        ("r", at + timedelta(seconds=9)),
    ]


@settings(max_examples=200, deadline=None)
@given(st.permutations(range(len(_messages()))))
def test_counters_do_not_depend_on_arrival_order(order: list[int]) -> None:
    messages = _messages()

    def run(indices: list[int]) -> Counter[CounterKey]:
        facts = NotificationFacts("n1")
        total: Counter[CounterKey] = Counter()
        for i in indices:
            kind, msg = messages[i]
            if kind == "n":
                total.update(observe_notification(facts, msg, T0))  # type: ignore[arg-type]
            elif kind == "s":
                total.update(observe_status(facts, msg))  # type: ignore[arg-type]
            else:
                total.update(observe_read(facts, msg))  # type: ignore[arg-type]
        return total

    expected = run(list(range(len(messages))))
    assert run(order) == expected
    assert expected[key(ANY, "created")] == 1
    assert expected[key(ANY, "updated")] == 1
    assert expected[key(ANY, "read")] == 1
    assert expected[key("email", "delivered")] == 1
    assert expected[key("email", "clicked")] == 1
    assert expected[key(ANY, "reached")] == 1
