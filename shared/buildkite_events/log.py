"""Structured JSON logs, one line per record, in the shape Cloud Logging understands.

``severity`` and ``message`` are Cloud Logging's special fields; the open ``tracing`` span
puts the line in its trace. Context (function, event identifiers) is set per delivery with
``log_context`` and added to every line. Known secret values are redacted.
"""

from __future__ import annotations

import base64
import contextvars
import functools
import json
import logging
import os
import re
import sys
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import quote, quote_plus, unquote, unquote_plus, urlsplit

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "buildkite_fanout_log", default=MappingProxyType({})
)
# The open span's trace fields (set by ``tracing``), kept apart from the context: one set per span.
trace_fields: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "buildkite_fanout_trace", default=MappingProxyType({})
)
_secrets: list[str] = []
_base64_secrets: list[str] = []  # see register_secrets
REDACTED = "[REDACTED]"
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
_encode_ascii = json.JSONEncoder(default=str).encode  # built once: json.dumps(**opts) builds one per call

logger = logging.getLogger("buildkite_fanout")


def _line(severity: str, message: str, created: float, fields: Mapping[str, Any] | None) -> str:
    entry = {
        "severity": severity,
        "message": message,
        "time": f"{_second(int(created))}.{int(created % 1 * 1000):03d}Z",
        **trace_fields.get(),
        **_context.get(),
        **(fields or _NONE),
    }
    line = _encode(entry)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from an event: keep it as a \uXXXX escape
            line = _encode_ascii(entry)
    return redact(line) if _secrets or _base64_secrets else line


_NONE: Mapping[str, Any] = MappingProxyType({})


@functools.lru_cache(maxsize=4)
def _second(seconds: int) -> str:
    """RFC 3339 up to the second (the lines of one second share it)."""
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


class JsonFormatter(logging.Formatter):
    """For records logged through the standard ``logging`` API on our logger."""

    def format(self, record: logging.LogRecord) -> str:
        fields = dict(getattr(record, "fields", None) or {})
        fields["logger"] = record.name
        if record.exc_info and record.exc_info[1] is not None:
            err = record.exc_info[1]
            fields["error"] = f"{type(err).__name__}: {err}"
        severity = "WARNING" if record.levelname == "WARN" else record.levelname
        return _line(severity, record.getMessage(), record.created, fields)


class _StdoutHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Writes to whatever ``sys.stdout`` is now (it may be swapped after set-up)."""

    def emit(self, record: logging.LogRecord) -> None:
        self.stream = sys.stdout
        super().emit(record)


def configure_logging() -> None:
    """Idempotent: one JSON handler on our logger, nothing else touched."""
    if logger.handlers:
        return
    handler = _StdoutHandler()
    handler.setFormatter(JsonFormatter())
    logger.addHandler(handler)
    level = logging.getLevelName(os.environ.get("LOG_LEVEL", "INFO").strip().upper())
    logger.setLevel(level if isinstance(level, int) else logging.INFO)  # an unknown name: keep INFO
    logger.propagate = False


def register_secrets(values: Iterable[str]) -> None:
    """Remember secret values to scrub from output, in every form they may take there.

    Each value as is, URL-encoded and percent-decoded; for URLs also their path and query,
    and on its own each query value that is a credential (a Teams Workflows URL's ``sig``);
    all of those JSON-escaped (lines are redacted after encoding). Base64 (and with it HTTP
    Basic auth, whatever the user name) is matched by the part of the encoding that depends
    on the secret alone, at each of the three byte alignments; the whole base64 word goes.
    """
    for value in values:
        value = value.strip()
        candidates = {value}
        if value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            candidates.add(parts.path + ("?" + parts.query if parts.query else ""))
            if parts.query:
                candidates.add(parts.query)
            for field in parts.query.split("&"):
                name, _, credential = field.partition("=")
                if name.lower() in _CREDENTIAL_PARAMS:
                    candidates.add(credential)
        for candidate in list(candidates):
            candidates |= {quote(candidate, safe=""), quote(candidate), quote_plus(candidate)}
            candidates |= {unquote(candidate), unquote_plus(candidate)}
        for candidate in list(candidates):  # lines are redacted after JSON encoding (PEM keys have newlines)
            candidates.add(json.dumps(candidate, ensure_ascii=False)[1:-1])
            candidates.add(json.dumps(candidate)[1:-1])
        for candidate in candidates:
            if len(candidate) >= 6 and candidate not in _secrets:
                _secrets.append(candidate)
        for core in _base64_cores(value.encode("utf-8", "surrogatepass")):
            if core not in _base64_secrets:
                _base64_secrets.append(core)
    _secrets.sort(key=len, reverse=True)  # longest first, so a URL goes before its path


_CREDENTIAL_PARAMS = frozenset({"sig", "signature", "code", "key", "token", "access_token", "api_key", "apikey"})
_MIN_BASE64_CORE = 8  # shorter runs could match innocent text
_BASE64_WORD = "[A-Za-z0-9+/_-]*"


def _base64_cores(raw: bytes) -> list[str]:
    """The base64 characters that depend on ``raw`` alone, for each alignment it may start at."""
    cores = []
    for shift in range(3):
        encoded = base64.b64encode(b"\0" * shift + raw).decode("ascii")
        core = encoded[-(-8 * shift // 6) : 8 * (shift + len(raw)) // 6]
        if len(core) >= _MIN_BASE64_CORE:
            cores += [core, core.translate(_URLSAFE)]
    return cores


_URLSAFE = str.maketrans("+/", "-_")


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    for core in _base64_secrets:
        if core in text:
            text = re.sub(_BASE64_WORD + re.escape(core) + _BASE64_WORD + "=*", REDACTED, text)
    return text


class log_context:
    """``with log_context(**fields):`` adds ``fields`` to every log line written inside the block.
    A class rather than @contextmanager: it runs for every delivery and costs a third."""

    __slots__ = ("fields", "token")

    def __init__(self, **fields: Any) -> None:
        self.fields = {k: v for k, v in fields.items() if v is not None}

    def __enter__(self) -> None:
        self.token = _context.set({**_context.get(), **self.fields})

    def __exit__(self, *exc: object) -> None:
        _context.reset(self.token)


def log(level: int, message: str, **fields: Any) -> None:
    """One JSON line on stdout. Written directly: it runs for every delivery, and a
    ``logging.LogRecord`` round trip costs more than the rest of the plumbing."""
    if level < (logger.level or logging.INFO):
        return
    sys.stdout.write(_line(logging.getLevelName(level), message, time.time(), fields) + "\n")
    sys.stdout.flush()  # Cloud Logging reads lines as they come; stdout is block-buffered in a pipe
