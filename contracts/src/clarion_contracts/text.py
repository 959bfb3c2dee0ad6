"""Clarion's input policy for text and links: what every contract and HTTP API accepts.

Text
    Every text that may reach PostgreSQL or a template refuses three kinds of
    code points:

    * U+0000: PostgreSQL cannot store it in ``text`` nor in ``jsonb``, so a record
      holding it could never be stored and would end in a DLQ;
    * the 66 Unicode noncharacters (U+FDD0..U+FDEF and the last two code points
      of each plane, U+FFFE/U+FFFF, U+1FFFE/U+1FFFF...), reserved for internal use
      and not meant for interchange (The Unicode Standard §23.7);
    * lone surrogates (U+D800..U+DFFF), which are not Unicode scalar values and
      cannot be encoded as UTF-8 (RFC 3629 §3), the encoding of every record.

    :data:`Text` applies the policy to a string field and documents it in the JSON
    Schema with :data:`TEXT_PATTERN` (a portable ECMA-262 pattern covering U+0000
    and the BMP noncharacters; JSON text cannot carry the rest anyway).
    :func:`check_json` applies it to the keys and strings of free JSON objects
    (``data``) and bounds their nesting to :data:`MAX_JSON_DEPTH` levels.

Links
    :data:`WebUrl` accepts only ``http`` and ``https`` URLs, plus the extra schemes
    an operator lists in ``CLARION_URL_SCHEMES`` (comma-separated, e.g. a mobile
    app's ``myapp``). Schemes that run code or embed content (``javascript``,
    ``data``, ``vbscript``, ``file``...) are refused even if listed. Renderers
    additionally use :func:`is_web_link`, which accepts ``http``/``https`` only.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, AnyUrl, StringConstraints

TEXT_PATTERN = r"^[^\x00\uFDD0-\uFDEF\uFFFE\uFFFF]*$"
"""JSON Schema pattern of :data:`Text` (U+0000 and BMP noncharacters excluded)."""

USER_ID_PATTERN = r"^[^\s\x00\uFDD0-\uFDEF\uFFFE\uFFFF]+$"
"""JSON Schema pattern of a user id: no whitespace, and the text policy."""

PATTERN_TIGHTENINGS: Mapping[str | None, str] = {
    None: TEXT_PATTERN,
    r"^[^\s]+$": USER_ID_PATTERN,
}
"""Schema ``pattern`` changes that only add the text policy: old pattern -> new pattern.

Within v1 they are backward compatible (see :mod:`clarion_contracts.compat`): a
string the new pattern refuses holds U+0000, a noncharacter or a lone surrogate,
and no such string could ever be stored by a v1 consumer (PostgreSQL refuses
U+0000, UTF-8 cannot encode a lone surrogate) nor was meant for interchange
(noncharacters). Valid v1 messages are therefore accepted exactly as before.
"""

MAX_JSON_DEPTH = 32
"""Deepest nesting of a free JSON value (``data``, request bodies): 32 levels."""

WEB_SCHEMES = frozenset({"http", "https"})
"""URL schemes always accepted and the only ones rendered as links."""

FORBIDDEN_SCHEMES = frozenset(
    {"javascript", "vbscript", "data", "file", "blob", "filesystem", "about", "jar"}
)
"""Schemes refused even when configured: they run code, embed content or read local files."""

URL_SCHEMES_ENV = "CLARION_URL_SCHEMES"
"""Environment variable listing extra accepted URL schemes (comma-separated)."""


# U+0000, surrogates, U+FDD0..U+FDEF, U+FFFE/U+FFFF, and every code point from U+1FFFE
# up; the last are only candidates (astral noncharacters end in FFFE/FFFF), confirmed
# in Python. Ranges keep the scan fast, unlike a class listing the 32 astral ones.
_CANDIDATES = re.compile("[\x00\ud800-\udfff\ufdd0-\ufdef\ufffe\uffff\U0001fffe-\U0010ffff]")


def _is_refused(code_point: int) -> bool:
    return code_point <= 0xFFFF or (code_point & 0xFFFE) == 0xFFFE


class TextPolicyError(ValueError):
    """A text holds U+0000, a noncharacter or a lone surrogate (``position``: its index)."""

    def __init__(self, position: int, code_point: int) -> None:
        self.position = position
        self.code_point = code_point
        super().__init__(
            f"text holds U+{code_point:04X} at position {position}: U+0000, noncharacters "
            "and lone surrogates are not accepted"
        )


class JsonDepthError(ValueError):
    """A JSON value is nested deeper than allowed."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        super().__init__(f"JSON value nested deeper than {limit} levels")


def check_text(value: str) -> str:
    """Return ``value`` if it satisfies the text policy (see the module docstring).

    Raises:
        TextPolicyError: the first refused code point and its index.
    """
    # ASCII text (the common case) can only hold U+0000.
    if value.isascii() and "\x00" not in value:
        return value
    for found in _CANDIDATES.finditer(value):
        code_point = ord(found.group())
        if _is_refused(code_point):
            raise TextPolicyError(found.start(), code_point)
    return value


def json_depth_exceeds(value: Any, limit: int = MAX_JSON_DEPTH) -> bool:
    """True if ``value`` (decoded JSON) nests objects/arrays deeper than ``limit`` levels.

    A scalar has depth 0, ``{}`` and ``[]`` depth 1. Iterative: no recursion limit.
    """
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, dict):
            children: Any = node.values()
        elif isinstance(node, list):
            children = node
        else:
            continue
        if depth + 1 > limit:
            return True
        stack.extend((child, depth + 1) for child in children)
    return False


def check_json(value: dict[str, Any], limit: int = MAX_JSON_DEPTH) -> dict[str, Any]:
    """Return a free JSON object if its keys and strings satisfy the text policy.

    One iterative pass (no recursion limit), checking nesting as it goes.

    Args:
        value: a decoded JSON object (the ``data`` of an event or notification).
        limit: deepest nesting allowed; the object itself is level 1.

    Raises:
        JsonDepthError: nested deeper than ``limit``.
        TextPolicyError: a key or string value holds a refused code point.
    """
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            raise JsonDepthError(limit)
        pairs = node.items() if type(node) is dict else enumerate(node)
        for key, child in pairs:
            if type(key) is str:
                check_text(key)
            kind = type(child)
            if kind is str:
                check_text(child)
            elif kind is dict or kind is list:
                stack.append((child, depth + 1))
    return value


@cache
def configured_url_schemes() -> frozenset[str]:
    """Accepted URL schemes: ``http``, ``https`` and those listed in ``CLARION_URL_SCHEMES``.

    Read once per process. Listed schemes in :data:`FORBIDDEN_SCHEMES` are ignored.
    """
    extra = {
        part.strip().lower()
        for part in os.environ.get(URL_SCHEMES_ENV, "").split(",")
        if part.strip()
    }
    return WEB_SCHEMES | frozenset(extra - FORBIDDEN_SCHEMES)


def check_url_scheme(url: AnyUrl) -> AnyUrl:
    """Return ``url`` if its scheme is accepted (:func:`configured_url_schemes`).

    Raises:
        ValueError: any other scheme, e.g. ``javascript:`` or ``data:``.
    """
    if url.scheme.lower() not in configured_url_schemes():
        raise ValueError(f"URL scheme {url.scheme!r} is not accepted (use http or https)")
    check_text(str(url))
    return url


def is_web_link(url: object) -> bool:
    """True if ``url`` (a string or URL object) is an ``http``/``https`` URL safe for ``href``."""
    if url is None:
        return False
    text = str(url).strip()
    scheme, sep, rest = text.partition(":")
    return bool(sep) and scheme.lower() in WEB_SCHEMES and rest.startswith("//")


def web_link(url: object) -> str | None:
    """``url`` as text if :func:`is_web_link`, else ``None`` (rendered as no link)."""
    return str(url).strip() if is_web_link(url) else None


Text = Annotated[str, StringConstraints(pattern=TEXT_PATTERN), AfterValidator(check_text)]
"""A string satisfying the text policy; add ``StringConstraints`` for lengths."""

TextKey = Annotated[str, AfterValidator(check_text)]
"""A mapping key satisfying the text policy (validated; the schema is left unchanged)."""

JsonData = Annotated[dict[str, Any], AfterValidator(check_json)]
"""A free JSON object whose keys and strings satisfy the text policy, nested at most 32 deep."""

WebUrl = Annotated[AnyUrl, AfterValidator(check_url_scheme)]
"""An absolute URL with an accepted scheme (``http``/``https`` unless configured)."""
