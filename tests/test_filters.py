"""Tests for the local evaluator of Pub/Sub subscription filters."""

from __future__ import annotations

import copy
import dataclasses
import itertools
from collections.abc import Callable, Mapping
from types import MappingProxyType

import pytest

from buildkite_events.filters import (
    MAX_FILTER_BYTES,
    And,
    Equals,
    Expr,
    Filter,
    FilterSyntaxError,
    HasKey,
    HasPrefix,
    Not,
    NotEquals,
    Or,
    matches,
    parse_filter,
)

Attrs = dict[str, str]

# Attribute sets used by the truth tables below.
ABSENT: Attrs = {}
OTHER_KEY: Attrs = {"other": "v"}
EMPTY: Attrs = {"k": ""}
V: Attrs = {"k": "v"}
W: Attrs = {"k": "w"}
VALUE: Attrs = {"k": "value"}


# --- Filters the project uses -------------------------------------------------

FAILED_BUILDS = 'attributes.event_type = "build.finished" AND attributes.build_state = "failed"'
BUILD_EVENTS = 'hasPrefix(attributes.event_type, "build.")'
FINISHED_EVENTS = 'attributes.event_type = "build.finished" OR attributes.event_type = "job.finished"'


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        (
            FAILED_BUILDS,
            And(
                (
                    Equals("event_type", "build.finished"),
                    Equals("build_state", "failed"),
                )
            ),
        ),
        (BUILD_EVENTS, HasPrefix("event_type", "build.")),
        (
            FINISHED_EVENTS,
            Or(
                (
                    Equals("event_type", "build.finished"),
                    Equals("event_type", "job.finished"),
                )
            ),
        ),
        ("", None),
    ],
)
def test_project_filters_parse(text: str, expression: Expr | None) -> None:
    assert parse_filter(text) == Filter(text, expression)


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        (FAILED_BUILDS, {"event_type": "build.finished", "build_state": "failed"}, True),
        (FAILED_BUILDS, {"event_type": "build.finished", "build_state": "passed"}, False),
        (FAILED_BUILDS, {"event_type": "build.finished"}, False),
        (FAILED_BUILDS, {"event_type": "job.finished", "build_state": "failed"}, False),
        (FAILED_BUILDS, {}, False),
        (BUILD_EVENTS, {"event_type": "build.finished"}, True),
        (BUILD_EVENTS, {"event_type": "build.scheduled"}, True),
        (BUILD_EVENTS, {"event_type": "build."}, True),
        (BUILD_EVENTS, {"event_type": "build"}, False),
        (BUILD_EVENTS, {"event_type": "job.finished"}, False),
        (BUILD_EVENTS, {"event_type": "Build.finished"}, False),
        (BUILD_EVENTS, {"build": "build."}, False),
        (BUILD_EVENTS, {}, False),
        (FINISHED_EVENTS, {"event_type": "build.finished"}, True),
        (FINISHED_EVENTS, {"event_type": "job.finished"}, True),
        (FINISHED_EVENTS, {"event_type": "job.started"}, False),
        (FINISHED_EVENTS, {"event_type": "build.finished "}, False),
        (FINISHED_EVENTS, {}, False),
        ("", {}, True),
        ("", {"event_type": "build.finished"}, True),
    ],
)
def test_project_filters_match(text: str, attributes: Attrs, expected: bool) -> None:
    assert parse_filter(text).matches(attributes) is expected
    assert matches(text, attributes) is expected


# --- Empty filters ------------------------------------------------------------


@pytest.mark.parametrize("text", ["", " ", "   ", "\t", "\n", " \t\r\n\f\v "])
@pytest.mark.parametrize("attributes", [ABSENT, EMPTY, V, OTHER_KEY])
def test_empty_filter_matches_everything(text: str, attributes: Attrs) -> None:
    parsed = parse_filter(text)
    assert parsed.expression is None
    assert parsed.matches(attributes)
    assert matches(text, attributes)


# --- Truth tables for each condition -----------------------------------------


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        # attributes:KEY is about presence only; an empty value still counts.
        ("attributes:k", ABSENT, False),
        ("attributes:k", OTHER_KEY, False),
        ("attributes:k", EMPTY, True),
        ("attributes:k", V, True),
        ("attributes:K", V, False),
        # = requires the key and an exact, case-sensitive value.
        ('attributes.k = "v"', ABSENT, False),
        ('attributes.k = "v"', OTHER_KEY, False),
        ('attributes.k = "v"', EMPTY, False),
        ('attributes.k = "v"', V, True),
        ('attributes.k = "v"', W, False),
        ('attributes.k = "v"', VALUE, False),
        ('attributes.k = "V"', V, False),
        ('attributes.k = "v "', V, False),
        ('attributes.k = ""', ABSENT, False),
        ('attributes.k = ""', EMPTY, True),
        ('attributes.k = ""', V, False),
        # != is the negation of =, so an absent key matches.
        ('attributes.k != "v"', ABSENT, True),
        ('attributes.k != "v"', OTHER_KEY, True),
        ('attributes.k != "v"', EMPTY, True),
        ('attributes.k != "v"', V, False),
        ('attributes.k != "v"', W, True),
        ('attributes.k != ""', ABSENT, True),
        ('attributes.k != ""', EMPTY, False),
        ('attributes.k != ""', V, True),
        # hasPrefix requires the key; the empty prefix means "has the key".
        ('hasPrefix(attributes.k, "va")', ABSENT, False),
        ('hasPrefix(attributes.k, "va")', OTHER_KEY, False),
        ('hasPrefix(attributes.k, "va")', EMPTY, False),
        ('hasPrefix(attributes.k, "va")', V, False),
        ('hasPrefix(attributes.k, "va")', VALUE, True),
        ('hasPrefix(attributes.k, "va")', {"k": "va"}, True),
        ('hasPrefix(attributes.k, "va")', {"k": "Value"}, False),
        ('hasPrefix(attributes.k, "va")', {"k": "a va"}, False),
        ('hasPrefix(attributes.k, "value")', VALUE, True),
        ('hasPrefix(attributes.k, "values")', VALUE, False),
        ('hasPrefix(attributes.k, "")', ABSENT, False),
        ('hasPrefix(attributes.k, "")', EMPTY, True),
        ('hasPrefix(attributes.k, "")', V, True),
    ],
)
def test_condition_truth_table(text: str, attributes: Attrs, expected: bool) -> None:
    assert parse_filter(text).matches(attributes) is expected


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("attributes:k", HasKey("k")),
        ('attributes.k = "v"', Equals("k", "v")),
        ('attributes.k != "v"', NotEquals("k", "v")),
        ('hasPrefix(attributes.k, "v")', HasPrefix("k", "v")),
        # Whitespace is free around operators, commas and parentheses.
        ('attributes.k="v"', Equals("k", "v")),
        ('attributes.k!="v"', NotEquals("k", "v")),
        ("attributes : k", HasKey("k")),
        ('\tattributes.k\n=\r\n"v"  ', Equals("k", "v")),
        ('hasPrefix(attributes.k,"v")', HasPrefix("k", "v")),
        ('hasPrefix( attributes.k , "v" )', HasPrefix("k", "v")),
        ("( attributes:k )", HasKey("k")),
    ],
)
def test_condition_syntax(text: str, expression: Expr | None) -> None:
    assert parse_filter(text).expression == expression


# --- Keys, string literals and escapes ---------------------------------------


@pytest.mark.parametrize(
    ("text", "key"),
    [
        ("attributes:event_type", "event_type"),
        ("attributes:my-key", "my-key"),
        ("attributes:-leading-hyphen", "-leading-hyphen"),
        ("attributes:123", "123"),
        ("attributes:_", "_"),
        # Keywords and function names are ordinary keys after '.' or ':'.
        ("attributes:AND", "AND"),
        ("attributes:NOT", "NOT"),
        ("attributes:hasPrefix", "hasPrefix"),
        ("attributes:attributes", "attributes"),
        # Any other key is written as a string literal.
        ('attributes:"iana.org/language_tag"', "iana.org/language_tag"),
        ('attributes:"my key"', "my key"),
        ('attributes:"a:b"', "a:b"),
        ('attributes:"\\u307F\\u3093\\u306A"', "みんな"),
        ('attributes:"みんな"', "みんな"),
        ('attributes:""', ""),
    ],
)
def test_has_key_names(text: str, key: str) -> None:
    assert parse_filter(text).expression == HasKey(key)


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ('attributes."iana.org/language_tag" = "en"', Equals("iana.org/language_tag", "en")),
        ('attributes."a b" != "c"', NotEquals("a b", "c")),
        ('attributes.my-key = "v"', Equals("my-key", "v")),
        ('attributes.OR = "v"', Equals("OR", "v")),
        ('hasPrefix(attributes."x.y", "p")', HasPrefix("x.y", "p")),
        ('hasPrefix(attributes.x-y, "p")', HasPrefix("x-y", "p")),
    ],
)
def test_quoted_and_hyphenated_keys(text: str, expression: Expr | None) -> None:
    assert parse_filter(text).expression == expression


@pytest.mark.parametrize(
    ("literal", "value"),
    [
        ('""', ""),
        ('"plain"', "plain"),
        ('"with spaces and (parens) AND OR NOT"', "with spaces and (parens) AND OR NOT"),
        ('"single \' quote"', "single ' quote"),
        ('"say \\"hi\\""', 'say "hi"'),
        ('"back\\\\slash"', "back\\slash"),
        ('"\\a\\b\\f\\n\\r\\t\\v"', "\a\b\f\n\r\t\v"),
        ('"\\\'\\?\\`"', "'?`"),
        ('"\\x41\\X42"', "AB"),
        ('"\\x7e\\x7E"', "~~"),
        ('"\\101\\000\\377"', "A\x00\xff"),
        ('"\\u00e9\\u00E9"', "éé"),
        ('"\\u307F\\u3093\\u306A"', "みんな"),
        ('"\\U0001F600"', "\U0001f600"),
        ('"\\U0010FFFF"', "\U0010ffff"),
        ('"Zürich"', "Zürich"),
        ('"日本語"', "日本語"),
        ('"🚀 shipped"', "🚀 shipped"),
    ],
)
def test_string_literals(literal: str, value: str) -> None:
    parsed = parse_filter(f"attributes.k = {literal}")
    assert parsed.expression == Equals("k", value)
    assert parsed.matches({"k": value})


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        ('attributes.city = "Zürich"', {"city": "Zürich"}, True),
        ('attributes.city = "Zürich"', {"city": "Zurich"}, False),
        ('attributes.city = "Z\\u00fcrich"', {"city": "Zürich"}, True),
        # Values are compared code point by code point, without normalisation.
        ('attributes.city = "Z\\u00fcrich"', {"city": "Zu\u0308rich"}, False),
        ('attributes."みんな" = "日本"', {"みんな": "日本"}, True),
        ('attributes:"\\u307F\\u3093\\u306A"', {"みんな": "x"}, True),
        ('hasPrefix(attributes.msg, "🚀")', {"msg": "🚀 shipped"}, True),
        ('hasPrefix(attributes.msg, "🚀")', {"msg": "shipped 🚀"}, False),
        ('attributes.msg != "🚀"', {"msg": "🛸"}, True),
    ],
)
def test_unicode_values(text: str, attributes: Attrs, expected: bool) -> None:
    assert parse_filter(text).matches(attributes) is expected


# --- Negation -----------------------------------------------------------------

CONDITIONS = [
    "attributes:k",
    'attributes.k = "v"',
    'attributes.k != "v"',
    'hasPrefix(attributes.k, "v")',
]
ATTRIBUTE_SETS = [ABSENT, OTHER_KEY, EMPTY, V, W, VALUE]


@pytest.mark.parametrize("condition", CONDITIONS)
@pytest.mark.parametrize("negate", ["NOT {}", "-{}", "NOT ({})", "-({})", "NOT\n{}"])
@pytest.mark.parametrize("attributes", ATTRIBUTE_SETS)
def test_negation_forms(condition: str, negate: str, attributes: Attrs) -> None:
    plain = parse_filter(condition)
    negated = parse_filter(negate.format(condition))
    assert plain.expression is not None
    assert negated.expression == Not(plain.expression)
    assert negated.matches(attributes) is not plain.matches(attributes)


@pytest.mark.parametrize("attributes", ATTRIBUTE_SETS)
def test_not_equals_is_not_of_equals(attributes: Attrs) -> None:
    assert parse_filter('attributes.k != "v"').matches(attributes) is parse_filter('NOT attributes.k = "v"').matches(
        attributes
    )


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("NOT (NOT attributes:a)", Not(Not(HasKey("a")))),
        ("-(-attributes:a)", Not(Not(HasKey("a")))),
        ("NOT (-attributes:a)", Not(Not(HasKey("a")))),
        ("-(NOT attributes:a)", Not(Not(HasKey("a")))),
        ("NOT\tattributes:a", Not(HasKey("a"))),
        ("NOT\nattributes:a", Not(HasKey("a"))),
    ],
)
def test_negation_nesting(text: str, expression: Expr | None) -> None:
    assert parse_filter(text).expression == expression


# --- Precedence, mixing and parentheses --------------------------------------

A, B, C, D = HasKey("a"), HasKey("b"), HasKey("c"), HasKey("d")


@pytest.mark.parametrize(
    ("text", "expression"),
    [
        ("attributes:a AND attributes:b", And((A, B))),
        ("attributes:a OR attributes:b", Or((A, B))),
        ("attributes:a AND attributes:b AND attributes:c", And((A, B, C))),
        ("attributes:a OR attributes:b OR attributes:c OR attributes:d", Or((A, B, C, D))),
        # NOT binds tighter than AND and OR.
        ("NOT attributes:a AND attributes:b", And((Not(A), B))),
        ("attributes:a AND NOT attributes:b", And((A, Not(B)))),
        ("-attributes:a OR attributes:b", Or((Not(A), B))),
        ("NOT (attributes:a AND attributes:b)", Not(And((A, B)))),
        # Parentheses make mixing explicit.
        ("attributes:a AND (attributes:b OR attributes:c)", And((A, Or((B, C))))),
        ("(attributes:a AND attributes:b) OR attributes:c", Or((And((A, B)), C))),
        (
            "(attributes:a OR attributes:b) AND (attributes:c OR attributes:d)",
            And((Or((A, B)), Or((C, D)))),
        ),
        ("(attributes:a)\tAND\n(attributes:b)", And((A, B))),
        ("((((attributes:a))))", A),
        ("(attributes:a AND (attributes:b))", And((A, B))),
        (
            "attributes:a OR (attributes:b AND (attributes:c OR NOT attributes:d))",
            Or((A, And((B, Or((C, Not(D))))))),
        ),
    ],
)
def test_structure(text: str, expression: Expr | None) -> None:
    assert parse_filter(text).expression == expression


NESTED: list[tuple[str, Callable[[Mapping[str, str]], bool]]] = [
    (
        "attributes:a OR (attributes:b AND (attributes:c OR NOT attributes:d))",
        lambda m: "a" in m or ("b" in m and ("c" in m or "d" not in m)),
    ),
    (
        "NOT (attributes:a AND -(attributes:b OR attributes:c)) AND attributes:d",
        lambda m: not ("a" in m and not ("b" in m or "c" in m)) and "d" in m,
    ),
    (
        "(attributes:a AND attributes:b) OR (attributes:c AND attributes:d)",
        lambda m: ("a" in m and "b" in m) or ("c" in m and "d" in m),
    ),
    (
        "-attributes:a AND -attributes:b AND -attributes:c",
        lambda m: not ("a" in m or "b" in m or "c" in m),
    ),
    (
        "((attributes:a OR attributes:b) AND NOT (attributes:c OR attributes:d))",
        lambda m: ("a" in m or "b" in m) and not ("c" in m or "d" in m),
    ),
]


@pytest.mark.parametrize(("text", "oracle"), NESTED)
@pytest.mark.parametrize("keys", [set(subset) for n in range(5) for subset in itertools.combinations("abcd", n)])
def test_nested_truth_table(text: str, oracle: Callable[[Mapping[str, str]], bool], keys: set[str]) -> None:
    attributes = {key: "" for key in keys}
    assert parse_filter(text).matches(attributes) is oracle(attributes)


def test_deep_nesting_within_the_length_limit() -> None:
    depth = (MAX_FILTER_BYTES - len("attributes:a")) // 2
    text = "(" * depth + "attributes:a" + ")" * depth
    assert parse_filter(text).expression == A
    negated = "-(" * (depth // 2) + "attributes:a" + ")" * (depth // 2)
    assert parse_filter(negated).matches({"a": ""}) is (depth // 2 % 2 == 0)


# --- Google's documented examples ---------------------------------------------


@pytest.mark.parametrize(
    ("text", "attributes", "expected"),
    [
        ("attributes:name", {"name": "com"}, True),
        ("NOT attributes:name", {"name": "com"}, False),
        ('attributes.name = "com"', {"name": "com"}, True),
        ('attributes.name != "com"', {"name": "com"}, False),
        ('hasPrefix(attributes.name, "co")', {"name": "com"}, True),
        ('NOT hasPrefix(attributes.name, "co")', {"name": "net"}, True),
        ('attributes."iana.org/language_tag" = "en"', {"iana.org/language_tag": "en"}, True),
        ('attributes:"\\u307F\\u3093\\u306A"', {"みんな": ""}, True),
        (
            'attributes:"iana.org/language_tag" AND NOT attributes.name = "com"',
            {"iana.org/language_tag": "en", "name": "net"},
            True,
        ),
        (
            'attributes:"iana.org/language_tag" AND (attributes.name = "net" OR attributes.name = "org")',
            {"iana.org/language_tag": "en", "name": "org"},
            True,
        ),
        (
            'attributes.name = "com" AND -attributes:"iana.org/language_tag"',
            {"name": "com", "iana.org/language_tag": "en"},
            False,
        ),
        (
            'attributes.name = "com" AND -attributes:"iana.org/language_tag"',
            {"name": "com"},
            True,
        ),
    ],
)
def test_documented_examples(text: str, attributes: Attrs, expected: bool) -> None:
    assert parse_filter(text).matches(attributes) is expected


# --- Length limit -------------------------------------------------------------


def test_filter_of_exactly_the_limit_is_accepted() -> None:
    text = "attributes:" + "k" * (MAX_FILTER_BYTES - len("attributes:"))
    assert len(text.encode()) == MAX_FILTER_BYTES
    assert parse_filter(text).matches({"k" * (MAX_FILTER_BYTES - 11): ""})


@pytest.mark.parametrize(
    ("text", "position"),
    [
        ("attributes:" + "k" * 246, 256),
        ("attributes:" + "k" * 1000, 256),
        # Bytes, not characters: "é" is two bytes of UTF-8, "🚀" four.
        ('attributes.k = "' + "é" * 120 + '"', 136),
        ('attributes.k = "' + "🚀" * 60 + '"', 76),
        # Whitespace counts too, even though a blank filter matches everything.
        (" " * 257, 256),
    ],
)
def test_filter_over_the_limit_is_rejected(text: str, position: int) -> None:
    with pytest.raises(FilterSyntaxError, match="longer than 256 bytes") as info:
        parse_filter(text)
    assert info.value.position == position
    assert len(text[: position + 1].encode()) > MAX_FILTER_BYTES
    assert len(text[:position].encode()) <= MAX_FILTER_BYTES


# --- Invalid filters ------------------------------------------------------------

INVALID: list[tuple[str, int, str]] = [
    # Incomplete conditions.
    ("attributes", 10, "expected '.' or ':' after 'attributes'"),
    ("attributes.", 11, "expected an attribute key after '.'"),
    ("attributes:", 11, "expected an attribute key after ':'"),
    ("attributes.k", 12, "expected '=' or '!='"),
    ("attributes.k =", 14, "expected a string literal after '='"),
    ("attributes.k != ", 16, "expected a string literal after '!='"),
    ('attributes.k:"v"', 12, "expected '=' or '!='"),
    ('attributes:k = "v"', 13, "expected AND or OR"),
    # The value must be a string literal, compared with a key.
    ("attributes.k = v", 15, "expected a string literal after '='"),
    ('attributes.k == "v"', 14, "expected a string literal after '='"),
    ('"com" = attributes.name', 0, "expected attributes.KEY"),
    ("attributes.name = attributes.website", 18, "expected a string literal"),
    ('attributes.name = "com" AND ("net" OR "org")', 29, "expected attributes.KEY"),
    ('attributes.k > "v"', 13, "only ':', '=' and '!=' comparisons"),
    ('attributes.k <= "v"', 13, "only ':', '=' and '!=' comparisons"),
    ('attributes.k =~ "v"', 14, "unexpected character '~'"),
    # Whitespace inside attributes.KEY.
    ('attributes .k = "v"', 10, "unexpected whitespace before '.'"),
    ('attributes. k = "v"', 11, "unexpected whitespace before 'k'"),
    # Quoting.
    ("attributes.k = 'v'", 15, "string literals use double quotes"),
    ('attributes.`my-key` = "v"', 11, "double-quoted string literal"),
    ("attributes:\\u307F\\u3093\\u306A", 11, "only allowed inside a string literal"),
    ("attributes:みんな", 11, "unexpected character 'み'"),
    ('attributes.k = "v', 15, "unterminated string literal"),
    ('attributes.k = "v\\"', 15, "unterminated string literal"),
    ('attributes.k = "v\\', 15, "unterminated string literal"),
    ('attributes:"k', 11, "unterminated string literal"),
    ('attributes.k = "a\nb"', 17, "non-printing characters must be escaped"),
    ('attributes.k = "a\tb"', 17, "non-printing characters must be escaped"),
    ('attributes.k = "a\x7fb"', 17, "non-printing characters must be escaped"),
    # Escape sequences.
    ('attributes.k = "\\q"', 16, "unknown escape sequence '\\q'"),
    ('attributes.k = "ab\\e"', 18, "unknown escape sequence '\\e'"),
    ('attributes.k = "\\x4"', 16, "'\\x' must be followed by 2 hexadecimal digits"),
    ('attributes.k = "\\xg0"', 16, "'\\x' must be followed by 2 hexadecimal digits"),
    ('attributes.k = "\\u12"', 16, "'\\u' must be followed by 4 hexadecimal digits"),
    ('attributes.k = "\\u12G4"', 16, "'\\u' must be followed by 4 hexadecimal digits"),
    ('attributes.k = "\\U0001F60"', 16, "'\\U' must be followed by 8 hexadecimal"),
    ('attributes.k = "\\uD800"', 16, "is not a Unicode character"),
    ('attributes.k = "\\U00110000"', 16, "is not a Unicode character"),
    ('attributes.k = "\\400"', 16, "octal escapes are three digits"),
    ('attributes.k = "\\18"', 16, "octal escapes are three digits"),
    ('attributes.k = "\\7"', 16, "octal escapes are three digits"),
    # Boolean operators.
    ("attributes:a AND attributes:b OR attributes:c", 30, "AND and OR cannot be mixed"),
    ("attributes:a OR attributes:b AND attributes:c", 29, "OR and AND cannot be mixed"),
    (
        'attributes:"iana.org/language_tag" AND attributes.name = "net" OR attributes.name = "org"',
        63,
        "AND and OR cannot be mixed without parentheses",
    ),
    (
        "(attributes:a OR attributes:b) AND attributes:c OR attributes:d",
        48,
        "AND and OR cannot be mixed",
    ),
    ("(attributes:a AND attributes:b OR attributes:c)", 31, "AND and OR cannot be mixed"),
    ("attributes:a and attributes:b", 13, "operators are uppercase: write 'AND'"),
    ("attributes:a Or attributes:b", 13, "operators are uppercase: write 'OR'"),
    ("not attributes:a", 0, "operators are uppercase: write 'NOT'"),
    ("attributes:a attributes:b", 13, "expected AND or OR, found 'attributes'"),
    ("attributes:a NOT attributes:b", 13, "expected AND or OR, found 'NOT'"),
    ("attributes:a AND", 16, "found the end of the filter"),
    ("AND attributes:a", 0, "found 'AND'"),
    ("attributes:a AND AND attributes:b", 17, "found 'AND'"),
    ('attributes:k && attributes.j = "v"', 13, "use AND"),
    ("attributes:k || attributes:j", 13, "use OR"),
    # Negation.
    ("NOT", 3, "found the end of the filter"),
    ("NOT NOT attributes:a", 4, "cannot be negated again without parentheses"),
    ("NOT -attributes:a", 4, "cannot be negated again without parentheses"),
    ("--attributes:a", 1, "cannot be negated again without parentheses"),
    ("-NOT attributes:a", 1, "cannot be negated again without parentheses"),
    ("- attributes:a", 1, "'-' must be written directly before what it negates"),
    ("!attributes:a", 0, "negate with NOT or '-'"),
    ("NOTattributes:a", 0, "found 'NOTattributes'"),
    ("NOT(attributes:a)", 3, "expected whitespace after NOT"),
    ('NOT"k"', 3, "expected whitespace after NOT"),
    # AND and OR need whitespace on both sides.
    ("(attributes:a)AND (attributes:b)", 14, "expected whitespace before AND"),
    ("(attributes:a) AND(attributes:b)", 18, "expected whitespace after AND"),
    ('attributes.k = "v"OR attributes:j', 18, "expected whitespace before OR"),
    ("attributes:a OR-attributes:b", 13, "found 'OR-attributes'"),
    # Parentheses.
    ("(attributes:a", 13, "missing ')' for the '(' in column 1"),
    ("attributes:a AND ((attributes:b)", 32, "missing ')' for the '(' in column 18"),
    ("(attributes:a attributes:b)", 14, "expected AND, OR or ')'"),
    ("attributes:a)", 12, "unmatched ')'"),
    ("(attributes:a))", 14, "unmatched ')'"),
    ("()", 1, "found ')'"),
    (")", 0, "found ')'"),
    # hasPrefix.
    ("hasPrefix(attributes.k)", 22, "expected ',' after the first argument of hasPrefix"),
    ("hasPrefix(attributes.k, v)", 24, "expected a string literal as the second argument"),
    ('hasPrefix("v", attributes.k)', 10, "first argument of hasPrefix must be attributes"),
    ('hasPrefix(attributes:k, "v")', 20, "first argument of hasPrefix must be attributes"),
    ('hasPrefix(attributes.k, "v"', 27, "expected ')' to close hasPrefix("),
    ('hasPrefix(attributes.k, "v", "w")', 27, "expected ')' to close hasPrefix("),
    ('hasPrefix (attributes.k, "v")', 9, "unexpected whitespace before '('"),
    ("hasPrefix", 9, "expected '(' after 'hasPrefix'"),
    ('hasPrefix(attributes.k, "v") = "w"', 29, "expected AND or OR"),
    ('hasprefix(attributes.k, "v")', 0, "names are case-sensitive: write 'hasPrefix'"),
    ("Attributes:k", 0, "names are case-sensitive: write 'attributes'"),
    ('hasSuffix(attributes.k, "v")', 0, "found 'hasSuffix'"),
    ('attributes.k = "v" AND hasPrefix(attributes.j, "x"', 50, "expected ')'"),
]


@pytest.mark.parametrize(("text", "position", "reason"), INVALID)
def test_invalid_filters(text: str, position: int, reason: str) -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    error = info.value
    assert error.position == position, str(error)
    assert reason in error.reason, str(error)
    assert error.text == text


@pytest.mark.parametrize(("text", "position", "reason"), INVALID[:20])
def test_invalid_filters_via_matches(text: str, position: int, reason: str) -> None:
    for _ in range(2):  # failures are not cached, so each call raises again
        with pytest.raises(FilterSyntaxError) as info:
            matches(text, {})
        assert info.value.position == position


# --- The error and the Filter object ----------------------------------------------


def test_error_message_points_at_the_problem() -> None:
    text = "attributes.event_type = build.finished"
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    error = info.value
    assert isinstance(error, ValueError)
    assert error.position == 24
    assert str(error) == (f"expected a string literal after '=' at column 25\n  {text}\n  " + " " * 24 + "^")


def test_error_message_for_multi_line_filters() -> None:
    text = "attributes:a AND\n\tattributes:b OR\n\tattributes:c"
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter(text)
    assert info.value.position == text.index("OR")
    assert str(info.value) == (
        "AND and OR cannot be mixed without parentheses at line 2, column 15\n  \tattributes:b OR\n  \t             ^"
    )


def test_error_at_the_end_of_the_filter() -> None:
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter("attributes:a AND")
    assert str(info.value).endswith("  attributes:a AND\n                  ^")


def test_error_can_be_copied() -> None:
    # copy and pickle rebuild exceptions from __reduce__, which must keep the fields.
    with pytest.raises(FilterSyntaxError) as info:
        parse_filter("attributes.k = v")
    duplicate = copy.deepcopy(info.value)
    assert duplicate.reason == "expected a string literal after '='"
    assert (duplicate.text, duplicate.position) == ("attributes.k = v", 15)
    assert str(duplicate) == str(info.value)


def test_filter_is_immutable_and_hashable() -> None:
    parsed = parse_filter(FAILED_BUILDS)
    with pytest.raises(dataclasses.FrozenInstanceError):
        parsed.text = ""  # type: ignore[misc]
    assert parsed == parse_filter(FAILED_BUILDS)
    assert hash(parsed) == hash(parse_filter(FAILED_BUILDS))
    assert str(parsed) == FAILED_BUILDS
    assert parsed.text == FAILED_BUILDS


def test_matches_accepts_any_mapping() -> None:
    attributes = MappingProxyType({"event_type": "build.finished", "build_state": "failed"})
    assert matches(FAILED_BUILDS, attributes)
    assert parse_filter(FAILED_BUILDS).matches(attributes)


@pytest.mark.parametrize("text", [FAILED_BUILDS, BUILD_EVENTS, FINISHED_EVENTS, ""])
@pytest.mark.parametrize("event_type", ["build.finished", "job.finished", "ping"])
def test_matches_agrees_with_parse_filter(text: str, event_type: str) -> None:
    attributes = {"event_type": event_type, "build_state": "failed"}
    for _ in range(2):  # the second call is answered from the cache
        assert matches(text, attributes) is parse_filter(text).matches(attributes)
