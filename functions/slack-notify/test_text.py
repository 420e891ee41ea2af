"""Properties of slack-notify's text handling, for any input: cleaned, escaped, cut safely."""

from __future__ import annotations

import html
import re
import sys
from typing import Any

from hypothesis import example, given, settings
from hypothesis import strategies as st

from buildkite_events.text import clean, clusters, fit, safe_url, units
from tests.support import load_function

fn: Any = load_function("slack-notify")
kit: Any = sys.modules["slack_blocks"]  # the message, beside main.py

# Any text, weighted towards what breaks naive code: Slack's control characters, emoji
# sequences, combining marks, bidi controls, surrogates, newlines.
tricky = st.sampled_from(
    ["<", ">", "&", "|", "!", "@", "👩\u200d👩\u200d👧", "🇳🇿", "e\u0301", "\u202e", "\ud800", "\n"]
)
texts = st.lists(st.one_of(st.characters(), tricky), max_size=400).map("".join)


@settings(max_examples=300, deadline=None)
@given(text=texts, limit=st.integers(min_value=2, max_value=300))
@example(text="<" * 100, limit=10)
@example(text="👩\u200d👩\u200d👧" * 50, limit=9)
def test_fit_escapes_and_cuts_between_characters(text: str, limit: int) -> None:
    cleaned = clean(text)
    out = fit(cleaned, limit, kit.escape)
    assert units(out) <= limit
    assert not re.search(r"[<>]", out)  # Slack's control characters only as entities
    body = out.removesuffix("…") if out != kit.escape(cleaned) else out
    assert re.fullmatch(r"(&lt;|&gt;|&amp;|[^&])*", body)  # never a broken entity
    shown = html.unescape(body)
    assert cleaned.startswith(shown)
    kept = list(clusters(shown))
    assert kept == list(clusters(cleaned))[: len(kept)]  # whole characters only


@settings(max_examples=300, deadline=None)
@given(text=texts)
def test_clean_leaves_one_line_without_controls_or_overrides(text: str) -> None:
    out = clean(text)
    assert out == out.strip() and "  " not in out
    assert not re.search(r"[\x00-\x1f\x7f-\x9f\u202a-\u202e\u2066-\u2069\ud800-\udfff]", out)
    out.encode("utf-8")  # always encodable


@given(url=st.text(max_size=200))
def test_safe_url_is_http_and_cannot_break_a_link(url: str) -> None:
    out = safe_url("https://buildkite.com/" + url, kit.URL_LIMIT)
    assert out is not None and out.startswith("https://buildkite.com/")
    assert not re.search(r"[\s<>|\"\x00-\x1f\x7f-\uffff]", out)
    assert safe_url("javascript:alert(1)//" + url, kit.URL_LIMIT) is None


def test_routes_parse_and_match_first_wins() -> None:
    routes = fn.parse_routes("deploy-*@main=#deploys; deploy-*=C0123ABCDE\n*@release/*=#releases;sandbox-*=-")
    config = fn.Config(token="x", routes="deploy-*@main=#deploys; deploy-*=C0123ABCDE\n*@release/*=#releases")
    assert [(glob.pipeline, glob.branch, channel) for glob, channel in routes] == [
        ("deploy-*", "main", "#deploys"),
        ("deploy-*", None, "C0123ABCDE"),
        ("*", "release/*", "#releases"),
        ("sandbox-*", None, None),
    ]
    assert config.channel_for("deploy-web", "main") == "#deploys"
    assert config.channel_for("deploy-web", "fix") == "C0123ABCDE"
    assert config.channel_for("api", "release/1.2") == "#releases"
    assert config.channel_for("api", None) == "#builds"
    assert config.channel_for(None, "main") == "#builds"
