"""ASGI middleware answering any unhandled exception with a 500 problem (RFC 9457).

Starlette's own last-resort handler (``ServerErrorMiddleware``) sends the 500 and
then re-raises, so the server drops the connection without ``Connection: close``
and a keep-alive client sees a reset on its next request. This middleware sits
inside it: it answers the same problem document and returns normally, so the
connection stays usable. An exception raised after the response started cannot
be answered any more and is re-raised.
"""

from __future__ import annotations

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion_kit.logging import get_logger
from clarion_kit.problems import problem_response

_log = get_logger(__name__)


class UnhandledErrorMiddleware:
    """Turn an exception escaping ``app`` into ``500 application/problem+json``.

    The body never holds the exception text (it goes to the log with the stack).

    Args:
        app: the wrapped ASGI app.
    """

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Run the app; answer 500 problem+json if it raises before responding."""
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = False

        async def tracking_send(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracking_send)
        except Exception as exc:
            if started:
                raise
            _log.error(
                "unhandled error",
                path=scope.get("path"),
                method=scope.get("method"),
                error_type=type(exc).__name__,
                exc_info=exc,
            )
            response = problem_response(
                500, detail="an unexpected error occurred", instance=scope.get("path")
            )
            await response(scope, receive, send)
