"""Untrusted text for chat messages: clean it, measure it, cut it between characters.

Commit messages, branch names and author names come from whoever pushed the commit, so
notifiers strip control characters and bidi overrides, count length the way chat clients
do (UTF-16 code units), and never cut inside a character a person would see as one.
"""

from __future__ import annotations

import itertools
import re
import unicodedata
from collections.abc import Callable, Iterator
from urllib.parse import quote, urlsplit

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


def ordinal(number: int) -> str:
    """1st, 2nd, 3rd, 4th, 11th, 12th, 13th, 21st..."""
    suffix = "th" if 10 <= number % 100 <= 20 else {1: "st", 2: "nd", 3: "rd"}.get(number % 10, "th")
    return f"{number}{suffix}"


def plural(count: int, one: str, many: str | None = None) -> str:
    """ "1 failure", "2 failures", "3 retries" (``many`` when adding an s will not do)."""
    return f"{count} {one if count == 1 else (many or one + 's')}"


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


def fit(text: str, limit: int, escaper: Callable[[str], str] = str, ellipsis: str = "…") -> str:
    """``escaper(text)``, cut to ``limit`` UTF-16 units between characters: never inside an
    escape, a surrogate pair, or a character and its combining marks, emoji modifiers and
    zero-width-joined parts. ``escaper`` is the provider's (Slack entities, markdown
    backslashes); the cut is measured on the escaped text."""
    whole = escaper(text)
    if units(whole) <= limit:
        return whole
    budget = limit - units(ellipsis)
    pieces = list(itertools.islice(clusters(text), max(budget, 0) + 1))  # each takes a unit at least
    # Escaped text never gets shorter as the text grows, so the longest prefix that fits is
    # found by bisection (a greedy scan re-escaping every prefix would be quadratic).
    low, high = 0, len(pieces)
    while low < high:
        middle = (low + high + 1) // 2
        if units(escaper("".join(pieces[:middle]))) <= budget:
            low = middle
        else:
            high = middle - 1
    return escaper("".join(pieces[:low]).rstrip()) + ellipsis


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
