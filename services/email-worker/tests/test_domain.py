"""Unit tests of email-worker's pure logic: rate limits, retries, headers, templates."""

from __future__ import annotations

import email
import email.policy
from datetime import UTC, datetime, timedelta
from email.message import EmailMessage
from pathlib import Path

import jinja2
import pytest

from clarion_contracts.v1 import EmailItem, EmailKind
from clarion_email.domain.message import (
    RenderedEmail,
    build_message,
    clean_header_text,
    message_id,
    unsubscribe_url,
)
from clarion_email.domain.ratelimit import DomainRateLimiter, TokenBucket, recipient_domain
from clarion_email.domain.retry import BackoffPolicy, SmtpFailure, classify_smtp
from clarion_email.domain.templates import (
    Recipient,
    TemplateRenderer,
    locale_chain,
    sanitize_html,
    template_candidates,
)

T0 = datetime(2026, 11, 24, 8, 30, tzinfo=UTC)


def item(n: int, type_: str = "post.liked", **overrides: object) -> EmailItem:
    data: dict[str, object] = {
        "notification_id": f"n{n}",
        "version": 1,
        "type": type_,
        "category": "social",
        "title": f"Title {n}",
        "body": f"Body {n}",
        "body_html": f"<p>Body <b>{n}</b></p>",
        "url": f"https://example.com/n/{n}",
        "actor_count": 1,
        "occurred_at": T0 + timedelta(minutes=n),
    }
    data.update(overrides)
    return EmailItem.model_validate(data)


RECIPIENT = Recipient(user_id="u1", name="Alice", email="alice@example.com")


# --- rate limiter -------------------------------------------------------------------


def test_token_bucket_allows_a_burst_then_the_rate() -> None:
    bucket = TokenBucket(rate=2.0, capacity=3.0, tokens=3.0, updated=0.0)
    assert [bucket.take(0.0) for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take(0.0) == pytest.approx(0.5)
    assert bucket.take(0.5) == 0.0  # refilled one token in half a second
    assert bucket.take(0.5) == pytest.approx(0.5)
    assert bucket.take(100.0) == 0.0
    assert bucket.tokens == pytest.approx(2.0)  # capped at capacity before taking


def test_domain_limiter_keeps_domains_apart_and_applies_overrides() -> None:
    limiter = DomainRateLimiter(1.0, 2, overrides={"Slow.example": (0.5, 1)})
    assert limiter.acquire("a.example", 0.0) == 0.0
    assert limiter.acquire("A.EXAMPLE", 0.0) == 0.0
    assert limiter.acquire("a.example", 0.0) == pytest.approx(1.0)
    assert limiter.acquire("b.example", 0.0) == 0.0
    assert limiter.acquire("slow.example", 0.0) == 0.0
    assert limiter.acquire("slow.example", 0.0) == pytest.approx(2.0)


def test_domain_limiter_evicts_only_full_buckets() -> None:
    limiter = DomainRateLimiter(1.0, 1, max_domains=2)
    limiter.acquire("a", 0.0)
    limiter.acquire("b", 0.0)
    limiter.acquire("c", 10.0)  # a and b are full again by then: one is dropped
    assert len(limiter._buckets) == 2
    limiter.acquire("d", 10.0)
    assert limiter.acquire("d", 10.0) == pytest.approx(1.0)  # d's state kept


def test_limiter_rejects_bad_config() -> None:
    with pytest.raises(ValueError, match="rate"):
        DomainRateLimiter(0.0, 1)


def test_recipient_domain() -> None:
    assert recipient_domain("Bob@Example.COM") == "example.com"
    with pytest.raises(ValueError, match="not an email"):
        recipient_domain("nobody")


# --- retries --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("code", "kind"),
    [
        (None, SmtpFailure.TRANSIENT),
        (421, SmtpFailure.TRANSIENT),
        (451, SmtpFailure.TRANSIENT),
        (550, SmtpFailure.PERMANENT),
        (554, SmtpFailure.PERMANENT),
    ],
)
def test_classify_smtp(code: int | None, kind: SmtpFailure) -> None:
    assert classify_smtp(code) is kind


def test_classify_smtp_refuses_success_codes() -> None:
    with pytest.raises(ValueError, match="not an SMTP failure"):
        classify_smtp(250)


def test_backoff() -> None:
    policy = BackoffPolicy(max_attempts=3, base_seconds=5, max_seconds=12)
    assert [policy.delay(a) for a in (1, 2, 3)] == [5.0, 10.0, 12.0]
    assert policy.delay(1, jitter=0.2) == pytest.approx(6.0)
    assert policy.exhausted(3)
    assert not policy.exhausted(2)


# --- headers --------------------------------------------------------------------------


def parse(msg: EmailMessage) -> EmailMessage:
    """Round-trip through bytes, as the SMTP server sees it."""
    parsed = email.message_from_bytes(msg.as_bytes(), policy=email.policy.default)
    assert isinstance(parsed, EmailMessage)
    return parsed


def test_message_headers_and_parts() -> None:
    url = unsubscribe_url("https://api.example.com/", "a.b+c/d")
    assert url == "https://api.example.com/v1/unsubscribe?token=a.b%2Bc%2Fd"
    msg = parse(
        build_message(
            rendered=RenderedEmail(subject="Hello", text="plain body", html="<p>html body</p>"),
            from_address="noreply@clarion.example",
            from_name="Clarion",
            to_address="alice@example.com",
            to_name="Alice Ünicode",
            message_id=message_id("req-1", "clarion.example"),
            date=T0,
            list_unsubscribe=url,
            extra_headers={"X-Clarion-Request-Id": "req-1"},
        )
    )
    assert msg["Message-ID"] == message_id("req-1", "clarion.example")
    assert msg["Message-ID"].startswith("<")
    assert msg["Message-ID"].endswith("@clarion.example>")
    assert msg["Date"] == "Tue, 24 Nov 2026 08:30:00 +0000"
    assert msg["From"] == "Clarion <noreply@clarion.example>"
    assert msg["To"].addresses[0].display_name == "Alice Ünicode"
    assert msg["To"].addresses[0].addr_spec == "alice@example.com"
    assert msg["List-Unsubscribe"] == f"<{url}>"
    assert msg["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    assert msg["X-Clarion-Request-Id"] == "req-1"
    assert msg.get_content_type() == "multipart/alternative"
    parts = [p.get_content_type() for p in msg.iter_parts()]
    assert parts == ["text/plain", "text/html"]  # the preferred (HTML) part last
    assert msg.get_body(("plain",)).get_content().strip() == "plain body"  # type: ignore[union-attr]
    assert msg.get_body(("html",)).get_content().strip() == "<p>html body</p>"  # type: ignore[union-attr]


def test_message_id_is_stable_per_request() -> None:
    assert message_id("r1", "d") == message_id("r1", "d")
    assert message_id("r1", "d") != message_id("r2", "d")


def test_header_injection_is_folded_away() -> None:
    msg = parse(
        build_message(
            rendered=RenderedEmail(subject="Hi\r\nBcc: victim@example.com", text="t", html="h"),
            from_address="a@b.c",
            from_name=None,
            to_address="alice@example.com",
            to_name="Eve\nBcc: x@example.com",
            message_id="<1@b.c>",
            date=T0,
            list_unsubscribe=None,
        )
    )
    assert msg["Bcc"] is None
    assert msg["Subject"] == "Hi Bcc: victim@example.com"
    assert "List-Unsubscribe" not in msg
    assert clean_header_text("x" * 300, 10) == "xxxxxxxxx…"


def test_build_message_refuses_bad_input() -> None:
    rendered = RenderedEmail(subject="s", text="t", html="h")
    kwargs: dict[str, object] = {
        "rendered": rendered,
        "from_address": "a@b.c",
        "from_name": None,
        "to_name": None,
        "message_id": "<1@b.c>",
        "list_unsubscribe": None,
    }
    with pytest.raises(ValueError, match="email address"):
        build_message(to_address="no-at-sign", date=T0, **kwargs)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="timezone"):
        build_message(to_address="a@b.c", date=datetime(2026, 1, 1), **kwargs)  # type: ignore[arg-type]


# --- templates ------------------------------------------------------------------------


def test_locale_chain() -> None:
    assert locale_chain("de-AT") == ["de-AT", "de", "en"]
    assert locale_chain("pt_BR") == ["pt-BR", "pt", "en"]
    assert locale_chain("en") == ["en"]
    assert locale_chain(None) == ["en"]
    assert template_candidates("repo.starred", "de")[:3] == [
        ("repo.starred", "de"),
        ("repo.starred", "en"),
        ("generic", "de"),
    ]
    assert template_candidates("digest", "fr") == [("digest", "fr"), ("digest", "en")]


def test_immediate_email_renders_both_parts() -> None:
    rendered = TemplateRenderer().render(
        kind=EmailKind.IMMEDIATE,
        items=[item(1)],
        recipient=RECIPIENT,
        category="social",
        unsubscribe_url="https://api.example.com/v1/unsubscribe?token=t",
    )
    assert rendered.subject == "Title 1"
    assert "Hi Alice," in rendered.text
    assert "Body 1" in rendered.text
    assert "https://example.com/n/1" in rendered.text
    assert "https://api.example.com/v1/unsubscribe?token=t" in rendered.text
    assert "<p>Body <b>1</b></p>" in rendered.html
    assert 'href="https://example.com/n/1"' in rendered.html
    assert "2026-11-24 08:31 UTC" in rendered.text


def test_script_in_names_and_titles_is_escaped_in_html() -> None:
    evil = "<script>alert(1)</script>"
    rendered = TemplateRenderer().render(
        kind=EmailKind.IMMEDIATE,
        items=[item(1, title=f"{evil} liked", body_html=f"<p>ok</p>{evil}<img src=x onerror=y>")],
        recipient=Recipient(user_id="u1", name=evil, email="alice@example.com"),
        category="social",
        unsubscribe_url=None,
    )
    assert "<script>" not in rendered.html
    assert "&lt;script&gt;alert(1)&lt;/script&gt;" in rendered.html
    assert "onerror" not in rendered.html
    assert "<p>ok</p>" in rendered.html
    # The text part is not HTML: the name is shown as typed.
    assert f"Hi {evil}," in rendered.text


def test_sanitize_html_drops_scripts_and_unsafe_links() -> None:
    cleaned = str(sanitize_html('<a href="javascript:x()">a</a><b>b</b><script>s</script>'))
    assert "javascript" not in cleaned
    assert "<script>" not in cleaned
    assert "<b>b</b>" in cleaned


def test_locale_and_timezone_of_the_recipient() -> None:
    rendered = TemplateRenderer().render(
        kind=EmailKind.IMMEDIATE,
        items=[item(1)],
        recipient=Recipient(
            user_id="u1",
            name="Jörg",
            email="j@example.de",
            locale="de-AT",
            timezone="Europe/Berlin",
        ),
        category="social",
        unsubscribe_url="https://x/v1/unsubscribe?token=t",
    )
    assert "Hallo Jörg," in rendered.text
    assert "Abmelden" in rendered.html
    assert "2026-11-24 09:31 CET" in rendered.text


def test_unknown_locale_falls_back_to_english_and_bad_timezone_to_utc() -> None:
    rendered = TemplateRenderer().render(
        kind=EmailKind.IMMEDIATE,
        items=[item(1)],
        recipient=Recipient(
            user_id="u", name="N", email="n@x.y", locale="ja", timezone="Mars/Base"
        ),
        category="social",
        unsubscribe_url=None,
    )
    assert "Hi N," in rendered.text
    assert "UTC" in rendered.text


def test_type_specific_template_wins_over_generic(tmp_path: Path) -> None:
    folder = tmp_path / "repo.starred"
    folder.mkdir()
    (folder / "en.subject.txt").write_text("Star: {{ item.title }}")
    (folder / "en.txt").write_text("STAR {{ recipient_name }}")
    (folder / "en.html").write_text("<b>STAR {{ recipient_name }}</b>")
    loader = jinja2.ChoiceLoader(
        [jinja2.FileSystemLoader(tmp_path), jinja2.PackageLoader("clarion_email", "templates")]
    )
    renderer = TemplateRenderer(loader)
    starred = renderer.render(
        kind=EmailKind.IMMEDIATE,
        items=[item(1, type_="repo.starred")],
        recipient=Recipient(user_id="u", name="<i>x</i>", email="n@x.y"),
        category="social",
        unsubscribe_url=None,
    )
    assert starred.subject == "Star: Title 1"
    assert starred.html == "<b>STAR &lt;i&gt;x&lt;/i&gt;</b>"
    other = renderer.render(
        kind=EmailKind.IMMEDIATE,
        items=[item(1, type_="post.liked")],
        recipient=RECIPIENT,
        category="social",
        unsubscribe_url=None,
    )
    assert other.subject == "Title 1"


def test_digest_lists_every_item_grouped_by_type() -> None:
    items = [item(1), item(2, type_="repo.starred"), item(3), item(4, type_="issue.opened")]
    rendered = TemplateRenderer().render(
        kind=EmailKind.DIGEST,
        items=items,
        recipient=RECIPIENT,
        category="social",
        unsubscribe_url="https://x/v1/unsubscribe?token=t",
        period_start=T0,
        period_end=T0 + timedelta(days=1),
    )
    assert rendered.subject == "Your Clarion digest: 4 notifications"
    for n in range(1, 5):
        assert f"Title {n}" in rendered.text
        assert f'data-notification-id="n{n}"' in rendered.html
    text = rendered.text
    # Groups in type order, newest first within a group.
    assert text.index("== Issue opened (1) ==") < text.index("== Post liked (2) ==")
    assert text.index("== Post liked (2) ==") < text.index("== Repo starred (1) ==")
    assert text.index("Title 3") < text.index("Title 1")
    assert "between 2026-11-24 08:30 UTC and 2026-11-25 08:30 UTC" in text


def test_render_needs_items() -> None:
    with pytest.raises(ValueError, match="at least one"):
        TemplateRenderer().render(
            kind=EmailKind.DIGEST, items=[], recipient=RECIPIENT, category="c", unsubscribe_url=None
        )


@pytest.mark.parametrize(
    "url", ["javascript:alert(1)", "data:text/html,<script>alert(1)</script>", "vbscript:x"]
)
@pytest.mark.parametrize("locale", ["en", "de"])
@pytest.mark.parametrize("kind", [EmailKind.IMMEDIATE, EmailKind.DIGEST])
def test_a_non_http_url_renders_as_no_link(url: str, locale: str, kind: EmailKind) -> None:
    # The contract refuses such URLs now; model_copy stands for a record sent before it did.
    unsafe = item(1).model_copy(update={"url": url})
    rendered = TemplateRenderer().render(
        kind=kind,
        items=[unsafe, item(2)],
        recipient=Recipient(user_id="u1", name="A", email="a@example.com", locale=locale),
        category="social",
        unsubscribe_url="https://x/v1/unsubscribe?token=t",
    )
    scheme = url.split(":", 1)[0] + ":"
    assert scheme not in rendered.html
    assert scheme not in rendered.text
    assert 'href=""' not in rendered.html
    assert 'href="https://x/v1/unsubscribe?token=t"' in rendered.html, "http(s) links are kept"
    if kind is EmailKind.DIGEST:
        assert 'href="https://example.com/n/2"' in rendered.html


def test_safe_url_filter_blanks_other_schemes() -> None:
    from clarion_email.domain.templates import safe_url

    assert safe_url("https://example.com/a?b=c") == "https://example.com/a?b=c"
    for bad in ("javascript:alert(1)", " JavaScript:alert(1)", "data:,x", None, "mailto:a@b"):
        assert safe_url(bad) == ""
