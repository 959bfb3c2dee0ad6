"""End to end: one domain event is one OpenTelemetry trace across the services' processes.

Every service is launched as its own process with ``CLARION_OTEL_EXPORTER=otlp``,
exporting OTLP/HTTP protobuf to a small receiver this test runs on 127.0.0.1. One
urgent event is posted to ingest-api for a user (with a profile) whose WebSocket
session is open; once the session got the notification's frame, the spans the
services exported must form one trace. Its root is ingest-api's HTTP server span of
``POST /v1/events``, above ingest-api's producer span of the domain event; the
aggregator's span for that event is a child of the producer span, and what the
aggregator produced for the event (notification, push request, immediate email)
continues below it: the realtime-gateway's span for the notification record (which
appends it to the user's stream and publishes the frame) and push-worker's and
email-worker's consumer spans. W3C ``traceparent`` crosses Kafka between real
processes twice on each of the three paths.
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

from clarion_contracts.registry import DOMAIN_EVENTS, EMAIL_REQUESTS, NOTIFICATIONS, PUSH_REQUESTS
from clarion_devstack.drain import wait_drained
from clarion_devstack.observer import LatencyObserver
from clarion_devstack.replay.client import profile_body
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
        # Urgent: push and an immediate email too, whatever the presence (routing rules).
        "priority": "urgent",
    }
    async with launch(devstack, tmp_path) as clarion:
        events_topic = clarion.topic_prefix + DOMAIN_EVENTS.name
        notes_topic = clarion.topic_prefix + NOTIFICATIONS.name
        consumers = {
            "realtime-gateway": f"{notes_topic} process",
            "push-worker": f"{clarion.topic_prefix}{PUSH_REQUESTS.name} process",
            "email-worker": f"{clarion.topic_prefix}{EMAIL_REQUESTS.name} process",
        }
        observer = LatencyObserver(clarion.gateway(), [recipient])
        await observer.start(timeout=30)
        async with httpx.AsyncClient(base_url=clarion.api, timeout=30) as client:
            profile = await client.put(
                f"/v1/users/{recipient}",
                json=profile_body(recipient),
                headers={"Authorization": f"Bearer {dev_key()}"},
            )
            assert profile.status_code in (200, 201, 202), profile.text
            # The aggregator and email-worker know the address before the event arrives.
            await wait_drained(
                clarion.info.kafka_bootstrap_servers,
                topic_prefix=clarion.topic_prefix,
                timeout=120,
            )
            response = await client.post(
                "/v1/events", json=event, headers={"Authorization": f"Bearer {dev_key()}"}
            )
        assert response.status_code == 202, response.text
        await wait_for(lambda: observer.seen.get(recipient), 120, "the notification frame")
        (frame,) = observer.seen[recipient]
        await observer.stop()

        def produced() -> ExportedSpan | None:
            """ingest-api's producer span of the domain event's record."""
            found = [
                s
                for s in receiver.snapshot()
                if s.service == "ingest-api" and s.name == f"{events_topic} create"
            ]
            assert len(found) <= 1, "one event, one recipient: one record produced"
            return found[0] if found else None

        def consumer_span(service: str) -> ExportedSpan | None:
            """``service``'s consumer span in the event's trace (None until exported)."""
            event_span = produced()
            if event_span is None:
                return None
            return next(
                (
                    s
                    for s in receiver.snapshot()
                    if s.trace_id == event_span.trace_id
                    and s.service == service
                    and s.name == consumers[service]
                ),
                None,
            )

        def complete() -> list[ExportedSpan] | None:
            """The event's trace once the gateway's span and every span's parent arrived."""
            event_span = produced()
            if event_span is None or any(consumer_span(c) is None for c in consumers):
                return None
            spans = [s for s in receiver.snapshot() if s.trace_id == event_span.trace_id]
            ids = {s.span_id for s in spans}
            return spans if all(not s.parent_id or s.parent_id in ids for s in spans) else None

        await wait_for(lambda: complete() is not None, 90, "the whole trace", receiver)
        trace_spans = complete()

        hops = {service: consumer_span(service) for service in consumers}

    event_span = produced()
    assert event_span is not None
    assert trace_spans is not None
    by_id = {s.span_id: s for s in trace_spans}
    assert len(by_id) == len(trace_spans), "a span was exported twice"
    services = {s.service for s in trace_spans}
    assert {"ingest-api", "aggregator", *consumers} <= services, describe(trace_spans)

    # Parent links are consistent: one root (ingest-api's HTTP server span of the
    # request), and every other span's parent is in the trace.
    roots = [s for s in trace_spans if not s.parent_id]
    assert len(roots) == 1, describe(trace_spans)
    (root,) = roots
    assert root.service == "ingest-api"
    assert root.attributes.get("http.route") == "/v1/events"
    for span in trace_spans:
        ancestors(span, by_id)

    # Each consumer's span for its record <- the aggregator's span(s) for the domain event
    # (its consumer span, and producer spans if it publishes through FastStream) <-
    # ingest-api's producer span of the domain event <- ... <- the HTTP request.
    for service, consumed in hops.items():
        assert consumed is not None
        chain = ancestors(consumed, by_id)
        assert chain[-1] == root
        assert chain[0].service == "aggregator", (service, describe(chain))
        aggregator = [s for s in chain if s.service == "aggregator"]
        assert aggregator[-1].name == f"{events_topic} process"
        assert by_id[aggregator[-1].parent_id] == event_span
    gateway = hops["realtime-gateway"]
    assert gateway is not None
    assert gateway.attributes.get("messaging.kafka.message.offset") is not None
    assert frame.version == 1

    print(
        f"\ntrace {root.trace_id}:\n"
        + "".join(
            f"  {len(ancestors(s, by_id))} {s.service}: {s.name}\n"
            for s in sorted(trace_spans, key=lambda s: len(ancestors(s, by_id)))
        )
        + f" ({receiver.requests} OTLP requests, {len(receiver.snapshot())} spans in all)"
    )
