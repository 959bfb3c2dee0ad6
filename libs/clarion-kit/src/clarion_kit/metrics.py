"""Prometheus metrics: naming, registry, the ``/metrics`` app and HTTP request metrics.

Names follow ``clarion_<service>_<name>`` with the service's dashes turned into
underscores (Prometheus metric names allow ``[a-zA-Z_:][a-zA-Z0-9_:]*``), e.g.
``clarion_ingest_api_http_requests_total``. Metrics live in the process's default
``prometheus_client`` registry unless a :class:`~prometheus_client.CollectorRegistry`
is passed, which tests do to stay isolated.
"""

from __future__ import annotations

import re
import time
import weakref
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    REGISTRY,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    generate_latest,
    make_asgi_app,
)
from starlette.responses import Response
from starlette.routing import Match

if TYPE_CHECKING:
    from fastapi import FastAPI
    from starlette.requests import Request
    from starlette.types import ASGIApp, Message, Receive, Scope, Send

_INVALID = re.compile(r"[^a-zA-Z0-9_]")

HTTP_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
"""Histogram buckets of HTTP request durations, in seconds."""


def metric_name(service: str, name: str) -> str:
    """``clarion_<service>_<name>``, sanitised to a valid Prometheus metric name.

    Example: ``metric_name("push-worker", "sent_total") == "clarion_push_worker_sent_total"``.
    """
    svc = _INVALID.sub("_", service.lower())
    return f"clarion_{svc}_{_INVALID.sub('_', name)}"


def get_registry(registry: CollectorRegistry | None = None) -> CollectorRegistry:
    """The given registry, else the process-wide default ``prometheus_client.REGISTRY``."""
    return registry if registry is not None else REGISTRY


def metrics_app(registry: CollectorRegistry | None = None) -> ASGIApp:
    """An ASGI app serving the Prometheus text exposition format of ``registry``.

    Mount it: ``app.mount("/metrics", metrics_app())``.
    """
    app: ASGIApp = make_asgi_app(registry=get_registry(registry))
    return app


def metrics_endpoint(
    registry: CollectorRegistry | None = None,
) -> Callable[[Request], Awaitable[Response]]:
    """A Starlette/FastAPI endpoint answering the exposition format of ``registry``.

    Unlike a mounted app it answers ``/metrics`` itself, without a redirect to ``/metrics/``.
    """
    reg = get_registry(registry)

    async def metrics(_: Request) -> Response:
        return Response(generate_latest(reg), media_type=CONTENT_TYPE_LATEST)

    return metrics


# Keyed by the registry object itself (weakly): an id() could be reused by a new
# registry after the old one is collected, handing out a metric of a dead registry.
_collectors: weakref.WeakKeyDictionary[CollectorRegistry, dict[str, Any]] = (
    weakref.WeakKeyDictionary()
)


def get_or_create_counter(
    name: str,
    documentation: str,
    labelnames: tuple[str, ...] = (),
    registry: CollectorRegistry | None = None,
) -> Counter:
    """Return the counter ``name`` in ``registry``, creating it once.

    Several brokers, apps or tests in one process share a metric instead of failing
    with "Duplicated timeseries". ``name`` is the full name, without ``_total``
    handling beyond what ``prometheus_client`` does.
    """
    reg = get_registry(registry)
    known = _collectors.setdefault(reg, {})
    existing = known.get(name)
    if existing is None:
        existing = known[name] = Counter(name, documentation, labelnames, registry=reg)
    assert isinstance(existing, Counter)
    return existing


def get_or_create_histogram(
    name: str,
    documentation: str,
    labelnames: tuple[str, ...] = (),
    registry: CollectorRegistry | None = None,
    buckets: tuple[float, ...] = Histogram.DEFAULT_BUCKETS,
) -> Histogram:
    """Return the histogram ``name`` in ``registry``, creating it once (see counters)."""
    reg = get_registry(registry)
    known = _collectors.setdefault(reg, {})
    existing = known.get(name)
    if existing is None:
        existing = Histogram(name, documentation, labelnames, registry=reg, buckets=buckets)
        known[name] = existing
    assert isinstance(existing, Histogram)
    return existing


def get_or_create_gauge(
    name: str,
    documentation: str,
    labelnames: tuple[str, ...] = (),
    registry: CollectorRegistry | None = None,
) -> Gauge:
    """Return the gauge ``name`` in ``registry``, creating it once (see counters)."""
    reg = get_registry(registry)
    known = _collectors.setdefault(reg, {})
    existing = known.get(name)
    if existing is None:
        existing = known[name] = Gauge(name, documentation, labelnames, registry=reg)
    assert isinstance(existing, Gauge)
    return existing


class HttpMetricsMiddleware:
    """Counts and times HTTP requests by method, route template and status (pure ASGI).

    Exposes ``clarion_<service>_http_requests_total{method,route,status}`` and
    ``clarion_<service>_http_request_duration_seconds{method,route}``. The route is
    the matched path template (``/v1/inbox/{notification_id}``), never the raw
    path, so label cardinality stays bounded; unmatched paths count as ``<unmatched>``.
    A request that raised before answering counts as status 500.

    A plain ASGI middleware rather than Starlette's ``BaseHTTPMiddleware``, which
    runs every request in a task of its own and streams the response through a
    memory channel: several times the cost of the counting.
    """

    def __init__(
        self, app: ASGIApp, *, service: str, registry: CollectorRegistry | None = None
    ) -> None:
        self.app = app
        self.requests = get_or_create_counter(
            metric_name(service, "http_requests_total"),
            "HTTP requests by method, route template and status code",
            ("method", "route", "status"),
            registry,
        )
        self.duration = get_or_create_histogram(
            metric_name(service, "http_request_duration_seconds"),
            "HTTP request duration in seconds",
            ("method", "route"),
            registry,
            HTTP_BUCKETS,
        )

    @staticmethod
    def _route(scope: Scope) -> str:
        # FastAPI's router leaves the matched APIRoute in the scope; other routes
        # (Starlette routes, mounts) are matched again.
        route = scope.get("route")
        if route is not None and hasattr(route, "path"):
            return str(route.path)
        app = scope.get("app")
        for candidate in getattr(getattr(app, "router", None), "routes", ()):
            match, _ = candidate.matches(scope)
            if match == Match.FULL:
                return str(getattr(candidate, "path", scope.get("path", "")))
        return "<unmatched>"

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Time the request and count it with its final status."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        status = 500

        async def send_and_note(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, receive, send_and_note)
        finally:
            route = self._route(scope)
            method = scope["method"]
            self.duration.labels(method, route).observe(time.perf_counter() - started)
            self.requests.labels(method, route, str(status)).inc()


def instrument_fastapi(
    app: FastAPI,
    service: str,
    *,
    registry: CollectorRegistry | None = None,
    metrics_path: str | None = "/metrics",
) -> None:
    """Add :class:`HttpMetricsMiddleware` to ``app`` and serve ``/metrics`` from it.

    Args:
        app: the FastAPI application.
        service: service name used in metric names (``ingest-api``).
        registry: where metrics live; default the process registry.
        metrics_path: route of the exposition endpoint; ``None`` for none.
    """
    app.add_middleware(HttpMetricsMiddleware, service=service, registry=registry)
    if metrics_path:
        app.add_route(metrics_path, metrics_endpoint(registry), include_in_schema=False)
