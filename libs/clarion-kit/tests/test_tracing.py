"""Tracer provider set-up and W3C Trace Context through Kafka header carriers."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from clarion_kit.settings import ServiceSettings
from clarion_kit.tracing import configure_tracing, create_exporter, extract, get_tracer, inject


def test_provider_is_global_and_named(spans: InMemorySpanExporter) -> None:
    provider = trace.get_tracer_provider()
    assert isinstance(provider, TracerProvider)
    assert provider.resource.attributes["service.name"] == "kit-tests"
    with get_tracer("t").start_as_current_span("work"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["work"]


def test_second_configure_adds_exporter(spans: InMemorySpanExporter) -> None:
    extra = InMemorySpanExporter()
    provider = configure_tracing(ServiceSettings(service_name="ignored"), exporter=extra)
    assert provider is trace.get_tracer_provider()
    with get_tracer("t").start_as_current_span("both"):
        pass
    assert [s.name for s in extra.get_finished_spans()] == ["both"]
    assert [s.name for s in spans.get_finished_spans()] == ["both"]
    extra.shutdown()


def test_inject_extract_dict(spans: InMemorySpanExporter) -> None:
    tracer = get_tracer("t")
    headers: dict[str, str] = {}
    with tracer.start_as_current_span("produce") as span:
        inject(headers)
        trace_id = span.get_span_context().trace_id
        span_id = span.get_span_context().span_id
    version, tid, sid, flags = headers["traceparent"].split("-")
    assert (version, tid, sid) == ("00", f"{trace_id:032x}", f"{span_id:016x}")
    assert int(flags, 16) & 0x01  # sampled

    ctx = extract(headers)
    with tracer.start_as_current_span("consume", context=ctx) as child:
        assert child.get_span_context().trace_id == trace_id
    consume = next(s for s in spans.get_finished_spans() if s.name == "consume")
    assert consume.parent is not None
    assert consume.parent.span_id == span_id


def test_inject_extract_aiokafka_list(spans: InMemorySpanExporter) -> None:
    tracer = get_tracer("t")
    headers: list[tuple[str, bytes]] = [("content-type", b"application/json")]
    with tracer.start_as_current_span("produce") as span:
        inject(headers)
        inject(headers)  # injecting twice keeps one traceparent
        trace_id = span.get_span_context().trace_id
    names = [k for k, _ in headers]
    assert names.count("traceparent") == 1
    assert all(isinstance(v, bytes) for _, v in headers)
    parent = trace.get_current_span(extract(headers)).get_span_context()
    assert parent.trace_id == trace_id
    assert parent.is_remote


def test_bytes_dict_stays_bytes(spans: InMemorySpanExporter) -> None:
    headers: dict[str, bytes] = {"x": b"1"}
    with get_tracer("t").start_as_current_span("p"):
        inject(headers)
    assert isinstance(headers["traceparent"], bytes)
    assert trace.get_current_span(extract(headers)).get_span_context().is_valid


def test_extract_without_context() -> None:
    for carrier in (None, {}, [("traceparent", b"garbage")]):
        assert not trace.get_current_span(extract(carrier)).get_span_context().is_valid


def test_inject_outside_span_writes_nothing() -> None:
    headers: dict[str, str] = {}
    inject(headers)
    assert "traceparent" not in headers


def test_create_exporter(clean_env: pytest.MonkeyPatch) -> None:
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    assert create_exporter(ServiceSettings()) is None
    assert isinstance(
        create_exporter(ServiceSettings(otel_exporter="console")), ConsoleSpanExporter
    )
    otlp = create_exporter(
        ServiceSettings(otel_exporter="otlp", otel_endpoint="http://127.0.0.1:4318/v1/traces")
    )
    assert isinstance(otlp, OTLPSpanExporter)
    assert otlp._endpoint == "http://127.0.0.1:4318/v1/traces"
    otlp.shutdown()
