"""Building the MIME message of one email (RFC 5322, RFC 2046, RFC 2369, RFC 8058).

The message is ``multipart/alternative`` with a ``text/plain`` part first and a
``text/html`` part last (RFC 2046 §5.1.4: the last part is the preferred one).
Headers: ``Message-ID`` (derived from the request id, so a re-send of the same
request carries the same id and mail systems can recognise it), ``Date``,
``From``, ``To``, ``Subject``, ``List-Unsubscribe`` (RFC 2369) and
``List-Unsubscribe-Post: List-Unsubscribe=One-Click`` (RFC 8058), which lets a
mailbox provider unsubscribe the user with one HTTPS POST.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.message import EmailMessage
from email.utils import format_datetime
from urllib.parse import quote

_WS = re.compile(r"\s+")

ONE_CLICK = "List-Unsubscribe=One-Click"
"""The only value RFC 8058 §3.1 allows for ``List-Unsubscribe-Post``."""


@dataclass(frozen=True)
class RenderedEmail:
    """The three rendered pieces of an email: one-line subject, text body, HTML body."""

    subject: str
    text: str
    html: str


def clean_header_text(text: str, max_length: int = 200) -> str:
    """One line of header text: whitespace runs (CR and LF included) become one space.

    Untrusted names and titles end up in ``Subject`` and ``To``; folding them
    onto one line rules out header injection. Longer text is cut with ``…``.
    """
    line = _WS.sub(" ", text).strip()
    if len(line) > max_length:
        line = line[: max_length - 1].rstrip() + "…"
    return line


def message_id(request_id: str, domain: str) -> str:
    """A ``Message-ID`` (RFC 5322 §3.6.4) that is the same for every send of ``request_id``.

    Example: ``<3f2a...e1.clarion@mail.example.com>`` (32 hex digits of SHA-256).
    """
    digest = hashlib.sha256(request_id.encode()).hexdigest()[:32]
    return f"<{digest}.clarion@{domain}>"


def unsubscribe_url(public_api_url: str, token: str) -> str:
    """``{public_api_url}/v1/unsubscribe?token=<token>``, the one-click unsubscribe target."""
    return f"{public_api_url.rstrip('/')}/v1/unsubscribe?token={quote(token, safe='')}"


def _address(display_name: str | None, addr: str) -> Address:
    """An :class:`Address`; raises ValueError for an address that is not ``local@domain``."""
    local, sep, domain = addr.rpartition("@")
    if not sep or not local or not domain or _WS.search(addr):
        raise ValueError(f"not an email address: {addr!r}")
    return Address(
        display_name=clean_header_text(display_name or ""), username=local, domain=domain
    )


def build_message(
    *,
    rendered: RenderedEmail,
    from_address: str,
    from_name: str | None,
    to_address: str,
    to_name: str | None,
    message_id: str,
    date: datetime,
    list_unsubscribe: str | None,
    extra_headers: dict[str, str] | None = None,
) -> EmailMessage:
    """Assemble the email.

    Args:
        rendered: subject, text and HTML from the templates.
        from_address / from_name: the sender (``From``).
        to_address / to_name: the recipient (``To``); the name is untrusted text.
        message_id: from :func:`message_id`.
        date: the ``Date`` header (aware datetime).
        list_unsubscribe: the HTTPS one-click unsubscribe URL, or None to leave
            out both ``List-Unsubscribe`` headers.
        extra_headers: more headers (names starting ``X-``), values cleaned to one line.

    Raises:
        ValueError: a malformed address or a naive ``date``.
    """
    if date.tzinfo is None:
        raise ValueError("date must be timezone-aware")
    msg = EmailMessage()
    msg["Message-ID"] = message_id
    msg["Date"] = format_datetime(date)
    msg["From"] = _address(from_name, from_address)
    msg["To"] = _address(to_name, to_address)
    msg["Subject"] = clean_header_text(rendered.subject, 250)
    if list_unsubscribe:
        msg["List-Unsubscribe"] = f"<{list_unsubscribe}>"
        msg["List-Unsubscribe-Post"] = ONE_CLICK
    for name, value in (extra_headers or {}).items():
        msg[name] = clean_header_text(value, 900)
    msg.set_content(rendered.text, subtype="plain", charset="utf-8")
    msg.add_alternative(rendered.html, subtype="html", charset="utf-8")
    return msg
