"""Unit tests of the aggregator settings and clocks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from clarion_aggregator.domain.clock import ManualClock, SystemClock, from_ms, to_ms
from clarion_aggregator.settings import AggregatorSettings
from clarion_contracts.registry import DOMAIN_EVENTS


def test_defaults() -> None:
    s = AggregatorSettings()
    assert (s.service_name, s.http_port, s.consumer_group) == ("aggregator", 8003, "aggregator")
    assert s.push_throttle_seconds == 300
    assert s.rules_path is None


def test_prefixed_and_shared_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CLARION_AGGREGATOR_PUSH_THROTTLE_SECONDS", "60")
    monkeypatch.setenv("CLARION_AGGREGATOR_RULES_PATH", "/etc/clarion/rules.yaml")
    monkeypatch.setenv("CLARION_REDIS_URL", "redis://shared:6379/0")
    monkeypatch.setenv("CLARION_TOPIC_PREFIX", "staging.")
    monkeypatch.setenv("CLARION_HTTP_PORT", "9999")  # not a shared field: ignored
    s = AggregatorSettings()
    assert s.push_throttle_seconds == 60
    assert s.rules_path == "/etc/clarion/rules.yaml"
    assert s.redis_url == "redis://shared:6379/0"
    assert s.http_port == 8003
    assert s.topic(DOMAIN_EVENTS) == "staging.clarion.domain-events.v1"


def test_manual_clock() -> None:
    clock = ManualClock(datetime(2026, 1, 1, tzinfo=UTC))
    assert clock.advance(timedelta(minutes=5)) == datetime(2026, 1, 1, 0, 5, tzinfo=UTC)
    clock.set(datetime(2027, 1, 1, tzinfo=UTC))
    assert clock.now().year == 2027
    with pytest.raises(ValueError, match="aware"):
        ManualClock(datetime(2026, 1, 1))
    with pytest.raises(ValueError, match="aware"):
        clock.set(datetime(2026, 1, 1))


def test_system_clock_and_conversions() -> None:
    now = SystemClock().now()
    assert now.tzinfo is not None
    instant = datetime(2026, 3, 2, 12, 0, 0, 123000, tzinfo=UTC)
    assert to_ms(instant) == 1772452800123
    assert from_ms(to_ms(instant)) == instant
