"""email-worker on the embedded stack, sending to an aiosmtpd server."""

from __future__ import annotations

from datetime import timedelta
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest

from clarion_contracts.registry import EMAIL_REQUESTS, PREFERENCES
from clarion_contracts.v1 import (
    ChannelPreference,
    DeliveryState,
    EmailRequest,
    Preferences,
    utc_now,
)
from clarion_email.domain.message import message_id
from clarion_kit.unsubscribe_tokens import verify_unsubscribe_token

pytestmark = pytest.mark.integration


def item(n: int, type_: str = "post.liked") -> dict[str, Any]:
    return {
        "notification_id": f"n{n}",
        "version": 1,
        "type": type_,
        "category": "social",
        "title": f"Title {n}",
        "body": f"Body {n}",
        "body_html": f"<p>Body <b>{n}</b></p>",
        "url": f"https://app.example.com/n/{n}",
        "actor_count": 1,
        "occurred_at": utc_now() - timedelta(minutes=n),
    }


def email_request(
    request_id: str, user: str, items: list[dict[str, Any]], **extra: Any
) -> EmailRequest:
    return EmailRequest.model_validate(
        {
            "request_id": request_id,
            "recipient_id": user,
            "kind": "immediate" if len(items) == 1 else "digest",
            "category": "social",
            "items": items,
            "created_at": utc_now(),
            **extra,
        }
    )


async def _is_none(value: Any) -> bool:
    return await value is None


async def send(harness: Any, request: EmailRequest) -> None:
    await harness.publish(EMAIL_REQUESTS, request.recipient_id, request.to_bytes())


async def test_email_arrives_with_parts_headers_and_a_valid_unsubscribe_token(
    harness: Any, wait_until: Any
) -> None:
    await harness.profile("ann", "<script>alert(1)</script> Ann", "ann@example.com")
    request = email_request("req-1", "ann", [item(1)])
    await send(harness, request)

    (msg,) = await wait_until(lambda: list(harness.sink.messages))
    parsed = msg.parsed
    assert msg.rcpt_tos == ["ann@example.com"]
    assert parsed["Message-ID"] == message_id("req-1", "clarion.test")
    assert parsed["Subject"] == "Title 1"
    assert parsed["From"] == "Clarion <notifications@clarion.test>"
    assert parsed["To"].addresses[0].addr_spec == "ann@example.com"
    assert parsed["Date"] is not None
    assert parsed["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    html, text = msg.part("html"), msg.part("plain")
    assert "<p>Body <b>1</b></p>" in html
    assert "&lt;script&gt;alert(1)&lt;/script&gt; Ann" in html
    assert "<script>" not in html
    assert "Body 1" in text
    assert "https://app.example.com/n/1" in text

    unsubscribe = parsed["List-Unsubscribe"]
    assert unsubscribe.startswith("<https://api.clarion.test/v1/unsubscribe?token=")
    url = urlsplit(unsubscribe.strip("<>"))
    (token,) = parse_qs(url.query)["token"]
    grant = verify_unsubscribe_token(harness.settings, token)
    assert (grant.user_id, grant.category) == ("ann", "social")

    (status,) = await wait_until(harness.statuses)
    assert status.status is DeliveryState.DELIVERED
    assert status.channel.value == "email"
    assert status.notification_id == "n1"
    assert status.request_id == "req-1"

    # A redelivered request sends nothing; a later request of the same user (same
    # partition, so handled after it) shows the duplicate was already consumed.
    await send(harness, request)
    await send(harness, email_request("req-2", "ann", [item(2)]))
    await wait_until(lambda: len(harness.sink.messages) >= 2)
    assert [m.parsed["Subject"] for m in harness.sink.messages] == ["Title 1", "Title 2"]
    await wait_until(lambda: len(harness.statuses()) >= 2)
    assert [s.request_id for s in harness.statuses()] == ["req-1", "req-2"]


async def test_digest_with_n_items_arrives_with_all_of_them(harness: Any, wait_until: Any) -> None:
    await harness.profile("ben", "Ben", "ben@example.org", locale="de-DE", timezone="Europe/Berlin")
    types = ["post.liked", "repo.starred", "post.liked", "issue.opened", "repo.starred"]
    request = email_request(
        "digest-1",
        "ben",
        [item(n, t) for n, t in enumerate(types, start=1)],
        period_start=utc_now() - timedelta(days=1),
        period_end=utc_now(),
    )
    await send(harness, request)

    (msg,) = await wait_until(lambda: list(harness.sink.messages))
    html, text = msg.part("html"), msg.part("plain")
    assert msg.parsed["Subject"] == "Ihre Clarion-Zusammenfassung: 5 Benachrichtigungen"
    for n in range(1, 6):
        assert f'data-notification-id="n{n}"' in html
        assert f"Title {n}" in text
    assert "== Post liked (2) ==" in text
    assert "== Repo starred (2) ==" in text
    assert "== Issue opened (1) ==" in text
    statuses = await wait_until(lambda: h if len(h := harness.statuses()) == 5 else None)
    assert {s.notification_id for s in statuses} == {f"n{n}" for n in range(1, 6)}
    assert {s.status for s in statuses} == {DeliveryState.DELIVERED}


async def test_not_before_in_the_future_defers_until_the_clock_reaches_it(
    harness: Any, wait_until: Any
) -> None:
    await harness.profile("cat", "Cat", "cat@example.net")
    not_before = harness.clock() + timedelta(hours=7)
    await send(harness, email_request("quiet-1", "cat", [item(1)], not_before=not_before))

    (deferred,) = await wait_until(harness.statuses)
    assert deferred.status is DeliveryState.DEFERRED
    assert deferred.reason == "not_before"
    due = await harness.worker.dispatcher.schedule.due_time("quiet-1")
    assert due == pytest.approx(not_before.timestamp())
    assert list(harness.sink.messages) == []

    harness.clock.advance(timedelta(hours=7, seconds=1))
    (msg,) = await wait_until(lambda: list(harness.sink.messages))
    assert msg.parsed["Subject"] == "Title 1"
    delivered = await wait_until(
        lambda: [s for s in harness.statuses() if s.status is DeliveryState.DELIVERED]
    )
    assert delivered[0].request_id == "quiet-1"
    schedule = harness.worker.dispatcher.schedule
    await wait_until(lambda: _is_none(schedule.due_time("quiet-1")))


async def test_permanent_550_is_a_failed_status_and_is_not_retried(
    harness: Any, wait_until: Any
) -> None:
    # The sink refuses recipients starting with "bounce" with 550 5.1.1.
    await harness.profile("dan", "Dan", "bounce-dan@example.com")
    request = email_request("bounce-1", "dan", [item(1)])
    await send(harness, request)

    (failed,) = await wait_until(harness.statuses)
    assert failed.status is DeliveryState.FAILED
    assert failed.reason == "smtp_550"
    assert "Mailbox unavailable" in (failed.detail or "")
    assert await harness.worker.dispatcher.send_log.state("bounce-1") == "failed"
    assert await harness.worker.dispatcher.schedule.due_time("bounce-1|2") is None
    assert list(harness.sink.messages) == []


async def test_transient_451_is_retried_with_backoff(
    harness: Any, smtp_sink: Any, wait_until: Any
) -> None:
    smtp_sink.sink.failures = 1
    await harness.profile("eve", "Eve", "eve@example.com")
    await send(harness, email_request("flaky-1", "eve", [item(1)]))

    (msg,) = await wait_until(lambda: list(harness.sink.messages))
    assert msg.parsed["Message-ID"] == message_id("flaky-1", "clarion.test")
    statuses = await wait_until(lambda: h if len(h := harness.statuses()) == 2 else None)
    assert [(s.status, s.attempt, s.reason) for s in statuses] == [
        (DeliveryState.RETRYING, 1, "smtp_451"),
        (DeliveryState.DELIVERED, 2, None),
    ]
    assert smtp_sink.sink.refused == 1


async def test_email_switched_off_for_the_category_is_skipped(
    harness: Any, wait_until: Any
) -> None:
    await harness.profile("fay", "Fay", "fay@example.com")
    prefs = Preferences(
        user_id="fay",
        categories={"social": ChannelPreference(email=False)},
        updated_at=utc_now(),
    )
    await harness.publish(PREFERENCES, "fay", prefs.to_bytes())
    profiles = harness.worker.dispatcher.profiles
    await wait_until(lambda: profiles.preferences("fay"))
    await send(harness, email_request("off-1", "fay", [item(1)]))

    (skipped,) = await wait_until(harness.statuses)
    assert skipped.status is DeliveryState.SKIPPED
    assert skipped.reason == "preference_off"
    assert list(harness.sink.messages) == []


async def test_transient_failures_run_out_into_the_dlq(
    harness: Any, smtp_sink: Any, wait_until: Any
) -> None:
    smtp_sink.sink.failures = 3  # as many as max_attempts
    await harness.profile("gus", "Gus", "gus@example.com")
    request = email_request("down-1", "gus", [item(1)])
    await send(harness, request)

    statuses = await wait_until(lambda: h if len(h := harness.statuses()) == 3 else None)
    assert [(s.status, s.attempt) for s in statuses] == [
        (DeliveryState.RETRYING, 1),
        (DeliveryState.RETRYING, 2),
        (DeliveryState.FAILED, 3),
    ]
    assert statuses[-1].reason == "retries_exhausted"
    assert list(harness.sink.messages) == []

    value, headers = await harness.first_dead_letter(EMAIL_REQUESTS)
    assert EmailRequest.from_bytes(value) == request
    assert headers["x-clarion-error-type"] == "smtp_451"
    assert headers["x-clarion-attempts"] == "3"
    # A DLQ'd request is not marked as sent: replaying it from the DLQ sends it.
    assert await harness.worker.dispatcher.send_log.state("down-1") == ""
