"""Properties of teams-notify's text handling, for any input: cleaned, escaped, cut safely."""

from __future__ import annotations

import re
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from buildkite_events.notify import BuildGlob
from buildkite_events.text import clean, clusters, fit, units
from tests.support import load_function

fn: Any = load_function("teams-notify")

# Any text, weighted towards markdown, mentions, emoji sequences, combining marks, bidi
# controls, surrogates and newlines.
tricky = st.sampled_from(
    [
        "[",
        "]",
        "(",
        ")",
        "\\",
        "*",
        "_",
        "<at>",
        "#",
        "- ",
        "1. ",
        "{{",
        "👩\u200d👩\u200d👧",
        "e\u0301",
        "\u202e",
        "\ud800",
    ]
)
texts = st.lists(st.one_of(st.characters(), tricky), max_size=300).map("".join)


def unescaped_markdown(text: str) -> list[str]:
    """Markdown characters not preceded by an escaping backslash (a lone trailing one counts)."""
    found, i = [], 0
    while i < len(text):
        if text[i] == "\\":
            if i + 1 == len(text):
                found.append("\\")
            i += 2
            continue
        if text[i] in "[]<>*_`~{}|":
            found.append(text[i])
        i += 1
    return found


def unescape(text: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)


@settings(max_examples=300, deadline=None)
@given(text=texts, limit=st.integers(min_value=4, max_value=300))
@example(text="[" * 100, limit=10)
@example(text="1. item", limit=300)
def test_md_escape_then_cut_leaves_no_markdown(text: str, limit: int) -> None:
    cleaned = clean(text)
    out = fit(cleaned, limit, fn.md_escape)
    assert units(out) <= limit
    body = out.removesuffix("…") if out != fn.md_escape(cleaned) else out
    assert unescaped_markdown(body) == []
    assert not re.search(r"^(#{1,6}(\s|$)|[-+]\s|\d{1,9}[.)](\s|$))", body)  # no heading or list
    assert cleaned.startswith(unescape(body).rstrip())
    kept = list(clusters(unescape(body)))
    assert kept == list(clusters(cleaned))[: len(kept)]


@given(text=texts)
def test_md_escape_round_trips(text: str) -> None:
    cleaned = clean(text)
    assert unescape(fn.md_escape(cleaned)) == cleaned


def test_pipelines_parse() -> None:
    assert fn.parse_pipelines(("deploy-*@main", " api ", "*@release/*")) == (
        BuildGlob("deploy-*", "main"),
        BuildGlob("api"),
        BuildGlob("*", "release/*"),
    )
    config = fn.Config(webhook_url="https://x.example/workflows/1?sig=s", pipelines=("deploy-*@main", "api"))
    assert config.wants("deploy-web", "main") and config.wants("api", None)
    assert not config.wants("deploy-web", "fix") and not config.wants(None, "main")
