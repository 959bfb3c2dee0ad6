"""JSON log records with service and trace ids."""

from __future__ import annotations

import io
import json
import logging

import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clarion_kit.logging import configure_logging, get_logger
from clarion_kit.settings import ServiceSettings
from clarion_kit.tracing import get_tracer


@pytest.fixture
def stream(clean_env: pytest.MonkeyPatch) -> io.StringIO:
    out = io.StringIO()
    configure_logging(ServiceSettings(service_name="kit-log", log_level="DEBUG"), stream=out)
    return out


def _records(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines() if line.strip()]


def test_json_record_with_trace_ids(stream: io.StringIO, spans: InMemorySpanExporter) -> None:
    log = get_logger("clarion.test")
    with get_tracer("t").start_as_current_span("op") as span:
        log.info("notification created", notification_id="n-1")
        ctx = span.get_span_context()
    rec = _records(stream)[-1]
    assert rec["event"] == "notification created"
    assert rec["notification_id"] == "n-1"
    assert rec["service"] == "kit-log"
    assert rec["level"] == "info"
    assert rec["logger"] == "clarion.test"
    assert rec["trace_id"] == f"{ctx.trace_id:032x}"
    assert rec["span_id"] == f"{ctx.span_id:016x}"
    assert str(rec["timestamp"]).endswith("Z")


def test_stdlib_records_are_json_too(stream: io.StringIO) -> None:
    logging.getLogger("uvicorn.error").warning("port %d busy", 8000)
    rec = _records(stream)[-1]
    assert rec["event"] == "port 8000 busy"
    assert rec["level"] == "warning"
    assert "trace_id" not in rec


def test_exception_is_rendered(stream: io.StringIO) -> None:
    try:
        raise ValueError("bad input")
    except ValueError:
        get_logger("x").exception("failed")
    rec = _records(stream)[-1]
    assert "ValueError: bad input" in str(rec["exception"])


def test_reconfigure_replaces_handler(stream: io.StringIO) -> None:
    second = io.StringIO()
    configure_logging(ServiceSettings(service_name="again"), stream=second)
    get_logger("x").info("once")
    assert "once" not in stream.getvalue()
    assert _records(second)[-1]["service"] == "again"


def test_stdlib_extra_is_kept(stream: io.StringIO) -> None:
    logging.getLogger("clarion.kafka").info("Received", extra={"topic": "t1", "group_id": "g"})
    rec = _records(stream)[-1]
    assert (rec["event"], rec["topic"], rec["group_id"]) == ("Received", "t1", "g")
