"""Rendering notifications from Jinja2 templates, per event type and locale.

Templates live in ``clarion_aggregator/templates/<locale>/<name>.j2`` and are
rendered in a :class:`jinja2.sandbox.SandboxedEnvironment` (templates may be
operator-supplied). A template's FIRST line is the title, the rest is the body.
Each template is rendered once, with autoescaping on (untrusted text (actor
names, object titles) is first normalised: control characters removed,
whitespace collapsed, length capped):

* HTML (``body_html``): actor names wrapped in ``<strong>``, title and body in
  ``<p>``; the result is then cleaned with nh3 (ammonia) allowing only ``p``,
  ``br``, ``strong``, ``em`` and ``a[href]``.
* plain text (``title``, ``body``): the same output with the template's tags
  removed and entities unescaped (untrusted text was escaped, so it never holds
  a real tag). Consumers showing it in HTML must escape it.

Variables: ``actors`` (names shown, newest first), ``actor_count`` (distinct
actors), ``others`` (``actor_count - len(actors)``), ``object`` (``type``,
``id``, ``title``, ``url``: an http(s) URL or ``None``, see :func:`with_web_link`),
``data`` (the latest event's data),
``priority``. Filter ``strong`` marks a name (bold in HTML).
Locale lookup: ``pt-BR`` tries ``pt-br``, then ``pt``, then ``en``.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import lru_cache
from html import unescape
from importlib import resources
from pathlib import Path
from typing import Any

import nh3
from jinja2 import ChainableUndefined, FileSystemLoader, Template, TemplateNotFound
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup, escape

from clarion_contracts.text import web_link

DEFAULT_LOCALE = "en"
DEFAULT_TEMPLATE = "default"
MAX_TEXT = 300
ALLOWED_TAGS = frozenset({"p", "br", "strong", "em", "a"})
ALLOWED_ATTRIBUTES = {"a": frozenset({"href"})}
_SPACE = re.compile(r"\s+")
_TAG = re.compile(r"<[^>]*>")


def clean_text(value: object, limit: int = MAX_TEXT) -> str:
    """Normalise untrusted display text to one plain line.

    Removes control and format characters (including bidi overrides), collapses
    whitespace and cuts to ``limit`` characters (ending with ``…`` when cut).
    """
    text = str(value or "")
    # str.isprintable() is False for every Unicode category C character (and for
    # separators other than the space), so only such text needs the per-character scan.
    if not text.isprintable():
        text = "".join(ch if unicodedata.category(ch)[0] != "C" else " " for ch in text)
    text = _SPACE.sub(" ", text).strip()
    if len(text) > limit:
        text = text[: limit - 1].rstrip() + "…"
    return text


@lru_cache(maxsize=1)
def _cleaner() -> nh3.Cleaner:
    # Building the ammonia policy costs more than cleaning a short notification.
    return nh3.Cleaner(
        tags=set(ALLOWED_TAGS),
        attributes={k: set(v) for k, v in ALLOWED_ATTRIBUTES.items()},
        url_schemes={"http", "https", "mailto"},
        link_rel="noopener noreferrer nofollow",
    )


def sanitize_html(html: str) -> str:
    """Clean HTML with nh3: only the tags in :data:`ALLOWED_TAGS`, links get ``rel``."""
    return _cleaner().clean(html)


def with_web_link(obj: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of an event object whose ``url`` is kept only if it is http(s), else ``None``.

    Contracts already refuse other schemes; this also covers aggregation groups
    stored before they did, so a ``javascript:`` link is never rendered nor routed.
    """
    out = dict(obj)
    out["url"] = web_link(out.get("url"))
    return out


@dataclass(frozen=True)
class Rendered:
    """The rendered texts of one notification version."""

    title: str
    body: str
    body_html: str


def _to_text(html: str) -> str:
    # Untrusted text reached the HTML escaped, so every real tag came from the template.
    return unescape(_TAG.sub("", html))


def _strong_html(value: object) -> Markup:
    # Concatenation: Markup.format's string.Formatter costs more than the escaping.
    return Markup(f"<strong>{escape(str(value))}</strong>")


def _split(text: str) -> tuple[str, str]:
    title, _, body = text.strip().partition("\n")
    return title.strip(), body.strip()


class _Template(Template):
    """A Jinja2 template whose ``{% from ... import %}`` reuses the imported module.

    Jinja2 rebuilds an imported template's module on every render unless it can
    tell that the importing context holds no global the module lacks; it tells by
    a set difference against a ``ChainMap`` view, which costs more than rendering a
    short notification. Globals are fixed once templates are loaded (Jinja2's own
    rule), so the names are compared as plain sets, cached per template.
    """

    _names: frozenset[str] | None = None

    def _get_default_module(self, ctx: Any = None) -> Any:
        if ctx is not None:
            names = self._names
            if names is None:
                names = self._names = frozenset(self.globals)
            if not ctx.globals_keys <= names:
                return super()._get_default_module(ctx)
        return super()._get_default_module(None)


def default_templates_dir() -> Path:
    """The templates directory shipped in the package."""
    return Path(str(resources.files("clarion_aggregator").joinpath("templates")))


class Renderer:
    """Renders notification texts (see the module docstring).

    Args:
        templates_dir: directory with ``<locale>/<name>.j2`` files (default: packaged).
    """

    def __init__(self, templates_dir: str | Path | None = None) -> None:
        loader = FileSystemLoader(str(templates_dir or default_templates_dir()))
        # Templates are read once per process (the file list already is): no
        # modification-time check per render; a changed template applies on restart.
        self._html = SandboxedEnvironment(
            loader=loader,
            autoescape=True,
            undefined=ChainableUndefined,
            keep_trailing_newline=False,
            auto_reload=False,
            cache_size=-1,
        )
        self._html.template_class = _Template
        self._html.filters["strong"] = _strong_html
        self._available = frozenset(loader.list_templates())
        self._paths: dict[tuple[str, str | None], str] = {}
        self._templates: dict[str, Template] = {}

    def _template(self, path: str) -> Template:
        template = self._templates.get(path)
        if template is None:
            template = self._templates[path] = self._html.get_template(path)
        return template

    def template_path(self, template: str, locale: str | None) -> str:
        """The template file used for ``template`` in ``locale`` (with fallbacks).

        Raises:
            jinja2.TemplateNotFound: neither the template nor ``default`` exists in ``en``.
        """
        cached = self._paths.get((template, locale))
        if cached is not None:
            return cached
        tag = (locale or DEFAULT_LOCALE).lower().replace("_", "-")
        candidates = [tag, tag.split("-")[0], DEFAULT_LOCALE]
        for name in (template, DEFAULT_TEMPLATE):
            for loc in candidates:
                path = f"{loc}/{name}.j2"
                if path in self._available:
                    self._paths[(template, locale)] = path
                    return path
        raise TemplateNotFound(f"{DEFAULT_LOCALE}/{template}.j2")

    def render(
        self,
        template: str,
        locale: str | None,
        *,
        actor_names: Sequence[str],
        actor_count: int,
        obj: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
        priority: str = "normal",
    ) -> Rendered:
        """Render one notification version.

        Args:
            template: rule template name.
            locale: BCP 47 tag of the recipient (``None``: English).
            actor_names: untrusted names shown, newest first.
            actor_count: distinct actors (>= len(actor_names)).
            obj: the object as a mapping (``type``, ``id``, ``title``, ``url``).
            data: the latest event's data.
            priority: the notification priority.

        Raises:
            jinja2.TemplateError: a template is broken or breaks the sandbox rules.
        """
        obj_ctx = with_web_link(obj)
        obj_ctx["title"] = clean_text(obj_ctx.get("title") or "", 1000) or None
        names = [clean_text(n) for n in actor_names]
        context = {
            "actors": names,
            "actor_count": actor_count,
            "others": max(actor_count - len(names), 0),
            "object": obj_ctx,
            "data": dict(data or {}),
            "priority": priority,
        }
        path = self.template_path(template, locale)
        html_title, html_body = _split(str(self._template(path).render(context)))
        title, body = _to_text(html_title), _to_text(html_body)
        html = f"<p>{html_title}</p>"
        if html_body:
            html += "".join(f"<p>{line}</p>" for line in html_body.splitlines() if line.strip())
        return Rendered(
            title=clean_text(title, 1000), body=body.strip(), body_html=sanitize_html(html)
        )
