"""The development SMTP sink: receives over SMTP, keeps .eml files, shows a web view."""

from __future__ import annotations

from email.message import EmailMessage
from pathlib import Path

import aiosmtplib
import httpx
import pytest

from clarion_devstack.mailsink import MailSink, SinkServer


def message(subject: str, html: str) -> EmailMessage:
    msg = EmailMessage()
    msg["From"] = "a@example.com"
    msg["To"] = "b@example.com"
    msg["Subject"] = subject
    msg.set_content("the text part")
    msg.add_alternative(html, subtype="html")
    return msg


async def test_sink_keeps_messages_and_shows_them_sandboxed(tmp_path: Path) -> None:
    server = SinkServer(MailSink(tmp_path / "mail"), smtp_port=0, web_port=0)
    await server.start()
    try:
        evil = '<p>hi</p><script>parent.document.title="owned"</script>'
        errors, reply = await aiosmtplib.send(
            message("Hello <world>", evil),
            hostname="127.0.0.1",
            port=server.smtp_port,
        )
        assert errors == {}
        assert reply.startswith("OK queued as 1")
        async with httpx.AsyncClient(base_url=server.url) as client:
            listing = (await client.get("/api/messages")).json()
            index = await client.get("/")
            page = await client.get("/messages/1")
            raw = await client.get("/messages/1.eml")
            missing = await client.get("/messages/99")
            cleared = await client.delete("/api/messages")
            after = (await client.get("/api/messages")).json()
    finally:
        await server.stop()

    (entry,) = listing
    assert entry["subject"] == "Hello <world>"
    assert entry["text"].strip() == "the text part"
    assert entry["html"].strip() == evil
    assert "Hello &lt;world&gt;" in index.text
    # The HTML part is only inside a sandboxed iframe's srcdoc, attribute-escaped.
    assert '<iframe sandbox=""' in page.text
    assert "<script>" not in page.text
    assert "&lt;script&gt;" in page.text
    assert "the text part" in page.text
    assert "default-src 'none'" in page.headers["Content-Security-Policy"]
    assert raw.headers["Content-Type"].startswith("message/rfc822")
    assert b"Subject: Hello <world>" in raw.content
    assert missing.status_code == 404
    assert cleared.status_code == 204
    assert after == []
    (eml,) = (tmp_path / "mail").iterdir()
    assert eml.name == "000001.eml"
    assert eml.read_bytes() == raw.content


async def test_sink_refuses_bounce_recipients() -> None:
    server = SinkServer(MailSink(), smtp_port=0, serve_web=False)
    await server.start()
    try:
        with pytest.raises(aiosmtplib.SMTPRecipientsRefused) as info:
            await aiosmtplib.send(
                message("x", "<p>x</p>"),
                recipients=["bounce+1@example.com"],
                hostname="127.0.0.1",
                port=server.smtp_port,
            )
    finally:
        await server.stop()
    assert info.value.recipients[0].code == 550
    assert list(server.sink.messages) == []
