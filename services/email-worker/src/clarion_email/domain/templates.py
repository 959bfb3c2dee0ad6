"""Rendering emails from Jinja2 templates, per notification type and locale.

Templates live in ``clarion_email/templates/<name>/<locale>.{subject.txt,txt,html}``
where ``<name>`` is a notification type (``repo.starred``), ``generic`` or
``digest``. An immediate email of type ``T`` for locale ``de-AT`` uses the
first of ``T/de-AT``, ``T/de``, ``T/en``, ``generic/de-AT``, ``generic/de``,
``generic/en`` whose three files exist; a digest the same with ``digest``.

HTML templates autoescape (Jinja2 ``select_autoescape``): names, titles and
plain-text bodies are escaped, so ``<script>`` in a user name is shown, never
run. An item's ``body_html`` (sanitised by the aggregator) is sanitised once
more with nh3 before it is marked safe. Text templates do not escape.

Links: an item's ``url`` reaches the templates only if it is an ``http``/``https``
URL (else ``None``: the email shows no link), and templates pass every ``href``
through the ``safe_url`` filter, which renders anything else as an empty string.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from itertools import groupby
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import jinja2
import nh3
from markupsafe import Markup

from clarion_contracts.text import web_link
from clarion_contracts.v1 import EmailItem, EmailKind
from clarion_email.domain.message import RenderedEmail

DEFAULT_LOCALE = "en"

_ALLOWED_TAGS = {"a", "b", "strong", "i", "em", "code", "pre", "p", "br", "ul", "ol", "li", "span"}


def locale_chain(locale: str | None) -> list[str]:
    """Locales to try, most specific first, ending with English.

    ``"de-AT"`` → ``["de-AT", "de", "en"]``; ``"pt_BR"`` → ``["pt-BR", "pt", "en"]``;
    ``None`` or ``""`` → ``["en"]``.
    """
    chain: list[str] = []
    if locale:
        tag = locale.replace("_", "-").strip()
        if tag:
            chain.append(tag)
            lang = tag.split("-", 1)[0].lower()
            if lang not in chain:
                chain.append(lang)
    if DEFAULT_LOCALE not in chain:
        chain.append(DEFAULT_LOCALE)
    return chain


def template_candidates(name: str, locale: str | None) -> list[tuple[str, str]]:
    """``(template name, locale)`` pairs to try, in order (see the module docstring)."""
    names = [name] if name in ("generic", "digest") else [name, "generic"]
    return [(n, loc) for n in names for loc in locale_chain(locale)]


def type_label(event_type: str) -> str:
    """A readable heading for a notification type: ``"repo.starred"`` → ``"Repo starred"``."""
    return event_type.replace(".", " ").replace("_", " ").replace("-", " ").capitalize()


def sanitize_html(html: str) -> Markup:
    """``html`` reduced to a small set of inline tags and safe links (nh3), marked safe."""
    return Markup(
        nh3.clean(
            html,
            tags=_ALLOWED_TAGS,
            attributes={"a": {"href", "title"}},
            url_schemes={"http", "https", "mailto"},
            link_rel="noopener noreferrer",
        )
    )


def safe_url(value: object) -> str:
    """The ``safe_url`` template filter: ``value`` if it is an http(s) URL, else ``""``."""
    return web_link(value) or ""


def _zone(name: str | None) -> ZoneInfo:
    try:
        return ZoneInfo(name or "UTC")
    except (ZoneInfoNotFoundError, ValueError):
        return ZoneInfo("UTC")


@dataclass(frozen=True)
class Recipient:
    """Who the email is for, from the user's profile (``name`` is untrusted text)."""

    user_id: str
    name: str
    email: str
    locale: str = DEFAULT_LOCALE
    timezone: str = "UTC"


class TemplateRenderer:
    """Renders :class:`RenderedEmail` pieces from the template tree.

    Args:
        loader: where templates come from; the package's ``templates`` folder by
            default (tests and deployments may pass a ``ChoiceLoader`` that puts
            their own folder first).
        product_name: shown in greetings and footers.
    """

    def __init__(
        self, loader: jinja2.BaseLoader | None = None, product_name: str = "Clarion"
    ) -> None:
        self.env = jinja2.Environment(
            loader=loader or jinja2.PackageLoader("clarion_email", "templates"),
            autoescape=jinja2.select_autoescape(enabled_extensions=("html",), default=False),
            undefined=jinja2.StrictUndefined,
            trim_blocks=True,
            lstrip_blocks=True,
            keep_trailing_newline=True,
        )
        self.env.filters["safe_url"] = safe_url
        self.product_name = product_name

    def _resolve(self, name: str, locale: str | None) -> tuple[str, str]:
        for tmpl, loc in template_candidates(name, locale):
            try:
                self.env.get_template(f"{tmpl}/{loc}.html")
                self.env.get_template(f"{tmpl}/{loc}.txt")
                self.env.get_template(f"{tmpl}/{loc}.subject.txt")
            except jinja2.TemplateNotFound:
                continue
            return tmpl, loc
        raise LookupError(f"no template for {name!r} in {locale!r} and no generic fallback")

    def render(
        self,
        *,
        kind: EmailKind,
        items: Sequence[EmailItem],
        recipient: Recipient,
        category: str,
        unsubscribe_url: str | None,
        period_start: datetime | None = None,
        period_end: datetime | None = None,
    ) -> RenderedEmail:
        """Render the subject, text and HTML of one email.

        Args:
            kind: immediate (the first item is the notification) or digest (all items,
                grouped by type, newest first within a group).
            items: the notifications (at least one).
            recipient: the profile the email goes to; dates are shown in its timezone.
            category: the notification category (named in the unsubscribe text).
            unsubscribe_url: the one-click unsubscribe URL shown in the footer.
            period_start / period_end: the digest's period.

        Raises:
            ValueError: ``items`` is empty.
            LookupError: not even the generic English template exists.
            jinja2.TemplateError: a template is broken.
        """
        if not items:
            raise ValueError("an email needs at least one item")
        name = "digest" if kind is EmailKind.DIGEST else items[0].type
        tmpl, loc = self._resolve(name, recipient.locale)
        tz = _zone(recipient.timezone)

        def when(dt: datetime | None) -> str:
            return "" if dt is None else dt.astimezone(tz).strftime("%Y-%m-%d %H:%M %Z")

        views = [
            {
                "notification_id": item.notification_id,
                "type": item.type,
                "type_label": type_label(item.type),
                "category": item.category,
                "title": item.title,
                "body": item.body,
                "body_html": sanitize_html(item.body_html),
                "url": web_link(item.url),
                "actor_count": item.actor_count,
                "occurred_at": when(item.occurred_at),
            }
            for item in items
        ]
        ordered = sorted(
            zip(items, views, strict=True),
            key=lambda pair: (pair[0].type, -pair[0].occurred_at.timestamp()),
        )
        groups = [
            {"type": t, "label": type_label(t), "entries": [v for _, v in grp]}
            for t, grp in groupby(ordered, key=lambda pair: pair[0].type)
        ]
        context: dict[str, Any] = {
            "product_name": self.product_name,
            "recipient_name": recipient.name,
            "locale": loc,
            "category": category,
            "item": views[0],
            "items": views,
            "groups": groups,
            "count": len(views),
            "unsubscribe_url": web_link(unsubscribe_url),
            "period_start": when(period_start),
            "period_end": when(period_end),
        }
        subject = self.env.get_template(f"{tmpl}/{loc}.subject.txt").render(context)
        text = self.env.get_template(f"{tmpl}/{loc}.txt").render(context)
        html = self.env.get_template(f"{tmpl}/{loc}.html").render(context)
        return RenderedEmail(subject=" ".join(subject.split()), text=text, html=html)
