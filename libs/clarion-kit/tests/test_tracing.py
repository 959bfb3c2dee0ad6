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


def test_ensure_tracing_keeps_the_installed_provider(spans: InMemorySpanExporter) -> None:
    from clarion_kit.tracing import ensure_tracing

    installed = trace.get_tracer_provider()
    assert ensure_tracing(ServiceSettings(service_name="other", otel_exporter="console")) is (
        installed
    )
    with get_tracer("t").start_as_current_span("once"):
        pass
    assert [s.name for s in spans.get_finished_spans()] == ["once"]  # no second exporter


class _Record:
    def __init__(self, topic: str, offset: int, headers: list[tuple[str, bytes]]) -> None:
        self.topic = topic
        self.partition = 2
        self.offset = offset
        self.headers = headers


def test_record_spans_continue_each_records_trace(spans: InMemorySpanExporter) -> None:
    from clarion_kit.tracing import record_spans

    tracer = get_tracer("t")
    carriers: list[list[tuple[str, bytes]]] = []
    parents = []
    for name in ("a", "b"):
        with tracer.start_as_current_span(f"produce-{name}") as span:
            carriers.append(inject([]))
            parents.append(span.get_span_context())
    spans.clear()
    records = [_Record("t.notifications", n, h) for n, h in enumerate([*carriers, []])]
    with record_spans(records) as started:
        assert len(started) == 3
    done = spans.get_finished_spans()
    assert [s.name for s in done] == ["t.notifications process"] * 3
    for span, parent in zip(done[:2], parents, strict=True):
        assert span.context.trace_id == parent.trace_id
        assert span.parent is not None
        assert span.parent.span_id == parent.span_id
        assert span.kind is trace.SpanKind.CONSUMER
    assert done[0].attributes["messaging.kafka.message.offset"] == 0
    assert done[1].attributes["messaging.destination.name"] == "t.notifications"
    assert done[2].parent is None  # no traceparent: a new trace
    assert done[2].context.trace_id not in {p.trace_id for p in parents}


def test_record_spans_record_the_error(spans: InMemorySpanExporter) -> None:
    from clarion_kit.tracing import record_spans

    with pytest.raises(RuntimeError), record_spans([_Record("t.x", 0, [])]):
        raise RuntimeError("redis down")
    (span,) = spans.get_finished_spans()
    assert span.status.status_code is trace.StatusCode.ERROR
    assert span.events[0].name == "exception"


async def test_published_record_continues_the_trace_in_its_headers(
    spans: InMemorySpanExporter,
) -> None:
    """A batch handler publishes each output in the trace of the record it came from."""
    from faststream.kafka import KafkaMessage, TestKafkaBroker

    from clarion_kit.kafka import create_broker

    broker = create_broker(ServiceSettings(service_name="kit-tests"), dead_letter=False)
    got: list[dict[str, str]] = []

    @broker.subscriber("t.out")  # type: ignore[untyped-decorator]
    async def out(body: str, message: KafkaMessage) -> None:
        got.append({k: v for k, v in message.headers.items() if k == "traceparent"})

    tracer = get_tracer("t")
    with tracer.start_as_current_span("upstream") as upstream:
        parent = inject({})
    async with TestKafkaBroker(broker) as br:
        with tracer.start_as_current_span("batch") as batch:
            sent = dict(parent)
            await br.publish("x", "t.out", headers=sent)  # explicit parent: upstream
            await br.publish("y", "t.out")  # none: the current (batch) span
            await br.publish("z", "t.out", headers=sent)  # the same dict again
    assert sent == parent  # the caller's headers are not rewritten
    first, second, third = (trace.get_current_span(extract(g)).get_span_context() for g in got)
    assert first.trace_id == third.trace_id == upstream.get_span_context().trace_id
    assert second.trace_id == batch.get_span_context().trace_id
    creates = {s.context.span_id: s for s in spans.get_finished_spans()}
    for hop in (creates[first.span_id], creates[third.span_id]):
        assert hop.parent is not None
        assert hop.parent.span_id == upstream.get_span_context().span_id


def test_continue_traces_gives_each_item_a_child_span(spans: InMemorySpanExporter) -> None:
    from clarion_kit.tracing import continue_traces

    with get_tracer("t").start_as_current_span("upstream") as upstream:
        carrier = inject([])
    spans.clear()
    attrs = {"messaging.destination.name": "t.events"}
    with continue_traces("t.events process", [carrier, None], attributes=attrs) as out:
        assert len(out) == 2
    first, second = spans.get_finished_spans()
    assert first.parent is not None
    assert first.parent.span_id == upstream.get_span_context().span_id
    assert second.parent is None
    assert first.attributes["messaging.destination.name"] == "t.events"
    for span, headers in zip((first, second), out, strict=True):
        # What the item produces continues the trace below its span.
        parent = trace.get_current_span(extract(headers)).get_span_context()
        assert (parent.trace_id, parent.span_id) == (span.context.trace_id, span.context.span_id)


def test_configuring_twice_from_settings_adds_one_exporter(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clarion_kit import tracing

    made: list[InMemorySpanExporter] = []

    def create(_: ServiceSettings) -> InMemorySpanExporter:
        made.append(InMemorySpanExporter())
        return made[-1]

    monkeypatch.setattr(tracing, "create_exporter", create)
    settings = ServiceSettings(otel_exporter="otlp", otel_endpoint="http://127.0.0.1:9/v1/traces")
    provider = configure_tracing(settings)
    configure_tracing(settings)
    assert len(made) == 1
    with get_tracer("t").start_as_current_span("exported-once"):
        pass
    provider.force_flush()
    assert [s.name for s in made[0].get_finished_spans()] == ["exported-once"]


def test_without_an_exporter_batch_spans_only_continue_the_ids(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from dataclasses import dataclass

    from clarion_kit import tracing

    with get_tracer("t").start_as_current_span("upstream") as upstream:
        carrier = inject([])
    up = upstream.get_span_context()
    spans.clear()
    monkeypatch.setattr(tracing, "_attached", set())
    assert not tracing.exporting()
    with tracing.continue_traces("t.events process", [carrier, None, carrier]) as out:
        got = [trace.get_current_span(extract(h)).get_span_context() for h in out]

    @dataclass
    class Rec:
        topic: str
        partition: int
        offset: int
        headers: object

    with tracing.record_spans([Rec("t", 0, 1, carrier), Rec("t", 0, 2, None)]) as made:
        from_records = [s.get_span_context() for s in made]
    assert spans.get_finished_spans() == ()
    assert all(c.is_valid for c in got + from_records)
    assert got[0].trace_id == got[2].trace_id == from_records[0].trace_id == up.trace_id
    assert got[1].trace_id != up.trace_id
    assert from_records[1].trace_id != up.trace_id
    ids = {c.span_id for c in got + from_records} | {up.span_id}
    assert len(ids) == 6
    assert all(not s.is_recording() for s in made)


def test_producer_traces_make_one_child_span_per_record(
    spans: InMemorySpanExporter, monkeypatch: pytest.MonkeyPatch
) -> None:
    from clarion_kit import tracing

    with get_tracer("t").start_as_current_span("request") as request:
        with tracing.producer_traces(["t.a", "t.b"]) as carriers:
            pass
        exported = {s.context.span_id: s for s in spans.get_finished_spans()}
        monkeypatch.setattr(tracing, "_attached", set())
        with tracing.producer_traces(["t.a", "t.b"]) as plain:
            pass
    made = [trace.get_current_span(extract(c)).get_span_context() for c in carriers]
    for ctx, topic in zip(made, ("t.a", "t.b"), strict=True):
        span = exported[ctx.span_id]
        assert span.name == f"{topic} create"
        assert span.kind is trace.SpanKind.PRODUCER
        assert span.parent is not None
        assert span.parent.span_id == request.get_span_context().span_id
    # Nothing exported: every record carries the request span itself.
    for carrier in plain:
        ctx = trace.get_current_span(extract(carrier)).get_span_context()
        assert ctx.span_id == request.get_span_context().span_id


def test_without_an_exporter_batch_carriers_parse_w3c_headers(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from clarion_kit import tracing

    monkeypatch.setattr(tracing, "_attached", set())
    trace_id = "4bf92f3577b34da6a3ce929d0e0e4736"
    good = [
        ("content-type", b"application/json"),
        ("TraceParent", f"00-{trace_id}-00f067aa0ba902b7-01".encode()),
        ("tracestate", b"vendor=x"),
    ]
    unsampled = {"traceparent": f"00-{trace_id}-00f067aa0ba902b7-00"}
    bad = [
        {"traceparent": f"ff-{trace_id}-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{'0' * 32}-00f067aa0ba902b7-01"},
        {"traceparent": f"00-{trace_id}-{'0' * 16}-01"},
        {"traceparent": "garbage"},
    ]
    with tracing.continue_traces("t process", [good, unsampled, *bad]) as out:
        pass
    first, second, *fresh = out
    assert first["traceparent"].startswith(f"00-{trace_id}-")
    assert first["traceparent"].endswith("-01")
    assert first["tracestate"] == "vendor=x"
    assert "00f067aa0ba902b7" not in first["traceparent"]
    assert second["traceparent"].endswith("-00")
    for carrier in fresh:
        ctx = trace.get_current_span(extract(carrier)).get_span_context()
        assert ctx.is_valid
        assert f"{ctx.trace_id:032x}" != trace_id
        assert "tracestate" not in carrier
