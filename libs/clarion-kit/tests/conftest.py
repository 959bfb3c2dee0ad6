"""Fixtures of the clarion-kit tests."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Iterator
from typing import Any

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clarion_kit.redis import create_redis, ping
from clarion_kit.settings import ServiceSettings
from clarion_kit.tracing import configure_tracing

_SPANS = InMemorySpanExporter()


@pytest.fixture(scope="session", autouse=True)
def _tracer_provider() -> None:
    """Install the process tracer provider first: ``create_broker`` would otherwise install
    one named after the first test's settings (``clarion_kit.tracing.ensure_tracing``)."""
    configure_tracing(ServiceSettings(service_name="kit-tests"), exporter=_SPANS)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    """No ``CLARION_*`` variable of the outer environment leaks into settings tests."""
    for name in list(os.environ):
        if name.upper().startswith("CLARION_"):
            monkeypatch.delenv(name)
    return monkeypatch


@pytest.fixture
def spans() -> Iterator[InMemorySpanExporter]:
    """The process tracer provider (configured once) exporting into memory, emptied per test."""
    configure_tracing(ServiceSettings(service_name="kit-tests"), exporter=_SPANS)
    _SPANS.clear()
    yield _SPANS
    _SPANS.clear()


@pytest.fixture
async def redis(devstack: Any, clean_env: pytest.MonkeyPatch) -> AsyncIterator[Any]:
    """A client of the devstack's Redis, connected (tests isolate keys by ``redis_prefix``)."""
    client = create_redis(ServiceSettings(redis_url=devstack.redis_url))
    await ping(client)
    yield client
    await client.aclose()
