"""Untrusted text for chat messages: clean it, measure it, cut it between characters.

Commit messages, branch names and author names come from whoever pushed the commit, so
notifiers strip control characters and bidi overrides, count length the way chat clients
do (UTF-16 code units), and never cut inside a character a person would see as one.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator
from urllib.parse import quote, urlsplit

from .errors import InvalidEvent
from .event import Build, BuildkiteEvent

FINISHED_STATES = ("passed", "failed", "blocked", "canceled", "skipped", "not_run")

_CONTROLS = re.compile(r"[\x00-\x1f\x7f-\x9f]+")
# Bidi embeddings, overrides and isolates (they could reorder the text around them) and
# lone surrogates (not encodable). Marks such as U+200F stay: right-to-left text needs them.
_INVISIBLE = re.compile("[\u202a-\u202e\u2066-\u2069\ud800-\udfff]")
_SPACES = re.compile(r"\s+")


def clean(value: str | None) -> str:
    """One line of untrusted text: no control characters, no bidi overrides, spaces collapsed."""
    if not value:
        return ""
    return _SPACES.sub(" ", _INVISIBLE.sub("", _CONTROLS.sub(" ", value))).strip()


def units(text: str) -> int:
    """Length in UTF-16 code units (what a JavaScript length would say)."""
    return len(text.encode("utf-16-le", "surrogatepass")) // 2


def clusters(text: str) -> Iterator[str]:
    """User-perceived characters, approximately (extended grapheme clusters, simplified)."""
    i, n = 0, len(text)
    while i < n:
        j = i + 1
        if _is_regional(text[i]) and j < n and _is_regional(text[j]):
            j += 1  # a flag is two regional indicators
        while j < n:
            char = text[j]
            if char == "\u200d" and j + 1 < n:
                j += 2  # zero-width joiner: the next character belongs to this one
            elif _extends(char):
                j += 1
            else:
                break
        yield text[i:j]
        i = j


def _is_regional(char: str) -> bool:
    return 0x1F1E6 <= ord(char) <= 0x1F1FF


def _extends(char: str) -> bool:
    code = ord(char)
    return (
        unicodedata.category(char) in ("Mn", "Me", "Mc")
        or 0xFE00 <= code <= 0xFE0F  # variation selectors
        or 0x1F3FB <= code <= 0x1F3FF  # skin tones
        or 0xE0020 <= code <= 0xE007F  # emoji tag sequences
        or char == "\u200d"
    )


def safe_url(value: str | None, max_length: int) -> str | None:
    """An http(s) URL fit for a link or a button, or None. Characters that could end a
    markup link early (``|``, ``<``, ``>``, spaces, quotes, non-ASCII) are percent-encoded."""
    if not value:
        return None
    parts = urlsplit(value.strip())
    if parts.scheme not in ("https", "http") or not parts.netloc:
        return None
    url = quote(value.strip(), safe=":/?#[]@!$&'()*+,;=%~-._")
    return url if len(url) <= max_length else None


def check_url(url: str, variable: str, hint: str = "") -> None:
    """https, or plain http to this machine only (a local stand-in). The value may be a
    secret: the message never repeats it."""
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not parts.netloc or (parts.scheme != "https" and not (parts.scheme == "http" and local)):
        raise ValueError(f"{variable} must be an https URL (plain http only to localhost){hint}")


def notify_states(values: tuple[str, ...], variable: str) -> frozenset[str]:
    """The configured finished states; ``all`` (or ``*``) means every one."""
    states = {value.strip().lower() for value in values if value.strip()}
    if states & {"all", "*"}:
        return frozenset(FINISHED_STATES)
    unknown = sorted(states - set(FINISHED_STATES))
    if unknown:
        hint = " (Buildkite spells it canceled)" if "cancelled" in unknown else ""
        raise ValueError(
            f"{variable}: unknown state {', '.join(unknown)}{hint}; use any of {', '.join(FINISHED_STATES)}, or all"
        )
    if not states:
        raise ValueError(f"{variable} names no state; use any of {', '.join(FINISHED_STATES)}, or all")
    return frozenset(states)


def notified_build(event: BuildkiteEvent, states: frozenset[str]) -> Build | str:
    """A finished build whose state is one of ``states``, or why it is not notified.

    The state is the one a person would name: a build that finished blocked is "blocked".
    """
    build = event.build
    if event.event_type != "build.finished":
        return f"skipped: {event.event_type} is not build.finished"
    if build is None:
        raise InvalidEvent("build.finished carries no build (no id and no number)")
    state = build.effective_state or "unknown"
    if state not in states:
        return f"skipped: state {clean(state)[:40]} not notified"
    return build
