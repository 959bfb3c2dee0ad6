"""ASGI middleware of ingest-api: the request body size limit (413 before any parsing)."""

from __future__ import annotations

from typing import Any

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from clarion_kit.problems import problem_response


class BodySizeLimitMiddleware:
    """Refuse request bodies larger than ``max_bytes`` with 413 problem+json (RFC 9110 §15.5.14).

    A declared ``Content-Length`` over the limit is refused before reading anything;
    otherwise the body is read (up to the limit) before the app runs, so a chunked
    body that grows past the limit is refused too and the app never sees a partial body.

    Args:
        app: the wrapped ASGI app.
        max_bytes: largest accepted body in bytes.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def _refuse(self, scope: Scope, receive: Receive, send: Send, status: int) -> None:
        detail = (
            f"the request body exceeds {self.max_bytes} bytes"
            if status == 413
            else "the Content-Length header is not valid"
        )
        response = problem_response(status, detail=detail, instance=scope.get("path"))
        await response(scope, receive, send)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        """Check the body, then run the app with the buffered body replayed."""
        if scope["type"] != "http" or scope.get("method") in ("GET", "HEAD", "OPTIONS"):
            await self.app(scope, receive, send)
            return
        declared = None
        for name, value in scope.get("headers", ()):
            if name == b"content-length":
                declared = value
                break
        if declared is not None:
            try:
                length = int(declared)
            except ValueError:
                await self._refuse(scope, receive, send, 400)
                return
            if length < 0:
                await self._refuse(scope, receive, send, 400)
                return
            if length > self.max_bytes:
                await self._refuse(scope, receive, send, 413)
                return
        chunks: list[bytes] = []
        total = 0
        pending: Message | None = None
        while True:
            message = await receive()
            if message["type"] != "http.request":
                pending = message  # a disconnect: let the app see it
                break
            body = message.get("body", b"")
            total += len(body)
            if total > self.max_bytes:
                await self._refuse(scope, receive, send, 413)
                return
            chunks.append(body)
            if not message.get("more_body", False):
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                if pending is not None:
                    return pending
                first: dict[str, Any] = {
                    "type": "http.request",
                    "body": b"".join(chunks),
                    "more_body": False,
                }
                return first
            return await receive()

        await self.app(scope, replay, send)
