"""HTTP error responses as RFC 9457 "Problem Details" (``application/problem+json``).

Every Clarion HTTP API answers errors with a problem object::

    {"type": "about:blank", "title": "Not Found", "status": 404,
     "detail": "notification n-1 does not exist", "instance": "/v1/inbox/n-1"}

Use it in a FastAPI app::

    app = FastAPI(responses=problem_responses(401, 403, 422, 500))
    install_problem_handlers(app)

    @app.get("/v1/things/{id}")
    async def get_thing(id: str) -> Thing:
        raise ProblemError(404, detail=f"thing {id} does not exist")
"""

from __future__ import annotations

from collections.abc import Mapping
from http import HTTPStatus
from typing import Any

from fastapi import FastAPI, Request
from fastapi.encoders import jsonable_encoder
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field
from starlette.exceptions import HTTPException as StarletteHTTPException

from clarion_kit.logging import get_logger

PROBLEM_MEDIA_TYPE = "application/problem+json"
"""The media type of a problem document (RFC 9457 §3)."""

_log = get_logger(__name__)


class Problem(BaseModel):
    """A problem details object (RFC 9457 §3.1); extension members are allowed.

    Used for OpenAPI documentation; responses are built by :func:`problem_response`.
    """

    model_config = ConfigDict(extra="allow")

    type: str = Field(default="about:blank", description="URI reference identifying the type")
    title: str = Field(description="Short human-readable summary of the problem type")
    status: int = Field(description="The HTTP status code")
    detail: str | None = Field(default=None, description="Explanation of this occurrence")
    instance: str | None = Field(default=None, description="URI reference of this occurrence")


class ValidationProblem(Problem):
    """A 422 problem with the list of invalid fields (``errors`` extension member)."""

    errors: list[dict[str, Any]] = Field(
        default_factory=list, description="One entry per invalid field: loc, msg, type"
    )


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"


def problem_body(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Build the JSON object of a problem (RFC 9457 §3.1).

    ``title`` defaults to the status code's reason phrase, as RFC 9457 §4.2.1
    recommends for ``about:blank``. Extension members must not shadow the standard ones.

    Raises:
        ValueError: an extension member is named like a standard member.
    """
    body: dict[str, Any] = {"type": type_, "title": title or _title(status), "status": status}
    if detail is not None:
        body["detail"] = detail
    if instance is not None:
        body["instance"] = instance
    for key, value in (extensions or {}).items():
        if key in {"type", "title", "status", "detail", "instance"}:
            raise ValueError(f"extension member {key!r} shadows a standard member")
        body[key] = value
    return body


def problem_response(
    status: int,
    title: str | None = None,
    detail: str | None = None,
    *,
    type_: str = "about:blank",
    instance: str | None = None,
    headers: Mapping[str, str] | None = None,
    extensions: Mapping[str, Any] | None = None,
) -> JSONResponse:
    """Return a ``application/problem+json`` response (RFC 9457).

    Args:
        status: HTTP status code (4xx/5xx).
        title: short summary; defaults to the reason phrase of ``status``.
        detail: explanation of this occurrence, safe to show to the client.
        type_: URI identifying the problem type.
        instance: URI of this occurrence (usually the request path).
        headers: extra response headers, e.g. ``Retry-After`` or ``WWW-Authenticate``.
        extensions: extra members such as ``errors``.
    """
    body = problem_body(
        status, title, detail, type_=type_, instance=instance, extensions=extensions
    )
    return JSONResponse(
        jsonable_encoder(body),
        status_code=status,
        media_type=PROBLEM_MEDIA_TYPE,
        headers=dict(headers) if headers else None,
    )


class ProblemError(Exception):
    """Raise from a FastAPI endpoint to answer with a problem document (RFC 9457).

    Args:
        status: HTTP status code.
        title: short summary; defaults to the reason phrase of ``status``.
        detail: explanation of this occurrence (shown to the client: no internals).
        type_: URI identifying the problem type (default ``about:blank``).
        instance: URI of this occurrence; defaults to the request path.
        headers: extra response headers (``Retry-After``, ``WWW-Authenticate``...).
        **extensions: extension members added to the body.
    """

    def __init__(
        self,
        status: int,
        title: str | None = None,
        detail: str | None = None,
        *,
        type_: str = "about:blank",
        instance: str | None = None,
        headers: Mapping[str, str] | None = None,
        **extensions: Any,
    ) -> None:
        super().__init__(detail or title or _title(status))
        self.status = status
        self.title = title or _title(status)
        self.detail = detail
        self.type_ = type_
        self.instance = instance
        self.headers = dict(headers or {})
        self.extensions = extensions

    def to_response(self, instance: str | None = None) -> JSONResponse:
        """The problem response of this error (``instance`` fills a missing one)."""
        return problem_response(
            self.status,
            self.title,
            self.detail,
            type_=self.type_,
            instance=self.instance or instance,
            headers=self.headers,
            extensions=self.extensions,
        )


async def _problem_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, ProblemError)
    return exc.to_response(instance=request.url.path)


async def _http_exception_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, StarletteHTTPException)
    detail: str | None = exc.detail if isinstance(exc.detail, str) else None
    if detail == _title(exc.status_code):
        detail = None
    return problem_response(
        exc.status_code,
        detail=detail,
        instance=request.url.path,
        headers=exc.headers,
    )


async def _validation_error_handler(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = [
        {
            "loc": list(err.get("loc", ())),
            "msg": str(err.get("msg", "")),
            "type": str(err.get("type", "")),
        }
        for err in exc.errors()
    ]
    return problem_response(
        422,
        "Unprocessable Content",
        f"{len(errors)} invalid field(s) in the request",
        instance=request.url.path,
        extensions={"errors": errors},
    )


async def _unhandled_error_handler(request: Request, exc: Exception) -> JSONResponse:
    # Internals (exception text, stack) go to the log only, never to the client.
    _log.error(
        "unhandled error",
        path=request.url.path,
        method=request.method,
        error_type=type(exc).__name__,
        exc_info=exc,
    )
    return problem_response(500, detail="an unexpected error occurred", instance=request.url.path)


def install_problem_handlers(app: FastAPI) -> None:
    """Make ``app`` answer every error as ``application/problem+json`` (RFC 9457).

    Handles :class:`ProblemError`, Starlette/FastAPI ``HTTPException`` (404 for
    unknown routes, 405...), ``RequestValidationError`` (422 with an ``errors``
    list of ``{loc, msg, type}``) and any other exception (500 whose body never
    contains the exception text; answered by
    :class:`~clarion_kit.unhandled.UnhandledErrorMiddleware` so the connection
    stays usable).
    """
    from clarion_kit.unhandled import UnhandledErrorMiddleware

    app.add_middleware(UnhandledErrorMiddleware)
    app.add_exception_handler(ProblemError, _problem_error_handler)
    app.add_exception_handler(StarletteHTTPException, _http_exception_handler)
    app.add_exception_handler(RequestValidationError, _validation_error_handler)
    app.add_exception_handler(Exception, _unhandled_error_handler)


def problem_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries documenting problem+json errors.

    Example: ``@app.post("/v1/events", responses=problem_responses(401, 422, 503))``.
    422 is documented with the ``errors`` member.
    """
    out: dict[int | str, dict[str, Any]] = {}
    for status in statuses or (400, 401, 403, 404, 422, 500):
        model = ValidationProblem if status == 422 else Problem
        out[status] = {
            "description": _title(status),
            "content": {PROBLEM_MEDIA_TYPE: {"schema": model.model_json_schema()}},
        }
    return out
