"""Unit tests of template rendering and sanitising."""

from __future__ import annotations

from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st
from jinja2.exceptions import SecurityError

from clarion_aggregator.domain.rendering import Renderer, clean_text, sanitize_html

R = Renderer()
POST = {"type": "post", "id": "p1", "title": "Hello"}


def liked(names: list[str], count: int, obj: dict[str, str] | None = None, locale: str = "en"):
    return R.render("post.liked", locale, actor_names=names, actor_count=count, obj=obj or POST)


@pytest.mark.parametrize(
    ("names", "count", "title"),
    [
        (["alice"], 1, "alice liked your post “Hello”"),
        (["alice", "bob"], 2, "alice and bob liked your post “Hello”"),
        (["alice", "bob", "carol"], 3, "alice, bob and carol liked your post “Hello”"),
        (["alice", "bob"], 6, "alice, bob and 4 others liked your post “Hello”"),
        (["alice", "bob", "carol"], 4, "alice, bob, carol and 1 other liked your post “Hello”"),
    ],
)
def test_actor_phrases(names: list[str], count: int, title: str) -> None:
    assert liked(names, count).title == title


def test_html_marks_names_and_escapes() -> None:
    out = liked(["alice", "bob"], 6)
    assert out.body_html == (
        "<p><strong>alice</strong>, <strong>bob</strong> and 4 others liked your post “Hello”</p>"
    )


def test_script_names_are_neutralised() -> None:
    evil = '<script>alert("x")</script>'
    out = liked([evil, "bob"], 2, {"type": "post", "id": "p1", "title": '<img src=x onerror="y">'})
    assert "<script" not in out.body_html
    assert "<img" not in out.body_html
    assert "&lt;script&gt;" in out.body_html
    # plain text keeps the text as text (consumers escape it)
    assert out.title.startswith(evil)


def test_body_with_untrusted_markup_is_cleaned() -> None:
    out = R.render(
        "post.commented",
        "en",
        actor_names=["a"],
        actor_count=1,
        obj=POST,
        data={"comment": 'nice <a href="javascript:alert(1)">x</a>\nsecond line'},
    )
    assert out.title == "a commented on your post “Hello”"
    assert out.body == 'nice <a href="javascript:alert(1)">x</a>\nsecond line'
    assert "<a " not in out.body_html
    assert out.body_html.endswith("<p>second line</p>")


def test_control_characters_and_bidi_overrides_are_removed() -> None:
    assert clean_text("ev\u202eil\n\tname\x00") == "ev il name"
    assert clean_text("x" * 400).endswith("…")
    assert len(clean_text("x" * 400)) == 300


def test_sanitize_html_allows_only_safe_tags() -> None:
    html = (
        '<p onclick="x"><strong>a</strong>'
        '<a href="https://e.org" target="_blank">l</a><iframe></iframe></p>'
    )
    link = '<a href="https://e.org" rel="noopener noreferrer nofollow">l</a>'
    assert sanitize_html(html) == f"<p><strong>a</strong>{link}</p>"


def test_locale_fallback() -> None:
    assert R.template_path("post.liked", "pt-BR") == "en/post.liked.j2"
    assert R.template_path("post.liked", None) == "en/post.liked.j2"
    assert R.template_path("no.such", "en") == "en/default.j2"


def test_locale_specific_template(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "fr").mkdir()
    (tmp_path / "en" / "default.j2").write_text("{{ actors[0] }} did it\n")
    (tmp_path / "fr" / "post.liked.j2").write_text("{{ actors[0] }} aime « {{ object.title }} »\n")
    r = Renderer(tmp_path)
    assert r.render("post.liked", "fr-CA", actor_names=["a"], actor_count=1, obj=POST).title == (
        "a aime « Hello »"
    )
    assert r.render("post.liked", "de", actor_names=["a"], actor_count=1, obj=POST).title == (
        "a did it"
    )


def test_templates_are_sandboxed(tmp_path: Path) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "default.j2").write_text(
        "{{ actors.__class__.__mro__[1].__subclasses__() }}\n"
    )
    with pytest.raises(SecurityError):
        Renderer(tmp_path).render("x", "en", actor_names=["a"], actor_count=1, obj=POST)


def test_every_packaged_template_renders() -> None:
    from clarion_aggregator.domain.rules import load_rules

    rules = load_rules()
    for rule in [rules.default, *rules.rules.values()]:
        out = R.render(
            rule.template,
            "en",
            actor_names=["alice"],
            actor_count=1,
            obj={"type": "repo", "id": "o/r", "title": "o/r"},
            data={"title": "T", "body": "B"},
        )
        assert out.title
        assert out.body_html.startswith("<p>")


@given(st.lists(st.text(min_size=1, max_size=40), min_size=1, max_size=3), st.text(max_size=80))
def test_no_markup_survives_in_html(names: list[str], title: str) -> None:
    out = liked(names, len(names) + 2, {"type": "post", "id": "p1", "title": title})
    stripped = out.body_html.replace("<p>", "").replace("</p>", "")
    stripped = stripped.replace("<strong>", "").replace("</strong>", "")
    assert "<" not in stripped


@pytest.mark.parametrize(
    ("url", "shown"),
    [
        ("javascript:alert(1)", "no link"),
        ("data:text/html,<script>alert(1)</script>", "no link"),
        ("myapp://post/1", "no link"),
        ("https://example.com/p/1", "open https://example.com/p/1"),
    ],
)
def test_templates_see_only_web_links(tmp_path: Path, url: str, shown: str) -> None:
    (tmp_path / "en").mkdir()
    (tmp_path / "en" / "default.j2").write_text(
        '{% if object.url %}<a href="{{ object.url }}">open</a> {{ object.url }}'
        "{% else %}no link{% endif %}\n"
    )
    obj = {**POST, "url": url}
    rendered = Renderer(tmp_path).render("x", "en", actor_names=["a"], actor_count=1, obj=obj)
    assert rendered.title == shown
    if shown == "no link":
        assert url.split(":")[0] not in rendered.body_html
