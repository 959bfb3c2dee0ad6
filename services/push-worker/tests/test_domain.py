"""Unit tests of push-worker's pure logic: payloads, headers, retry decisions."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta

import pytest

from clarion_contracts.v1 import PushRequest
from clarion_push.domain.headers import (
    derive_topic,
    endpoint_host,
    push_headers,
    vapid_audience,
    vapid_claims,
)
from clarion_push.domain.payload import (
    MAX_PLAINTEXT_BYTES,
    build_payload,
    fit,
    payload_fields,
    trimmed_payload,
)
from clarion_push.domain.retry import BackoffPolicy, Outcome, classify, parse_retry_after

NOW = datetime(2026, 11, 24, 12, 0, tzinfo=UTC)


def make_request(**overrides: object) -> PushRequest:
    data: dict[str, object] = {
        "request_id": "n1:2:push",
        "notification_id": "n1",
        "version": 2,
        "recipient_id": "alice",
        "type": "post.liked",
        "category": "social",
        "title": "bob and 2 others liked your post",
        "body": "Hello world",
        "url": "https://example.com/p/1",
        "created_at": NOW,
    }
    data.update(overrides)
    return PushRequest.model_validate(data)


def test_payload_has_the_fields_a_service_worker_needs() -> None:
    payload = json.loads(build_payload(make_request()))
    assert payload["title"] == "bob and 2 others liked your post"
    assert payload["body"] == "Hello world"
    assert payload["url"] == "https://example.com/p/1"
    assert payload["notification_id"] == "n1"
    assert payload["version"] == 2
    assert payload["type"] == "post.liked"


def test_oversized_body_is_shortened_to_the_rfc8291_limit() -> None:
    request = make_request(body="é" * 5000)
    data = build_payload(request)
    assert len(data) <= MAX_PLAINTEXT_BYTES
    body = json.loads(data)["body"]
    assert body.endswith("…")
    assert body.startswith("éé")
    assert json.loads(data)["title"] == request.title


def test_json_escaping_is_counted_when_fitting() -> None:
    # Quotes double in size once JSON-escaped; the result must still fit.
    data = fit(payload_fields(make_request(body='"' * 4000)), 1000)
    assert len(data) <= 1000
    assert json.loads(data)["body"].startswith('"')


def test_trimmed_payload_is_at_most_half_the_refused_size() -> None:
    request = make_request(body="x" * 3000)
    first = build_payload(request)
    second = trimmed_payload(request, len(first))
    assert len(second) <= len(first) // 2
    assert len(second) <= 1024
    assert json.loads(second)["notification_id"] == "n1"


def test_fit_refuses_a_limit_too_small() -> None:
    with pytest.raises(ValueError, match="at least 256"):
        fit(payload_fields(make_request()), 100)


def test_push_headers() -> None:
    assert push_headers(ttl_seconds=60, urgency="high", topic="abc_-1") == {
        "TTL": "60",
        "Urgency": "high",
        "Topic": "abc_-1",
    }
    assert "Topic" not in push_headers(ttl_seconds=0, urgency="low", topic=None)
    with pytest.raises(ValueError, match="topic"):
        push_headers(ttl_seconds=1, urgency="low", topic="has space")
    with pytest.raises(ValueError, match="topic"):
        push_headers(ttl_seconds=1, urgency="low", topic="a" * 33)
    with pytest.raises(ValueError, match="TTL"):
        push_headers(ttl_seconds=-1, urgency="low", topic=None)


def test_derived_topic_is_stable_and_valid() -> None:
    topic = derive_topic("notification-123")
    assert topic == derive_topic("notification-123")
    assert topic != derive_topic("notification-124")
    assert len(topic) == 32
    push_headers(ttl_seconds=1, urgency="normal", topic=topic)  # accepted


@pytest.mark.parametrize(
    ("endpoint", "aud"),
    [
        ("https://fcm.googleapis.com/fcm/send/abc", "https://fcm.googleapis.com"),
        ("https://push.example.com:443/x", "https://push.example.com"),
        ("http://127.0.0.1:8123/push/1", "http://127.0.0.1:8123"),
        ("https://[::1]:9000/p", "https://[::1]:9000"),
    ],
)
def test_vapid_audience_is_the_endpoint_origin(endpoint: str, aud: str) -> None:
    assert vapid_audience(endpoint) == aud


def test_vapid_claims() -> None:
    claims = vapid_claims(
        endpoint="https://push.example.com/x", subject="mailto:ops@example.com", now=1000.0
    )
    assert claims == {
        "aud": "https://push.example.com",
        "sub": "mailto:ops@example.com",
        "exp": 1000 + 12 * 3600,
    }
    with pytest.raises(ValueError, match="24 hours"):
        vapid_claims(endpoint="https://a.b/x", subject="mailto:a@b.c", now=0, lifetime=86401)
    with pytest.raises(ValueError, match="subject"):
        vapid_claims(endpoint="https://a.b/x", subject="ops@example.com", now=0)
    with pytest.raises(ValueError, match="endpoint"):
        vapid_audience("ftp://a.b/x")


def test_endpoint_host() -> None:
    assert endpoint_host("https://push.example.com/a") == "push.example.com:443"
    assert endpoint_host("http://127.0.0.1:81/a") == "127.0.0.1:81"


@pytest.mark.parametrize(
    ("code", "outcome"),
    [
        (201, Outcome.DELIVERED),
        (202, Outcome.DELIVERED),
        (404, Outcome.GONE),
        (410, Outcome.GONE),
        (413, Outcome.TOO_LARGE),
        (429, Outcome.RETRY),
        (500, Outcome.RETRY),
        (503, Outcome.RETRY),
        (None, Outcome.RETRY),
        (400, Outcome.FAILED),
        (403, Outcome.FAILED),
    ],
)
def test_classify(code: int | None, outcome: Outcome) -> None:
    assert classify(code) is outcome


def test_retry_after_seconds_and_dates() -> None:
    assert parse_retry_after("120", NOW) == 120.0
    assert parse_retry_after(" 0 ", NOW) == 0.0
    http_date = "Tue, 24 Nov 2026 12:00:30 GMT"
    assert parse_retry_after(http_date, NOW) == 30.0
    assert parse_retry_after("Tue, 24 Nov 2026 11:00:00 GMT", NOW) == 0.0
    assert parse_retry_after(None, NOW) is None
    assert parse_retry_after("", NOW) is None
    assert parse_retry_after("soon", NOW) is None
    assert parse_retry_after("-5", NOW) is None


def test_backoff_is_exponential_bounded_and_honours_retry_after() -> None:
    policy = BackoffPolicy(
        max_attempts=4, base_seconds=1.0, max_seconds=5.0, max_retry_after_seconds=60.0
    )
    assert [policy.delay(a) for a in (1, 2, 3, 4)] == [1.0, 2.0, 4.0, 5.0]
    assert policy.delay(1, jitter=0.5) == 1.5
    assert policy.delay(1, retry_after=30.0) == 30.0
    assert policy.delay(3, retry_after=2.0) == 4.0
    assert policy.delay(1, retry_after=7200.0) == 60.0
    assert not policy.exhausted(3)
    assert policy.exhausted(4)
    with pytest.raises(ValueError, match="1-based"):
        policy.delay(0)


def test_retry_after_date_in_future_days() -> None:
    later = (NOW + timedelta(days=1)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    assert parse_retry_after(later, NOW) == 86400.0
