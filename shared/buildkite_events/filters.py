r"""Pub/Sub subscription filters, parsed and evaluated locally.

The Pub/Sub emulator ignores subscription filters and accepts invalid ones, so
the functions and their tests evaluate them here instead. The syntax is the one
documented at https://cloud.google.com/pubsub/docs/subscription-message-filter:

    filter     := [ expression ]             empty: every message matches
    expression := term { "AND" term }
                | term { "OR" term }         mixing AND and OR needs parentheses
    term       := [ "NOT" | "-" ] simple     NOT binds tightest
    simple     := "(" expression ")" | condition
    condition  := "attributes" ":" key                     key is present
                | "attributes" "." key "=" string          key present, value equal
                | "attributes" "." key "!=" string         negation of the above
                | "hasPrefix(" "attributes" "." key "," string ")"
    key        := name | string              name: ASCII letters, digits, '_', '-'
    string     := '"' { character | escape } '"'

Operators and names are case-sensitive, and a filter is at most 256 bytes of
UTF-8. Where the page is silent this follows AIP-160 (https://google.aip.dev/160),
the general syntax Google's own fake server (pstest) parses these filters with:
whitespace around AND and OR and after NOT, none inside ``attributes.KEY``,
between ``hasPrefix`` and ``(`` or after ``-``; one negation per term
(``NOT NOT x`` needs parentheses); string
escapes as in CEL: ``\a \b \f \n \r \t \v \\ \" \' \? \` \xHH \uHHHH
\UHHHHHHHH`` and three-digit octal ``\ooo`` (``\000`` to ``\377``).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TypeAlias

__all__ = [
    "MAX_FILTER_BYTES",
    "And",
    "Equals",
    "Expr",
    "Filter",
    "FilterSyntaxError",
    "HasKey",
    "HasPrefix",
    "Not",
    "NotEquals",
    "Or",
    "matches",
    "parse_filter",
]

MAX_FILTER_BYTES = 256

_WHITESPACE = frozenset(" \t\n\r\f\v")
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_-")
_PUNCTUATION = frozenset("().:=,")
_SIMPLE_ESCAPES = {
    "a": "\a", "b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "v": "\v",
    "\\": "\\", '"': '"', "'": "'", "?": "?", "`": "`",
}  # fmt: skip
_CASE_FIXES = {"attributes": "attributes", "hasprefix": "hasPrefix"}
_HEX_ESCAPE_DIGITS = {"x": 2, "X": 2, "u": 4, "U": 8}
_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")
_OCTAL_DIGITS = frozenset("01234567")
# Hints for characters that are likely a habit from another filter language.
_CHARACTER_HINTS = {
    "'": "string literals use double quotes",
    "`": "keys that need quoting use a double-quoted string literal",
    "\\": "escape sequences are only allowed inside a string literal",
    "<": "only ':', '=' and '!=' comparisons are supported",
    ">": "only ':', '=' and '!=' comparisons are supported",
    "!": "'!' must be followed by '='; negate with NOT or '-'",
    "&": "use AND to combine conditions",
    "|": "use OR to combine conditions",
}


class FilterSyntaxError(ValueError):
    """An invalid filter; ``position`` is the 0-based offset of the problem."""

    reason: str
    text: str
    position: int

    def __init__(self, reason: str, text: str, position: int) -> None:
        self.reason = reason
        self.text = text
        self.position = position
        super().__init__(_describe_error(reason, text, position))

    def __reduce__(self) -> tuple[type[FilterSyntaxError], tuple[str, str, int]]:
        # The default reduce would call __init__ with the formatted message only.
        return type(self), (self.reason, self.text, self.position)


def _describe_error(reason: str, text: str, position: int) -> str:
    """``reason at column N`` followed by the offending line and a caret under it."""
    line_start = text.rfind("\n", 0, position) + 1
    line_end = text.find("\n", position)
    line = text[line_start : len(text) if line_end == -1 else line_end]
    column = position - line_start + 1
    where = f"column {column}"
    if "\n" in text:
        line_number = text.count("\n", 0, position) + 1
        where = f"line {line_number}, {where}"
    # Keep tabs so that the caret lines up with the character above it.
    pad = "".join("\t" if char == "\t" else " " for char in line[: column - 1])
    return f"{reason} at {where}\n  {line}\n  {pad}^"


# --- Syntax tree -------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class HasKey:
    """``attributes:KEY``."""

    key: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return self.key in attributes


@dataclass(frozen=True, slots=True)
class Equals:
    """``attributes.KEY = "VALUE"``: false when the key is absent."""

    key: str
    value: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return attributes.get(self.key) == self.value


@dataclass(frozen=True, slots=True)
class NotEquals:
    """``attributes.KEY != "VALUE"``: true when the key is absent, like NOT ``=``."""

    key: str
    value: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return attributes.get(self.key) != self.value


@dataclass(frozen=True, slots=True)
class HasPrefix:
    """``hasPrefix(attributes.KEY, "PREFIX")``: false when the key is absent."""

    key: str
    prefix: str

    def matches(self, attributes: Mapping[str, str]) -> bool:
        value = attributes.get(self.key)
        return value is not None and value.startswith(self.prefix)


@dataclass(frozen=True, slots=True)
class Not:
    operand: Expr

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return not self.operand.matches(attributes)


@dataclass(frozen=True, slots=True)
class And:
    operands: tuple[Expr, ...]

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return all(operand.matches(attributes) for operand in self.operands)


@dataclass(frozen=True, slots=True)
class Or:
    operands: tuple[Expr, ...]

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return any(operand.matches(attributes) for operand in self.operands)


Expr: TypeAlias = HasKey | Equals | NotEquals | HasPrefix | Not | And | Or


@dataclass(frozen=True, slots=True)
class Filter:
    """A parsed filter; ``expression`` is None for the empty filter."""

    text: str
    expression: Expr | None

    def matches(self, attributes: Mapping[str, str]) -> bool:
        return self.expression is None or self.expression.matches(attributes)

    def __str__(self) -> str:
        return self.text


# --- Tokenizer and parser ----------------------------------------------------


def _is_lowercase_operator(name: str) -> bool:
    return name.upper() in ("AND", "OR", "NOT") and not name.isupper()


@dataclass(frozen=True, slots=True)
class _Token:
    kind: str  # "name", "string", "end", or the punctuation itself: "(", "!=", ...
    value: str  # the name, or the decoded string literal
    start: int
    end: int

    def describe(self) -> str:
        if self.kind == "end":
            return "the end of the filter"
        if self.kind == "string":
            return "a string literal"
        return f"'{self.value}'"


class _Parser:
    """Recursive descent over tokens scanned on demand, so the first error wins."""

    def __init__(self, text: str) -> None:
        self._text = text
        self._pos = 0
        self._last_end = 0  # end of the last consumed token
        self._tok = self._scan(previous="")

    def parse(self) -> Expr:
        expr = self._expression()
        if self._tok.kind != "end":
            raise self._unexpected_after_condition(opening=None)
        return expr

    # Grammar rules.

    def _expression(self) -> Expr:
        terms = [self._term()]
        operator: str | None = None
        while self._tok.kind == "name" and self._tok.value in ("AND", "OR"):
            token = self._tok
            if operator is None:
                operator = token.value
            elif token.value != operator:
                raise self._error(
                    f"{operator} and {token.value} cannot be mixed without parentheses",
                    token.start,
                )
            self._keyword(token, space_before=True)
            terms.append(self._term())
        if operator is None:
            return terms[0]
        return And(tuple(terms)) if operator == "AND" else Or(tuple(terms))

    def _term(self) -> Expr:
        token = self._tok
        if token.kind == "name" and token.value == "NOT":
            self._keyword(token, space_before=False)
            return Not(self._simple(negated=True))
        if token.kind == "-":
            self._advance()
            if self._tok.start != token.end:
                raise self._error("'-' must be written directly before what it negates", token.end)
            return Not(self._simple(negated=True))
        return self._simple(negated=False)

    def _simple(self, *, negated: bool) -> Expr:
        token = self._tok
        if token.kind == "(":
            self._advance()
            expr = self._expression()
            if self._tok.kind != ")":
                raise self._unexpected_after_condition(opening=token)
            self._advance()
            return expr
        if token.kind == "name" and token.value == "attributes":
            return self._attribute_condition()
        if token.kind == "name" and token.value == "hasPrefix":
            return self._has_prefix()
        name = token.value if token.kind == "name" else ""
        if negated and (token.kind == "-" or name == "NOT"):
            reason = "a negation cannot be negated again without parentheses"
        elif _is_lowercase_operator(name):
            reason = f"operators are uppercase: write '{name.upper()}'"
        elif name.lower() in _CASE_FIXES:
            reason = f"names are case-sensitive: write '{_CASE_FIXES[name.lower()]}'"
        else:
            reason = f"expected attributes.KEY, attributes:KEY, hasPrefix( or '(', found {token.describe()}"
        raise self._error(reason, token.start)

    def _attribute_condition(self) -> Expr:
        attributes = self._advance()
        token = self._tok
        if token.kind == ":":
            self._advance()
            return HasKey(self._key(token, adjacent=False))
        if token.kind != ".":
            raise self._error(
                f"expected '.' or ':' after 'attributes', found {token.describe()}",
                token.start,
            )
        self._expect_adjacent(attributes, token)
        self._advance()
        key = self._key(token, adjacent=True)
        operator = self._tok
        if operator.kind not in ("=", "!="):
            raise self._error(
                f"expected '=' or '!=' after the key, found {operator.describe()}",
                operator.start,
            )
        self._advance()
        value = self._string(f"after '{operator.kind}'")
        return Equals(key, value) if operator.kind == "=" else NotEquals(key, value)

    def _has_prefix(self) -> Expr:
        name = self._advance()
        if self._tok.kind != "(":
            raise self._error("expected '(' after 'hasPrefix'", self._tok.start)
        self._expect_adjacent(name, self._tok)
        self._advance()
        attributes = self._tok
        if not (attributes.kind == "name" and attributes.value == "attributes"):
            raise self._error(
                "the first argument of hasPrefix must be attributes.KEY",
                attributes.start,
            )
        self._advance()
        dot = self._tok
        if dot.kind != ".":
            raise self._error("the first argument of hasPrefix must be attributes.KEY", dot.start)
        self._expect_adjacent(attributes, dot)
        self._advance()
        key = self._key(dot, adjacent=True)
        self._expect(",", "after the first argument of hasPrefix")
        prefix = self._string("as the second argument of hasPrefix")
        self._expect(")", "to close hasPrefix(")
        return HasPrefix(key, prefix)

    def _keyword(self, token: _Token, *, space_before: bool) -> None:
        """Consume AND, OR or NOT, which AIP-160 separates with whitespace."""
        if space_before and self._last_end == token.start:
            raise self._error(f"expected whitespace before {token.value}", token.start)
        self._advance()
        if self._tok.kind != "end" and self._tok.start == token.end:
            raise self._error(f"expected whitespace after {token.value}", token.end)

    def _key(self, after: _Token, *, adjacent: bool) -> str:
        token = self._tok
        if token.kind not in ("name", "string"):
            raise self._error(
                f"expected an attribute key after '{after.kind}', found {token.describe()}",
                token.start,
            )
        if adjacent:
            self._expect_adjacent(after, token)
        self._advance()
        return token.value

    def _string(self, where: str) -> str:
        token = self._tok
        if token.kind != "string":
            raise self._error(f"expected a string literal {where}", token.start)
        self._advance()
        return token.value

    def _expect(self, kind: str, where: str) -> None:
        if self._tok.kind != kind:
            raise self._error(f"expected '{kind}' {where}", self._tok.start)
        self._advance()

    def _expect_adjacent(self, left: _Token, right: _Token) -> None:
        if left.end != right.start:
            reason = f"unexpected whitespace before {right.describe()}"
            raise self._error(reason, left.end)

    def _unexpected_after_condition(self, opening: _Token | None) -> FilterSyntaxError:
        token = self._tok
        name = token.value if token.kind == "name" else ""
        if _is_lowercase_operator(name):
            reason = f"operators are uppercase: write '{name.upper()}'"
        elif opening is None and token.kind == ")":
            reason = "unmatched ')'"
        elif opening is not None and token.kind == "end":
            reason = f"missing ')' for the '(' in column {opening.start + 1}"
        else:
            expected = "AND, OR or ')'" if opening is not None else "AND or OR"
            reason = f"expected {expected}, found {token.describe()}"
        return self._error(reason, token.start)

    # Tokenizer.

    def _advance(self) -> _Token:
        token = self._tok
        self._last_end = token.end
        self._tok = self._scan(previous=token.kind)
        return token

    def _scan(self, previous: str) -> _Token:
        text = self._text
        start = self._pos
        while start < len(text) and text[start] in _WHITESPACE:
            start += 1
        if start == len(text):
            return _Token("end", "", start, start)
        char = text[start]
        if char == '"':
            value, end = self._scan_string(start)
            token = _Token("string", value, start, end)
        elif text.startswith("!=", start):
            token = _Token("!=", "!=", start, start + 2)
        elif char in _PUNCTUATION:
            token = _Token(char, char, start, start + 1)
        # A key may start with '-' (after '.' or ':'); anywhere else '-' negates.
        elif char in _NAME_CHARS and (char != "-" or previous in (".", ":")):
            end = start + 1
            while end < len(text) and text[end] in _NAME_CHARS:
                end += 1
            token = _Token("name", text[start:end], start, end)
        elif char == "-":
            token = _Token("-", "-", start, start + 1)
        else:
            hint = _CHARACTER_HINTS.get(char)
            reason = f"unexpected character {char!r}" + (f" ({hint})" if hint else "")
            raise self._error(reason, start)
        self._pos = token.end
        return token

    def _scan_string(self, start: int) -> tuple[str, int]:
        text = self._text
        chars: list[str] = []
        i = start + 1
        while i < len(text):
            char = text[i]
            if char == '"':
                return "".join(chars), i + 1
            if char == "\\":
                decoded, i = self._scan_escape(i, start)
                chars.append(decoded)
                continue
            if char < " " or "\x7f" <= char <= "\x9f":
                raise self._error("non-printing characters must be escaped in a string literal", i)
            chars.append(char)
            i += 1
        raise self._error("unterminated string literal", start)

    def _scan_escape(self, backslash: int, string_start: int) -> tuple[str, int]:
        text = self._text
        if backslash + 1 >= len(text):
            raise self._error("unterminated string literal", string_start)
        code = text[backslash + 1]
        if code in _SIMPLE_ESCAPES:
            return _SIMPLE_ESCAPES[code], backslash + 2
        if code in _HEX_ESCAPE_DIGITS:
            width = _HEX_ESCAPE_DIGITS[code]
            digits = text[backslash + 2 : backslash + 2 + width]
            if len(digits) != width or not _HEX_DIGITS.issuperset(digits):
                raise self._error(
                    f"'\\{code}' must be followed by {width} hexadecimal digits",
                    backslash,
                )
            codepoint = int(digits, 16)
            if codepoint > 0x10FFFF or 0xD800 <= codepoint <= 0xDFFF:
                reason = f"'\\{code}{digits}' is not a Unicode character"
                raise self._error(reason, backslash)
            return chr(codepoint), backslash + 2 + width
        if code in _OCTAL_DIGITS:
            digits = text[backslash + 1 : backslash + 4]
            if len(digits) != 3 or not _OCTAL_DIGITS.issuperset(digits) or code > "3":
                raise self._error("octal escapes are three digits, from '\\000' to '\\377'", backslash)
            return chr(int(digits, 8)), backslash + 4
        raise self._error(f"unknown escape sequence '\\{code}'", backslash)

    def _error(self, reason: str, position: int) -> FilterSyntaxError:
        return FilterSyntaxError(reason, self._text, position)


# --- Public entry points -----------------------------------------------------


def parse_filter(text: str) -> Filter:
    """Parse ``text``; raise FilterSyntaxError where Pub/Sub would reject it."""
    size = 0
    for position, char in enumerate(text):
        size += len(char.encode("utf-8", "surrogatepass"))
        if size > MAX_FILTER_BYTES:
            reason = f"filter is longer than {MAX_FILTER_BYTES} bytes of UTF-8"
            raise FilterSyntaxError(reason, text, position)
    if all(char in _WHITESPACE for char in text):
        return Filter(text, None)
    return Filter(text, _Parser(text).parse())


@functools.lru_cache(maxsize=256)
def _parse_cached(text: str) -> Filter:
    return parse_filter(text)


def matches(text: str, attributes: Mapping[str, str]) -> bool:
    """Whether a message with ``attributes`` passes the filter ``text``."""
    return _parse_cached(text).matches(attributes)
