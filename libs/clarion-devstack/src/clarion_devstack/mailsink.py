"""The development SMTP sink: keeps every email it receives and shows them on a web page.

``clarion-mail-sink`` starts an aiosmtpd SMTP server (default port 8025) and an
aiohttp web view (default port 8026, loopback only) listing received messages
newest first. A message page shows its headers, its text part and its HTML
part rendered inside an ``<iframe sandbox>`` (no scripts, no same-origin
access). Each message is also written to ``<maildir>/<id>.eml``.

Recipients whose local part starts with ``bounce`` (e.g. ``bounce+1@example.com``)
are refused with ``550 5.1.1``, so permanent failures can be tried by hand.

Web view routes: ``GET /`` (list), ``GET /messages/<id>`` (one message),
``GET /messages/<id>.eml`` (raw), ``GET /api/messages`` (JSON),
``DELETE /api/messages`` (clear).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import email
import email.policy
import html
import itertools
import signal
from collections import deque
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Any

from aiohttp import web
from aiosmtpd.smtp import SMTP, Envelope, Session


@dataclass
class ReceivedMessage:
    """One email as the sink received it."""

    id: int
    received_at: datetime
    mail_from: str
    rcpt_tos: list[str]
    raw: bytes
    parsed: EmailMessage = field(repr=False)

    def part(self, subtype: str) -> str | None:
        """The decoded ``text/<subtype>`` body, or None."""
        body = self.parsed.get_body(preferencelist=(subtype,))
        if body is None or body.get_content_type() != f"text/{subtype}":
            return None
        content: str = body.get_content()
        return content

    def as_dict(self) -> dict[str, Any]:
        """JSON form: id, received_at, envelope, headers (list of pairs), subject, text, html."""
        return {
            "id": self.id,
            "received_at": self.received_at.isoformat(),
            "mail_from": self.mail_from,
            "rcpt_tos": self.rcpt_tos,
            "subject": str(self.parsed.get("Subject", "")),
            "headers": [[k, str(v)] for k, v in self.parsed.items()],
            "text": self.part("plain"),
            "html": self.part("html"),
        }


class MailSink:
    """aiosmtpd handler that keeps the last ``max_messages`` emails (and writes .eml files).

    Args:
        maildir: folder for ``<id>.eml`` files (created), or None to keep them in memory only.
        max_messages: how many messages the web view keeps.
        reject_prefix: recipients whose local part starts with it get ``550``.
    """

    def __init__(
        self, maildir: Path | None = None, max_messages: int = 500, reject_prefix: str = "bounce"
    ) -> None:
        self.maildir = maildir
        if maildir is not None:
            maildir.mkdir(parents=True, exist_ok=True)
        self.messages: deque[ReceivedMessage] = deque(maxlen=max_messages)
        self.reject_prefix = reject_prefix
        self._ids = itertools.count(1)
        self.received = asyncio.Condition()

    async def handle_RCPT(
        self,
        server: SMTP,
        session: Session,
        envelope: Envelope,
        address: str,
        rcpt_options: list[str],
    ) -> str:
        """Accept a recipient, or refuse it permanently if it starts with ``reject_prefix``."""
        if self.reject_prefix and address.lower().startswith(self.reject_prefix):
            return "550 5.1.1 Mailbox unavailable"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        """Store the message; answers ``250 OK queued as <id>``."""
        raw = envelope.original_content or envelope.content or b""
        if isinstance(raw, str):
            raw = raw.encode()
        parsed = email.message_from_bytes(raw, policy=email.policy.default)
        assert isinstance(parsed, EmailMessage)
        message = ReceivedMessage(
            id=next(self._ids),
            received_at=datetime.now(UTC),
            mail_from=str(envelope.mail_from),
            rcpt_tos=list(envelope.rcpt_tos),
            raw=raw,
            parsed=parsed,
        )
        if self.maildir is not None:
            await asyncio.to_thread((self.maildir / f"{message.id:06d}.eml").write_bytes, raw)
        async with self.received:
            self.messages.append(message)
            self.received.notify_all()
        return f"250 OK queued as {message.id}"

    def get(self, message_id: int) -> ReceivedMessage | None:
        """The kept message with this id, or None."""
        return next((m for m in self.messages if m.id == message_id), None)


_PAGE = """<!DOCTYPE html><html><head><meta charset="utf-8"><title>{title}</title>
<style>body{{font-family:system-ui,sans-serif;margin:24px;color:#1f2328}}
table{{border-collapse:collapse;width:100%}}td,th{{border-bottom:1px solid #ddd;padding:6px;
text-align:left;vertical-align:top;font-size:14px}}pre{{white-space:pre-wrap;background:#f6f8fa;
padding:12px}}iframe{{width:100%;height:600px;border:1px solid #ccc}}</style></head>
<body>{body}</body></html>"""

_CSP = "default-src 'none'; style-src 'unsafe-inline'; img-src * data:; frame-src 'self'"


def _page(title: str, body: str) -> web.Response:
    return web.Response(
        text=_PAGE.format(title=html.escape(title), body=body),
        content_type="text/html",
        headers={"Content-Security-Policy": _CSP, "X-Content-Type-Options": "nosniff"},
    )


def web_app(sink: MailSink) -> web.Application:
    """The aiohttp web view of ``sink`` (see the module docstring for the routes)."""

    async def index(_: web.Request) -> web.Response:
        rows = "".join(
            f"<tr><td>{m.id}</td><td>{m.received_at:%Y-%m-%d %H:%M:%S}</td>"
            f"<td>{html.escape(str(m.parsed.get('From', '')))}</td>"
            f"<td>{html.escape(', '.join(m.rcpt_tos))}</td>"
            f"<td><a href='/messages/{m.id}'>{html.escape(str(m.parsed.get('Subject', '')))}"
            "</a></td></tr>"
            for m in reversed(sink.messages)
        )
        body = (
            f"<h1>Clarion mail sink</h1><p>{len(sink.messages)} message(s)</p>"
            "<table><tr><th>#</th><th>received</th><th>from</th><th>to</th><th>subject</th>"
            f"</tr>{rows}</table>"
        )
        return _page("Clarion mail sink", body)

    def _lookup(request: web.Request) -> ReceivedMessage:
        try:
            found = sink.get(int(request.match_info["id"]))
        except ValueError:
            found = None
        if found is None:
            raise web.HTTPNotFound(text="no such message")
        return found

    async def show(request: web.Request) -> web.Response:
        m = _lookup(request)
        headers = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
            for k, v in m.parsed.items()
        )
        html_part = m.part("html")
        text_part = m.part("plain")
        frame = (
            # srcdoc is attribute-escaped; sandbox without tokens blocks scripts, forms,
            # popups and same-origin access, so an email cannot touch this page.
            f'<iframe sandbox="" referrerpolicy="no-referrer" srcdoc="{html.escape(html_part)}">'
            "</iframe>"
            if html_part is not None
            else "<p>(no HTML part)</p>"
        )
        text = html.escape(text_part) if text_part is not None else "(no text part)"
        body = (
            f"<p><a href='/'>&larr; all messages</a> · <a href='/messages/{m.id}.eml'>raw .eml</a>"
            f"</p><h1>{html.escape(str(m.parsed.get('Subject', '')))}</h1>"
            f"<table>{headers}</table><h2>HTML part</h2>{frame}<h2>Text part</h2><pre>{text}</pre>"
        )
        return _page(f"Message {m.id}", body)

    async def raw(request: web.Request) -> web.Response:
        m = _lookup(request)
        return web.Response(body=m.raw, content_type="message/rfc822")

    async def api_list(_: web.Request) -> web.Response:
        return web.json_response([m.as_dict() for m in sink.messages])

    async def api_clear(_: web.Request) -> web.Response:
        sink.messages.clear()
        return web.Response(status=204)

    app = web.Application()
    app.router.add_get("/", index)
    app.router.add_get(r"/messages/{id:\d+}.eml", raw)
    app.router.add_get(r"/messages/{id:\d+}", show)
    app.router.add_get("/api/messages", api_list)
    app.router.add_delete("/api/messages", api_clear)
    return app


class SinkServer:
    """The SMTP server and web view of one :class:`MailSink`, in the running event loop.

    Args:
        sink: the handler keeping messages.
        host: bind address (loopback by default).
        smtp_port / web_port: TCP ports; 0 picks free ones (read the attributes after start).
        serve_web: serve the web view.
    """

    def __init__(
        self,
        sink: MailSink,
        host: str = "127.0.0.1",
        smtp_port: int = 8025,
        web_port: int = 8026,
        serve_web: bool = True,
    ) -> None:
        self.sink = sink
        self.host = host
        self.smtp_port = smtp_port
        self.web_port = web_port
        self._web = serve_web
        self._smtp: asyncio.base_events.Server | None = None
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        """Listen for SMTP (and HTTP); ports are known when this returns."""
        loop = asyncio.get_running_loop()
        self._smtp = await loop.create_server(
            lambda: SMTP(self.sink, hostname="clarion-mail-sink", ident="Clarion mail sink"),
            host=self.host,
            port=self.smtp_port,
        )
        self.smtp_port = self._smtp.sockets[0].getsockname()[1]
        if self._web:
            self._runner = web.AppRunner(web_app(self.sink), access_log=None)
            await self._runner.setup()
            site = web.TCPSite(self._runner, self.host, self.web_port)
            await site.start()
            self.web_port = int(self._runner.addresses[0][1])

    @property
    def url(self) -> str:
        """The web view's URL."""
        return f"http://{self.host}:{self.web_port}/"

    async def stop(self) -> None:
        """Stop both servers."""
        if self._smtp is not None:
            self._smtp.close()
            await self._smtp.wait_closed()
        if self._runner is not None:
            await self._runner.cleanup()


async def _serve(args: argparse.Namespace) -> None:
    sink = MailSink(Path(args.maildir) if args.maildir else None, reject_prefix=args.reject_prefix)
    server = SinkServer(sink, args.host, args.smtp_port, args.web_port)
    await server.start()
    print(
        f"Clarion mail sink: SMTP {args.host}:{server.smtp_port}, web view {server.url}",
        flush=True,
    )
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        with contextlib.suppress(NotImplementedError):
            loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> None:
    """``clarion-mail-sink [--host H] [--smtp-port 8025] [--web-port 8026] [--maildir DIR]``."""
    parser = argparse.ArgumentParser(prog="clarion-mail-sink", description=__doc__.split("\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--smtp-port", type=int, default=8025)
    parser.add_argument("--web-port", type=int, default=8026)
    parser.add_argument("--maildir", default=".clarion/mail", help="'' keeps messages in memory")
    parser.add_argument("--reject-prefix", default="bounce")
    asyncio.run(_serve(parser.parse_args(argv)))


if __name__ == "__main__":
    main()
