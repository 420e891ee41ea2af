"""Structured JSON logs, one line per record, in the shape Cloud Logging understands.

``severity`` and ``message`` are Cloud Logging's special fields; ``logging.googleapis.com/trace``
ties the line to the request's trace. Context (function, event identifiers) is set per
delivery with ``log_context`` and added to every line. Known secret values are redacted.
"""

from __future__ import annotations

import contextvars
import json
import logging
import os
import sys
import time
from collections.abc import Iterable, Mapping
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit

_context: contextvars.ContextVar[Mapping[str, Any]] = contextvars.ContextVar(
    "buildkite_fanout_log", default=MappingProxyType({})
)
_secrets: list[str] = []
REDACTED = "[REDACTED]"
_encode = json.JSONEncoder(ensure_ascii=False, default=str).encode
_encode_ascii = json.JSONEncoder(default=str).encode  # built once: json.dumps(**opts) builds one per call

logger = logging.getLogger("buildkite_fanout")


def _line(severity: str, message: str, created: float, fields: Mapping[str, Any] | None) -> str:
    entry: dict[str, Any] = {
        "severity": severity,
        "message": message,
        "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(created)) + f".{int(created % 1 * 1000):03d}Z",
    }
    entry.update(_context.get())
    if fields:
        entry.update(fields)
    line = _encode(entry)
    if not line.isascii():
        try:
            line.encode("utf-8")
        except UnicodeEncodeError:  # a lone surrogate from an event: keep it as a \uXXXX escape
            line = _encode_ascii(entry)
    return redact(line) if _secrets else line


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
    """Remember secret values (and, for URLs, their path and query) to scrub from output."""
    for value in values:
        candidates = [value]
        if value.startswith(("http://", "https://")):
            parts = urlsplit(value)
            candidates.append(parts.path + ("?" + parts.query if parts.query else ""))
            if parts.query:
                candidates.append(parts.query)
        # Lines are redacted after JSON encoding: match the escaped form too (PEM keys have newlines).
        candidates += [json.dumps(c, ensure_ascii=False)[1:-1] for c in candidates]
        candidates += [json.dumps(c)[1:-1] for c in candidates]
        for candidate in candidates:
            if len(candidate) >= 6 and candidate not in _secrets:
                _secrets.append(candidate)
    _secrets.sort(key=len, reverse=True)  # longest first, so a URL goes before its path


def redact(text: str) -> str:
    for secret in _secrets:
        if secret in text:
            text = text.replace(secret, REDACTED)
    return text


def trace_field(headers: Any, project: str | None) -> dict[str, str]:
    """``logging.googleapis.com/trace`` from X-Cloud-Trace-Context or W3C traceparent."""
    if headers is None:
        return {}
    trace_id = ""
    legacy = headers.get("X-Cloud-Trace-Context") or ""
    if legacy:
        trace_id = legacy.split("/", 1)[0]
    else:
        parent = (headers.get("traceparent") or "").split("-")
        if len(parent) == 4:
            trace_id = parent[1]
    if not trace_id or not trace_id.isalnum() or len(trace_id) > 64:
        return {}
    return {"logging.googleapis.com/trace": f"projects/{project}/traces/{trace_id}" if project else trace_id}


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
