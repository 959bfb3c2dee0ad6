"""Sending a message over SMTP with aiosmtplib (RFC 5321; STARTTLS RFC 3207; AUTH RFC 4954)."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from email.message import EmailMessage

import aiosmtplib

from clarion_email.domain.retry import SmtpFailure, classify_smtp
from clarion_email.settings import EmailSettings


@dataclass(frozen=True)
class SendFailure(Exception):
    """An SMTP send that did not go through.

    Attributes:
        kind: transient (retry later) or permanent.
        code: the SMTP reply code, None without a reply (connection error, timeout).
        message: the server's text or the error.
    """

    kind: SmtpFailure
    code: int | None
    message: str

    def __str__(self) -> str:
        return f"{self.code or 'no reply'}: {self.message}"


class SmtpSender:
    """Sends one message per SMTP connection, as configured in :class:`EmailSettings`."""

    def __init__(self, settings: EmailSettings) -> None:
        self._settings = settings
        self._tls: ssl.SSLContext | None = None
        if settings.smtp_security != "none":
            self._tls = ssl.create_default_context()
            if not settings.smtp_validate_certs:
                self._tls.check_hostname = False
                self._tls.verify_mode = ssl.CERT_NONE

    async def send(self, message: EmailMessage, sender: str, recipient: str) -> str:
        """Send ``message`` from envelope ``sender`` to ``recipient``.

        Returns:
            The server's reply to ``DATA`` (e.g. ``"250 OK queued as 1234"``).

        Raises:
            SendFailure: the server refused (4yz transient, 5yz permanent), or the
                connection failed or timed out (transient).
        """
        s = self._settings
        try:
            errors, reply = await aiosmtplib.send(
                message,
                sender=sender,
                recipients=[recipient],
                hostname=s.smtp_host,
                port=s.smtp_port,
                username=s.smtp_username,
                password=s.smtp_password,
                use_tls=s.smtp_security == "tls",
                start_tls=s.smtp_security == "starttls",
                tls_context=self._tls,
                timeout=s.smtp_timeout_seconds,
            )
        except aiosmtplib.SMTPRecipientsRefused as exc:
            refusal = exc.recipients[0] if exc.recipients else None
            code = refusal.code if refusal is not None else 550
            text = refusal.message if refusal is not None else str(exc)
            raise SendFailure(classify_smtp(code), code, text) from exc
        except aiosmtplib.SMTPResponseException as exc:
            kind = classify_smtp(exc.code) if exc.code >= 400 else SmtpFailure.TRANSIENT
            raise SendFailure(kind, exc.code, exc.message) from exc
        except (aiosmtplib.SMTPException, OSError, TimeoutError) as exc:
            raise SendFailure(SmtpFailure.TRANSIENT, None, f"{type(exc).__name__}: {exc}") from exc
        if errors:
            code, text = next(iter(errors.values()))
            raise SendFailure(classify_smtp(code), code, text)
        return reply
