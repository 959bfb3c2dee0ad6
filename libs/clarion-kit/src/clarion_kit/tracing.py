"""OpenTelemetry tracing and W3C Trace Context propagation through Kafka headers.

A trace crosses services in the ``traceparent`` (and ``tracestate``) record
headers, as the W3C Trace Context recommendation defines them; FastStream's
``KafkaTelemetryMiddleware`` (installed by :func:`clarion_kit.kafka.create_broker`)
does it for brokered messages, and :func:`inject` / :func:`extract` do it for
header collections handled by hand (aiokafka ``[(str, bytes)]`` lists or dicts).
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterable, Iterator, Mapping, MutableMapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar

from opentelemetry import propagate, trace
from opentelemetry.context import Context
from opentelemetry.propagators.textmap import Getter, Setter
from opentelemetry.sdk.resources import SERVICE_INSTANCE_ID, SERVICE_NAME, Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SimpleSpanProcessor,
    SpanExporter,
)
from opentelemetry.sdk.trace.id_generator import RandomIdGenerator
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

if TYPE_CHECKING:
    from fastapi.telemetry import TelemetryConfig

    from clarion_kit.settings import ServiceSettings

HeaderList = list[tuple[str, bytes]]
"""Kafka record headers as aiokafka exposes them."""

H = TypeVar("H", bound="MutableMapping[str, Any] | HeaderList")


_IDS = RandomIdGenerator()
_attached: set[int] = set()
_configured: set[tuple[str, str | None]] = set()
"""(exporter kind, endpoint) pairs already exporting, from settings."""


def create_exporter(settings: ServiceSettings) -> SpanExporter | None:
    """The span exporter ``settings.otel_exporter`` names, or None for ``none``.

    ``otlp`` is OTLP/HTTP protobuf (OpenTelemetry Protocol) to ``otel_endpoint``, or to
    the standard ``OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT`` when that is unset.
    """
    if settings.otel_exporter == "otlp":
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        return OTLPSpanExporter(endpoint=settings.otel_endpoint)
    if settings.otel_exporter == "console":
        return ConsoleSpanExporter()
    return None


def configure_tracing(
    settings: ServiceSettings,
    exporter: SpanExporter | None = None,
    *,
    batch: bool | None = None,
) -> TracerProvider:
    """Install the process's OpenTelemetry tracer provider and return it.

    The resource carries ``service.name`` = ``settings.service_name`` and
    ``service.instance.id``; sampling is parent-based with ``otel_sample_ratio``.

    Args:
        settings: ``otel_exporter`` picks the exporter when ``exporter`` is None:
            ``none`` (spans are created, so trace ids reach logs and headers, but not
            exported), ``otlp`` (OTLP/HTTP protobuf to ``otel_endpoint`` or the
            ``OTEL_EXPORTER_OTLP_*`` environment) or ``console`` (stdout).
        exporter: an exporter to use instead, e.g. ``InMemorySpanExporter`` in tests.
        batch: batch spans before export; default True for OTLP, False otherwise
            (so an injected exporter sees each span as soon as it ends).

    OpenTelemetry allows one global provider per process: when one is already
    installed, the new exporter is added to it (once) and the existing provider is returned.
    Calling it again with settings naming the same exporter and endpoint adds nothing.
    """
    if exporter is None:
        target = (settings.otel_exporter, settings.otel_endpoint)
        # A second configuration from the same settings adds nothing (no duplicate spans).
        exporter = None if target in _configured else create_exporter(settings)
        if exporter is not None:
            _configured.add(target)
        if batch is None and settings.otel_exporter == "otlp":
            batch = True
    processor = None
    if exporter is not None and id(exporter) in _attached:
        exporter = None  # already exporting to it: a second processor would duplicate spans
    if exporter is not None:
        _attached.add(id(exporter))
        processor = BatchSpanProcessor(exporter) if batch else SimpleSpanProcessor(exporter)

    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        if processor is not None:
            current.add_span_processor(processor)
        return current

    provider = TracerProvider(
        resource=Resource.create(
            {SERVICE_NAME: settings.service_name, SERVICE_INSTANCE_ID: settings.instance_id}
        ),
        sampler=ParentBased(TraceIdRatioBased(settings.otel_sample_ratio)),
    )
    if processor is not None:
        provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    return provider


def ensure_tracing(settings: ServiceSettings) -> TracerProvider:
    """The installed SDK tracer provider, or one configured from ``settings`` if none is.

    For code paths every service goes through (:func:`clarion_kit.kafka.create_broker`):
    a service that already called :func:`configure_tracing` keeps its provider and
    exporters untouched (no second exporter, so no duplicated spans).
    """
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    return configure_tracing(settings)


def shutdown_tracing() -> None:
    """Flush and shut down the global SDK tracer provider (call at process exit)."""
    provider = trace.get_tracer_provider()
    if isinstance(provider, TracerProvider):
        provider.force_flush()
        provider.shutdown()


def exporting() -> bool:
    """Whether :func:`configure_tracing` attached a span exporter in this process.

    Without one, a span's only use is its ids (for logs and the ``traceparent`` of
    what the process produces): the batch helpers below then make non-recording
    child spans, which cost a fraction of an SDK span.
    """
    return bool(_attached)


def _child_span(parent: Context) -> trace.Span:
    """A non-recording span continuing ``parent``'s trace with a new span id.

    W3C Trace Context: same ``trace-id``, ``trace-flags`` and ``tracestate`` as the
    parent, a fresh ``parent-id``; a new sampled trace when ``parent`` has none.
    """
    remote = trace.get_current_span(parent).get_span_context()
    if remote.is_valid:
        trace_id, flags, state = remote.trace_id, remote.trace_flags, remote.trace_state
    else:
        trace_id = _IDS.generate_trace_id()
        flags, state = trace.TraceFlags(trace.TraceFlags.SAMPLED), trace.TraceState()
    context = trace.SpanContext(
        trace_id=trace_id,
        span_id=_IDS.generate_span_id(),
        is_remote=False,
        trace_flags=flags,
        trace_state=state,
    )
    return trace.NonRecordingSpan(context)


_TRACEPARENT = re.compile(r"[ \t]*([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})")
_ZERO_TRACE = "0" * 32
_ZERO_SPAN = "0" * 16


def _child_carrier(carrier: Mapping[str, Any] | Iterable[tuple[str, Any]] | None) -> dict[str, str]:
    """Headers of a non-recording child of ``carrier``'s trace (see :func:`_child_span`).

    Parses ``traceparent`` / ``tracestate`` straight from the record headers (W3C
    Trace Context §3.2, version 00 and future versions read as 00): a batch of
    thousands of records does not go through the propagator API per record.
    """
    parent: Any = None
    state: Any = None
    if carrier is not None:
        for key, value in carrier.items() if isinstance(carrier, Mapping) else carrier:
            name = key.lower()
            if name == "traceparent":
                parent = value
            elif name == "tracestate":
                state = value
    trace_id = flags = None
    if parent is not None:
        text = parent.decode("latin-1") if isinstance(parent, bytes | bytearray) else str(parent)
        match = _TRACEPARENT.match(text)
        if (
            match is not None
            and match[1] != "ff"
            and match[2] != _ZERO_TRACE
            and match[3] != _ZERO_SPAN
            and (match[1] != "00" or len(text.strip()) == 55)
        ):
            trace_id, flags = match[2], match[4]
    if trace_id is None:
        # A new trace, sampled (as the SDK's default sampler decides for a root).
        trace_id, flags, state = f"{_IDS.generate_trace_id():032x}", "01", None
    out = {"traceparent": f"00-{trace_id}-{_IDS.generate_span_id():016x}-{flags}"}
    if state:
        out["tracestate"] = (
            state.decode("latin-1") if isinstance(state, bytes | bytearray) else str(state)
        )
    return out


def http_telemetry(*, tracing: bool = True) -> TelemetryConfig:
    """FastAPI's native OpenTelemetry settings for Clarion's HTTP apps (``telemetry=``).

    One server span per request (``tracing``; the root of a domain event's trace at
    ``POST /v1/events``), none for dependency resolution, endpoint and serialisation
    (several spans per request), and no OpenTelemetry metrics or logs: Prometheus
    (:mod:`clarion_kit.metrics`) and structlog cover those.
    """
    return {"tracing": tracing, "operation_spans": False, "metrics": False, "logs": False}


def get_tracer(name: str) -> trace.Tracer:
    """A tracer from the global provider (a no-op one until tracing is configured)."""
    return trace.get_tracer(name)


class _HeaderGetter(Getter[Any]):
    def get(self, carrier: Any, key: str) -> list[str] | None:
        key = key.lower()
        items: Iterable[tuple[str, Any]] = (
            carrier.items() if isinstance(carrier, Mapping) else carrier
        )
        values = [
            v.decode("latin-1") if isinstance(v, bytes | bytearray) else str(v)
            for k, v in items
            if k.lower() == key and v is not None
        ]
        return values or None

    def keys(self, carrier: Any) -> list[str]:
        if isinstance(carrier, Mapping):
            return [str(k) for k in carrier]
        return [k for k, _ in carrier]


class _HeaderSetter(Setter[Any]):
    def set(self, carrier: Any, key: str, value: str) -> None:
        if isinstance(carrier, MutableMapping):
            # A bytes-valued dict stays bytes-valued (Kafka header values are bytes).
            as_bytes = any(isinstance(v, bytes | bytearray) for v in carrier.values())
            carrier[key] = value.encode("latin-1") if as_bytes else value
        else:
            carrier[:] = [(k, v) for k, v in carrier if k.lower() != key.lower()]
            carrier.append((key, value.encode("latin-1")))


_GETTER = _HeaderGetter()
_SETTER = _HeaderSetter()


def inject(headers: H, context: Context | None = None) -> H:
    """Write the current (or ``context``'s) trace context into Kafka headers.

    Args:
        headers: a ``dict`` (values stay ``str``, or ``bytes`` if the dict already
            holds bytes) or an aiokafka header list ``[(name, bytes)]``; modified in place.
        context: the context to propagate; default the current one.

    Returns:
        ``headers``, with ``traceparent`` (and ``tracestate`` when set) per W3C Trace Context.
        Nothing is written outside a recording or remote span.
    """
    propagate.inject(headers, context=context, setter=_SETTER)
    return headers


def extract(
    headers: Mapping[str, Any] | Iterable[tuple[str, Any]] | None,
    context: Context | None = None,
) -> Context:
    """Read the W3C trace context from Kafka headers (dict or ``[(name, bytes)]``).

    Returns:
        A context whose span is the remote parent, for ``tracer.start_as_current_span(
        ..., context=extract(headers))``; ``context`` (default: an empty one) unchanged
        when the headers carry no valid ``traceparent``.
    """
    if headers is None:
        return context if context is not None else Context()
    carrier = headers if isinstance(headers, Mapping) else list(headers)
    return propagate.extract(carrier, context=context, getter=_GETTER)


class ConsumedRecord(Protocol):
    """What :func:`record_spans` reads of a consumed record (aiokafka ``ConsumerRecord``)."""

    @property
    def topic(self) -> str: ...

    @property
    def partition(self) -> int: ...

    @property
    def offset(self) -> int: ...

    @property
    def headers(self) -> Any: ...


@contextlib.contextmanager
def record_spans(
    records: Iterable[ConsumedRecord], *, tracer: trace.Tracer | None = None
) -> Iterator[list[trace.Span]]:
    """One ``CONSUMER`` span per record, each a child of the trace context in its headers.

    For records consumed by hand (aiokafka ``getmany``) and processed as a batch: every
    record keeps its own trace (W3C Trace Context ``traceparent`` header), where a single
    batch span would start a new trace and only link to the producers. Spans are named
    ``"<topic> process"`` with the OpenTelemetry messaging attributes
    (``messaging.system=kafka``, destination, partition, offset); they start on entry
    and end on exit, with the exception recorded and status ``ERROR`` if one escapes.
    A record without a valid ``traceparent`` gets a span in a new trace.

    Args:
        records: the batch (anything with ``topic``, ``partition``, ``offset``, ``headers``).
        tracer: default: the global provider's ``clarion_kit.tracing`` tracer.

    Yields:
        The spans, in record order (none is made current: the batch is one unit of work).
        Non-recording spans carrying the same ids when nothing exports
        (:func:`exporting`) and no ``tracer`` is given.
    """
    if tracer is None and not exporting():
        yield [_child_span(extract(record.headers)) for record in records]
        return
    tracer = tracer or get_tracer(__name__)
    spans = [
        tracer.start_span(
            f"{record.topic} process",
            context=extract(record.headers),
            kind=trace.SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation": "process",
                "messaging.destination.name": record.topic,
                "messaging.kafka.destination.partition": record.partition,
                "messaging.kafka.message.offset": record.offset,
            },
        )
        for record in records
    ]
    with _ending(spans):
        yield spans


@contextlib.contextmanager
def continue_traces(
    name: str,
    carriers: Iterable[Mapping[str, Any] | Iterable[tuple[str, Any]] | None],
    *,
    attributes: Mapping[str, str | int] | None = None,
    tracer: trace.Tracer | None = None,
) -> Iterator[list[dict[str, str]]]:
    """One ``CONSUMER`` span per item of a batch, each continuing the item's own trace.

    For batch handlers that already parsed their records: ``carriers`` are the items'
    Kafka headers (W3C Trace Context), in item order. Each span is a child of its
    carrier's ``traceparent`` (a new trace when there is none); what the handler
    produces for item *i* carries ``yielded[i]`` as its headers, so it continues the
    trace below that span (see :class:`clarion_kit.kafka.CallerTraceContextMiddleware`,
    or send the headers with a raw producer). Spans end on exit, with the exception
    recorded and status ``ERROR`` if one escapes.

    Args:
        name: span name, e.g. ``"clarion.domain-events.v1 process"``.
        carriers: the items' headers (dict, ``[(name, bytes)]`` or None).
        attributes: set on every span (e.g. ``messaging.destination.name``).
        tracer: default: the global provider's ``clarion_kit.tracing`` tracer.

    Yields:
        ``[{"traceparent": ...}]`` (plus ``tracestate`` when set), one dict per item.
        When nothing exports (:func:`exporting`) and no ``tracer`` is given, the spans
        are non-recording children with new span ids: the trace still continues.
    """
    if tracer is None and not exporting():
        yield [_child_carrier(c) for c in carriers]
        return
    tracer = tracer or get_tracer(__name__)
    attrs: dict[str, str | int] = {"messaging.system": "kafka", "messaging.operation": "process"}
    attrs.update(attributes or {})
    spans = [
        tracer.start_span(
            name, context=extract(carrier), kind=trace.SpanKind.CONSUMER, attributes=attrs
        )
        for carrier in carriers
    ]
    with _ending(spans):
        yield [inject({}, trace.set_span_in_context(span)) for span in spans]


@contextlib.contextmanager
def producer_traces(
    topics: Sequence[str], *, tracer: trace.Tracer | None = None
) -> Iterator[list[dict[str, str]]]:
    """The W3C Trace Context headers of records about to be produced, one dict per record.

    When spans are exported (:func:`exporting`, or with a ``tracer``): one
    ``PRODUCER`` span ``"<topic> create"`` per record (OpenTelemetry messaging
    conventions), children of the current span, ending on exit (the caller exits once
    the broker acknowledged), with the error recorded if one escapes. Otherwise no
    span: every record carries the current span's context, which costs nothing.

    Args:
        topics: each record's topic, in record order.
        tracer: default: the global provider's ``clarion_kit.tracing`` tracer.

    Yields:
        ``[{"traceparent": ...}]`` per record (empty dicts outside any trace).
    """
    if tracer is None and not exporting():
        current: dict[str, str] = inject({})
        yield [dict(current) for _ in topics]
        return
    tracer = tracer or get_tracer(__name__)
    spans = [
        tracer.start_span(
            f"{topic} create",
            kind=trace.SpanKind.PRODUCER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation": "create",
                "messaging.destination.name": topic,
            },
        )
        for topic in topics
    ]
    with _ending(spans):
        yield [inject({}, trace.set_span_in_context(span)) for span in spans]


@contextlib.contextmanager
def _ending(spans: list[trace.Span]) -> Iterator[None]:
    try:
        yield
    except BaseException as exc:
        for span in spans:
            span.record_exception(exc)
            span.set_status(trace.Status(trace.StatusCode.ERROR, type(exc).__name__))
        raise
    finally:
        for span in spans:
            span.end()
