"""Structured logs: one JSON object per line on stdout, with the current trace ids.

Every record carries ``timestamp`` (ISO 8601 UTC), ``level``, ``event`` (the message),
``logger``, ``service``, ``instance`` and, inside an OpenTelemetry span, ``trace_id``
(32 hex) and ``span_id`` (16 hex) as W3C Trace Context spells them, so a log line
can be joined with its trace. Standard-library loggers (uvicorn, aiokafka,
FastStream) are routed through the same renderer.
"""

from __future__ import annotations

import logging
import sys
from typing import TYPE_CHECKING, Any

import structlog
from opentelemetry import trace

if TYPE_CHECKING:
    from structlog.typing import EventDict, Processor, WrappedLogger

    from clarion_kit.settings import ServiceSettings


def add_trace_ids(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
    """structlog processor adding ``trace_id``/``span_id`` of the current OTel span."""
    ctx = trace.get_current_span().get_span_context()
    if ctx.is_valid:
        event_dict.setdefault("trace_id", format(ctx.trace_id, "032x"))
        event_dict.setdefault("span_id", format(ctx.span_id, "016x"))
    return event_dict


def _service_adder(service: str, instance: str) -> Processor:
    def add_service(_: WrappedLogger, __: str, event_dict: EventDict) -> EventDict:
        event_dict.setdefault("service", service)
        event_dict.setdefault("instance", instance)
        return event_dict

    return add_service


def configure_logging(
    settings: ServiceSettings | None = None,
    *,
    level: str | None = None,
    json: bool | None = None,
    service: str | None = None,
    stream: Any = None,
) -> None:
    """Configure structlog and the standard ``logging`` root for this process.

    Args:
        settings: gives ``log_level``, ``log_json``, ``service_name`` and ``instance_id``.
        level: overrides ``settings.log_level`` (``DEBUG``, ``INFO``...).
        json: overrides ``settings.log_json``; ``False`` renders coloured console lines.
        service: overrides ``settings.service_name``.
        stream: where to write (default ``sys.stdout``).

    Idempotent: calling it again replaces the previous configuration.
    """
    lvl_name = (level or (settings.log_level if settings else "INFO")).upper()
    lvl = logging.getLevelNamesMapping().get(lvl_name, logging.INFO)
    as_json = json if json is not None else (settings.log_json if settings else True)
    svc = service or (settings.service_name if settings else "clarion")
    instance = settings.instance_id if settings else ""

    shared: list[Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.stdlib.add_log_level,
        structlog.stdlib.add_logger_name,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        _service_adder(svc, instance),
        add_trace_ids,
    ]
    renderer: Processor = (
        structlog.processors.JSONRenderer()
        if as_json
        else structlog.dev.ConsoleRenderer(colors=False)
    )
    structlog.configure(
        processors=[
            *shared,
            structlog.stdlib.ProcessorFormatter.wrap_for_formatter,
        ],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        # ExtraAdder keeps `extra={...}` of stdlib records (FastStream puts topic,
        # group_id and message_id there).
        foreign_pre_chain=[*shared, structlog.stdlib.ExtraAdder()],
        processors=[
            structlog.stdlib.ProcessorFormatter.remove_processors_meta,
            structlog.processors.format_exc_info,
            renderer,
        ],
    )
    handler = logging.StreamHandler(stream or sys.stdout)
    handler.setFormatter(formatter)
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_clarion", False):
            root.removeHandler(old)
    handler._clarion = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(lvl)
    # aiokafka logs every coordinator step at INFO; keep it at WARNING unless debugging.
    if lvl > logging.DEBUG:
        logging.getLogger("aiokafka").setLevel(logging.WARNING)


def get_logger(name: str | None = None, **initial: Any) -> structlog.stdlib.BoundLogger:
    """Return a structlog logger named ``name`` with ``initial`` key/values bound.

    Usable before :func:`configure_logging` (records then use structlog's defaults).
    """
    logger: structlog.stdlib.BoundLogger = structlog.stdlib.get_logger(name, **initial)
    return logger
