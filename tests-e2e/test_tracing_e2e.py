"""End to end: one domain event is one OpenTelemetry trace across the services' processes.

Every service is launched as its own process with ``CLARION_OTEL_EXPORTER=otlp``,
exporting OTLP/HTTP protobuf to a small receiver this test runs on 127.0.0.1. One
event is posted to ingest-api for a user whose WebSocket session is open; once the
session got the notification's frame, the spans the services exported must form one
trace: ingest-api's producer span is its root, the aggregator's producer spans of
the notification are its children, and the realtime-gateway's span for the
notification record (which appends it to the user's stream and publishes the frame)
is a child of those. W3C ``traceparent`` crosses Kafka between real processes twice.
"""

from __future__ import annotations

import asyncio
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import httpx
import pytest
from harness import launch
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)

from clarion_contracts.registry import DOMAIN_EVENTS, NOTIFICATIONS
from clarion_devstack.observer import LatencyObserver
from clarion_devstack.stack import StackInfo

pytestmark = [pytest.mark.e2e, pytest.mark.integration, pytest.mark.timeout(400)]


@dataclass(frozen=True)
class ExportedSpan:
    """One span as a service exported it (ids as hex, like W3C traceparent)."""

    service: str
    name: str
    kind: int
    trace_id: str
    span_id: str
    parent_id: str
    attributes: dict[str, str]


class OtlpReceiver:
    """A minimal OTLP/HTTP traces endpoint (``POST /v1/traces``, protobuf) keeping spans."""

    def __init__(self) -> None:
        self.spans: list[ExportedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
                if self.path != "/v1/traces":
                    self.send_error(404)
                    return
                request = ExportTraceServiceRequest()
                request.ParseFromString(body)
                receiver.add(request)
                answer = ExportTraceServiceResponse().SerializeToString()
                self.send_response(200)
                self.send_header("Content-Type", "application/x-protobuf")
                self.send_header("Content-Length", str(len(answer)))
                self.end_headers()
                self.wfile.write(answer)

            def log_message(self, format: str, *args: object) -> None:
                return

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1/traces"

    def add(self, request: ExportTraceServiceRequest) -> None:
        found: list[ExportedSpan] = []
        for resource_spans in request.resource_spans:
            resource = {a.key: a.value.string_value for a in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    found.append(
                        ExportedSpan(
                            service=resource.get("service.name", ""),
                            name=span.name,
                            kind=span.kind,
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_id=span.parent_span_id.hex(),
                            attributes={
                                a.key: a.value.string_value or str(a.value.int_value)
                                for a in span.attributes
                            },
                        )
                    )
        with self._lock:
            self.spans.extend(found)
            self.requests += 1

    def snapshot(self) -> list[ExportedSpan]:
        with self._lock:
            return list(self.spans)

    def __enter__(self) -> OtlpReceiver:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()


@pytest.fixture
def receiver(monkeypatch: pytest.MonkeyPatch) -> Iterator[OtlpReceiver]:
    """The receiver, with every launched service exporting to it (inherited environment)."""
    with OtlpReceiver() as rec:
        monkeypatch.setenv("CLARION_OTEL_EXPORTER", "otlp")
        monkeypatch.setenv("CLARION_OTEL_ENDPOINT", rec.endpoint)
        # Export batches every 200 ms instead of 5 s (OpenTelemetry SDK variable).
        monkeypatch.setenv("OTEL_BSP_SCHEDULE_DELAY", "200")
        yield rec


def dev_key() -> str:
    from clarion_kit.auth import dev_api_key
    from clarion_kit.settings import ServiceSettings

    return dev_api_key(ServiceSettings(environment="test"))


def ancestors(span: ExportedSpan, by_id: dict[str, ExportedSpan]) -> list[ExportedSpan]:
    """The span's parents up to the root, nearest first (each must have been exported)."""
    chain: list[ExportedSpan] = []
    current = span
    while current.parent_id:
        assert current.parent_id in by_id, f"parent of {current.name} ({current.service}) missing"
        current = by_id[current.parent_id]
        chain.append(current)
    return chain


def describe(spans: list[ExportedSpan]) -> str:
    """One line per span: service, name, trace id, span id <- parent id, attributes."""
    return "\n".join(
        f"{s.service} {s.name!r} {s.trace_id[:8]} {s.span_id[:8]}<-{s.parent_id[:8] or '-'} "
        f"{s.attributes}"
        for s in spans
    )


async def wait_for(
    condition: object, timeout: float, what: str, receiver: OtlpReceiver | None = None
) -> None:
    deadline = time.monotonic() + timeout
    while not condition():  # type: ignore[operator]
        if time.monotonic() > deadline:
            seen = describe(receiver.snapshot()[-60:]) if receiver else ""
            raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{seen}")
        await asyncio.sleep(0.2)


async def test_one_event_is_one_trace_across_services(
    devstack: StackInfo, tmp_path: Path, receiver: OtlpReceiver
) -> None:
    suffix = uuid.uuid4().hex[:8]
    recipient, actor = f"tracee-{suffix}", f"tracer-{suffix}"
    event_id = uuid.uuid4()
    event = {
        "event_id": str(event_id),
        "type": "repo.starred",
        "occurred_at": datetime.now(UTC).isoformat(),
        "actor": {"id": actor, "name": actor},
        "recipients": [recipient],
        "object": {"type": "repo", "id": f"{recipient}/traced", "title": f"{recipient}/traced"},
    }
    async with launch(devstack, tmp_path) as clarion:
        events_topic = clarion.topic_prefix + DOMAIN_EVENTS.name
        notes_topic = clarion.topic_prefix + NOTIFICATIONS.name
        observer = LatencyObserver(clarion.gateway(), [recipient])
        await observer.start(timeout=30)
        async with httpx.AsyncClient(base_url=clarion.api, timeout=30) as client:
            response = await client.post(
                "/v1/events", json=event, headers={"Authorization": f"Bearer {dev_key()}"}
            )
        assert response.status_code == 202, response.text
        await wait_for(lambda: observer.seen.get(recipient), 120, "the notification frame")
        (frame,) = observer.seen[recipient]
        await observer.stop()

        def root_span() -> ExportedSpan | None:
            roots = [
                s
                for s in receiver.snapshot()
                if s.service == "ingest-api"
                and s.attributes.get("messaging.destination.name") == events_topic
                and not s.parent_id
            ]
            assert len(roots) <= 1, "one event, one recipient: one record produced"
            return roots[0] if roots else None

        def gateway_span() -> ExportedSpan | None:
            root = root_span()
            if root is None:
                return None
            return next(
                (
                    s
                    for s in receiver.snapshot()
                    if s.trace_id == root.trace_id
                    and s.service == "realtime-gateway"
                    and s.name == f"{notes_topic} process"
                ),
                None,
            )

        await wait_for(lambda: gateway_span() is not None, 60, "the gateway's span", receiver)

    root = root_span()
    gateway = gateway_span()
    assert root is not None
    assert gateway is not None
    trace_spans = [s for s in receiver.snapshot() if s.trace_id == root.trace_id]
    by_id = {s.span_id: s for s in trace_spans}
    services = {s.service for s in trace_spans}
    assert {"ingest-api", "aggregator", "realtime-gateway"} <= services, services

    # Parent links are consistent: one root, every other span's parent is in the trace.
    assert [s for s in trace_spans if not s.parent_id] == [root]
    for span in trace_spans:
        ancestors(span, by_id)

    # The gateway's span descends from an aggregator producer span of the notification,
    # which descends from ingest-api's producer span of the domain event.
    chain = ancestors(gateway, by_id)
    assert chain[-1] == root
    hop = next(s for s in chain if s.service == "aggregator")
    assert hop.attributes.get("messaging.destination.name") == notes_topic
    assert gateway.attributes.get("messaging.kafka.message.offset") is not None
    assert frame.version == 1

    print(
        f"\ntrace {root.trace_id}: "
        + ", ".join(
            f"{s.service}:{s.name}"
            for s in sorted(trace_spans, key=lambda s: len(ancestors(s, by_id)))
        )
        + f" ({receiver.requests} OTLP requests, {len(receiver.snapshot())} spans in all)"
    )
