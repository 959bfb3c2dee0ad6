"""Liveness and readiness: ``/healthz`` and ``/readyz`` (Kubernetes probe endpoints).

``/healthz`` answers 200 while the process serves HTTP at all (liveness).
``/readyz`` runs every registered check concurrently, each bounded by its timeout,
and answers 200 ``{"status": "ready", "checks": {...}}`` when all required checks
pass, else 503 ``application/problem+json`` (RFC 9457) whose ``checks`` member lists
each result. A check added with ``required=False`` is reported (``"required":
false``) but does not make the service unready: a dependency the service degrades
around, such as a broker behind an outbox::

    checks = HealthChecks()
    checks.add("redis", lambda: redis.ping(), timeout=1.0)
    checks.add("postgres", lambda: clarion_kit.db.ping(engine))
    app.include_router(health_router(checks))

Services without an HTTP API (FastStream workers) serve the probes and
``/metrics`` with :func:`health_app` + :class:`HealthServer`, or pass
:func:`asgi_routes` to ``faststream.asgi.AsgiFastStream``.
"""

from __future__ import annotations

import asyncio
import contextlib
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from fastapi import APIRouter, FastAPI
from fastapi.responses import JSONResponse

from clarion_kit.metrics import metrics_endpoint
from clarion_kit.problems import problem_response
from clarion_kit.tracing import http_telemetry

if TYPE_CHECKING:
    from prometheus_client import CollectorRegistry
    from starlette.types import ASGIApp

Check = Callable[[], Awaitable[Any]]
"""A readiness check: an async callable that raises (or returns ``False``) when not ready.

A ``str`` it returns is reported as the check's ``detail`` (e.g. a component's state)."""


@dataclass(frozen=True)
class CheckResult:
    """Outcome of one check: ``ok``, an ``error`` text when not, and its ``duration_ms``.

    ``required`` is False for a check that is reported but does not decide
    readiness; ``detail`` is the text a passing check returned.
    """

    name: str
    ok: bool
    duration_ms: float
    error: str | None = None
    required: bool = True
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """JSON form: ``{"ok": bool, "duration_ms": float, "error"?: str, "detail"?: str,
        "required"?: false}``."""
        out: dict[str, Any] = {"ok": self.ok, "duration_ms": round(self.duration_ms, 2)}
        if self.error is not None:
            out["error"] = self.error
        if self.detail is not None:
            out["detail"] = self.detail
        if not self.required:
            out["required"] = False
        return out


@dataclass(frozen=True)
class _Registered:
    check: Check
    timeout: float
    required: bool = True


class HealthChecks:
    """Named async readiness checks, each with a timeout in seconds.

    A check passes when it returns anything but ``False`` within its timeout.
    The error text reported for a failure is the exception type and message,
    truncated to 200 characters (probe output is operator-facing).
    """

    def __init__(self) -> None:
        self._checks: dict[str, _Registered] = {}
        self._ready_flag = True

    def add(self, name: str, check: Check, timeout: float = 2.0, *, required: bool = True) -> None:
        """Register (or replace) check ``name``; ``timeout`` is in seconds (> 0).

        With ``required=False`` the check is run and reported but its failure does
        not make the service unready.

        Raises:
            ValueError: ``timeout`` is not positive.
        """
        if timeout <= 0:
            raise ValueError("timeout must be positive")
        self._checks[name] = _Registered(check, timeout, required)

    def remove(self, name: str) -> None:
        """Unregister check ``name`` if present."""
        self._checks.pop(name, None)

    def set_ready(self, ready: bool) -> None:
        """Force not-ready (``False``), e.g. while shutting down, or clear it (``True``)."""
        self._ready_flag = ready

    @property
    def names(self) -> list[str]:
        """Names of the registered checks."""
        return list(self._checks)

    async def _run_one(self, name: str, reg: _Registered) -> CheckResult:
        started = time.perf_counter()
        required = reg.required
        try:
            async with asyncio.timeout(reg.timeout):
                result = await reg.check()
        except TimeoutError:
            return CheckResult(
                name,
                False,
                (time.perf_counter() - started) * 1000,
                f"timed out after {reg.timeout}s",
                required,
            )
        except Exception as exc:
            text = f"{type(exc).__name__}: {exc}"[:200]
            return CheckResult(name, False, (time.perf_counter() - started) * 1000, text, required)
        elapsed = (time.perf_counter() - started) * 1000
        if result is False:
            return CheckResult(name, False, elapsed, "check returned False", required)
        detail = result[:200] if isinstance(result, str) else None
        return CheckResult(name, True, elapsed, required=required, detail=detail)

    async def run(self) -> list[CheckResult]:
        """Run every check concurrently; one result per check, in registration order."""
        results = await asyncio.gather(*(self._run_one(n, r) for n, r in self._checks.items()))
        if not self._ready_flag:
            results.append(CheckResult("shutdown", False, 0.0, "the service is shutting down"))
        return list(results)

    async def ready(self) -> bool:
        """True if every required check passes."""
        return all(r.ok or not r.required for r in await self.run())


async def readiness_response(checks: HealthChecks) -> JSONResponse:
    """The ``/readyz`` response: 200 JSON when ready, else 503 problem+json."""
    results = await checks.run()
    report = {r.name: r.as_dict() for r in results}
    failed = [r.name for r in results if not r.ok and r.required]
    if failed:
        return problem_response(
            503,
            "Service Unavailable",
            f"not ready: {', '.join(failed)}",
            instance="/readyz",
            extensions={"checks": report},
        )
    return JSONResponse({"status": "ready", "checks": report})


def health_router(checks: HealthChecks) -> APIRouter:
    """A FastAPI router with ``GET /healthz`` (always 200) and ``GET /readyz``."""
    router = APIRouter(tags=["health"])

    @router.get("/healthz", include_in_schema=False)
    async def healthz() -> JSONResponse:
        return JSONResponse({"status": "alive"})

    @router.get("/readyz", include_in_schema=False)
    async def readyz() -> JSONResponse:
        return await readiness_response(checks)

    return router


def health_app(
    checks: HealthChecks, registry: CollectorRegistry | None = None, *, metrics: bool = True
) -> FastAPI:
    """A small ASGI app serving ``/healthz``, ``/readyz`` and (``metrics``) ``/metrics``."""
    # Probes and scrapes are no traces of their own.
    app = FastAPI(
        openapi_url=None, docs_url=None, redoc_url=None, telemetry=http_telemetry(tracing=False)
    )
    app.include_router(health_router(checks))
    if metrics:
        app.add_route("/metrics", metrics_endpoint(registry), include_in_schema=False)
    return app


def asgi_routes(
    checks: HealthChecks, registry: CollectorRegistry | None = None
) -> list[tuple[str, ASGIApp]]:
    """``asgi_routes`` for ``faststream.asgi.AsgiFastStream``: /healthz, /readyz, /metrics.

    Example: ``AsgiFastStream(broker, asgi_routes=asgi_routes(checks))``.
    """
    app: ASGIApp = health_app(checks, registry)
    return [("/healthz", app), ("/readyz", app), ("/metrics", app)]


class HealthServer:
    """Serves an ASGI app (usually :func:`health_app`) with uvicorn inside this event loop.

    Args:
        app: the ASGI app.
        host: bind address (e.g. ``settings.http_host``).
        port: TCP port; 0 picks a free one (read :attr:`port` after :meth:`start`).

    Usage::

        server = HealthServer(health_app(checks), settings.http_host, settings.http_port)
        await server.start()
        ...
        await server.stop()
    """

    def __init__(self, app: ASGIApp, host: str = "127.0.0.1", port: int = 0) -> None:
        import uvicorn

        self._config = uvicorn.Config(
            app, host=host, port=port, log_config=None, access_log=False, lifespan="off"
        )
        self._server = uvicorn.Server(self._config)
        self._task: asyncio.Task[None] | None = None
        self.host = host
        self.port = port

    async def start(self, timeout: float = 10.0) -> None:
        """Start serving and return once the socket listens.

        Raises:
            RuntimeError: uvicorn exited (e.g. the port is taken) or did not start in time.
        """
        self._task = asyncio.create_task(self._server.serve())
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if self._task.done() or time.monotonic() > deadline:
                raise RuntimeError(f"health server did not start on {self.host}:{self.port}")
            await asyncio.sleep(0.02)
        for server in self._server.servers:
            for sock in server.sockets:
                self.port = int(sock.getsockname()[1])
                break

    async def stop(self) -> None:
        """Stop serving and wait for uvicorn to exit."""
        if self._task is None:
            return
        self._server.should_exit = True
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        self._task = None
