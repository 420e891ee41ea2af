"""One trace per event: W3C trace context in, on the message, on every log line; spans when exported.

The ingress continues the caller's trace (``traceparent``, else ``X-Cloud-Trace-Context``) or
starts one, and puts it on the message as ``googclient_traceparent``: the attribute under which
Google's Pub/Sub client libraries inject and extract the W3C ``traceparent`` in their
OpenTelemetry instrumentation. Each Pub/Sub function continues the trace its message carries,
else its push request's. While a span is open, every log line carries
``logging.googleapis.com/trace`` and ``spanId`` (and ``trace_sampled`` when sampled), so Cloud
Logging shows the ingress's and every function's lines for one event together.

``TRACE_EXPORTER`` says where spans go: ``none`` (the default: ids for the logs, nothing
imported), ``gcp`` (Cloud Trace), ``otlp`` (OTLP over HTTP, set up by the standard
``OTEL_EXPORTER_OTLP_*`` variables) or ``file`` (one JSON line per span appended to
``TRACE_FILE``, for the local stack). OpenTelemetry is imported only to export. Tracing never
fails a request: an exporter that cannot be set up is reported once and left off.

    with tracing.start("ingress", tracing.from_headers(request.headers), kind="server"):
        with tracing.span("verify"):
            ...
"""

from __future__ import annotations

import logging
import os
import random
import re
import threading
from collections.abc import Mapping
from contextvars import ContextVar, Token
from typing import Any, NamedTuple

from .log import log, redact, trace_fields

TRACEPARENT_ATTRIBUTE = "googclient_traceparent"
EXPORTERS = ("none", "gcp", "otlp", "file")
TRACE_FIELD = "logging.googleapis.com/trace"
SPAN_FIELD = "logging.googleapis.com/spanId"
SAMPLED_FIELD = "logging.googleapis.com/trace_sampled"
FLUSH_MILLIS = 2000  # at the end of a request: serverless CPU may stop once it has answered
MAX_HEADER_LENGTH = 256  # a longer value is no trace context: ignored, never parsed further

# version-traceid-parentid-flags; a later version may append "-..." (W3C Trace Context §3.2).
_TRACEPARENT = re.compile(r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-[ -~]*)?", re.ASCII)
# TRACE_ID/SPAN_ID;o=OPTIONS, the span id in decimal.
_CLOUD_TRACE = re.compile(r"([0-9a-fA-F]{32})/([0-9]{1,20})(?:;o=([0-9]{1,2}))?", re.ASCII)
_ZERO_TRACE, _ZERO_SPAN = "0" * 32, "0" * 16


class TraceContext(NamedTuple):
    """A position in a trace: lower-case hex ids, as W3C ``traceparent`` writes them."""

    trace_id: str  # 32 hex digits, not all zero
    span_id: str  # 16 hex digits, not all zero
    sampled: bool = False

    @property
    def traceparent(self) -> str:
        return f"00-{self.trace_id}-{self.span_id}-{'01' if self.sampled else '00'}"


def parse_traceparent(value: object) -> TraceContext | None:
    """A W3C ``traceparent`` value, or None for anything invalid (which then starts a new trace)."""
    if (match := _match(_TRACEPARENT, value)) is None:
        return None
    version, trace_id, span_id, flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest) or trace_id == _ZERO_TRACE or span_id == _ZERO_SPAN:
        return None
    return TraceContext(trace_id, span_id, bool(int(flags, 16) & 1))


def parse_cloud_trace_context(value: object) -> TraceContext | None:
    """Google's ``X-Cloud-Trace-Context: TRACE_ID/SPAN_ID;o=1``, or None for anything invalid."""
    if (match := _match(_CLOUD_TRACE, value)) is None:
        return None
    trace_id, span, options = match.group(1).lower(), int(match.group(2)), match.group(3)
    if trace_id == _ZERO_TRACE or not 0 < span < 2**64:
        return None
    return TraceContext(trace_id, f"{span:016x}", options is not None and int(options) & 1 == 1)


def _match(pattern: re.Pattern[str], value: object) -> re.Match[str] | None:
    if not isinstance(value, str) or len(value) > MAX_HEADER_LENGTH:
        return None
    return pattern.fullmatch(value.strip())


def from_headers(headers: Any) -> TraceContext | None:
    """The caller's trace: ``traceparent`` first (the standard), else ``X-Cloud-Trace-Context``."""
    if headers is None:
        return None
    return parse_traceparent(headers.get("traceparent")) or parse_cloud_trace_context(
        headers.get("X-Cloud-Trace-Context")
    )


def from_attributes(attributes: Mapping[str, str] | None) -> TraceContext | None:
    """The trace a Pub/Sub message carries, as Google's client libraries put it there."""
    return parse_traceparent(attributes.get(TRACEPARENT_ATTRIBUTE)) if attributes else None


# --- spans -----------------------------------------------------------------------------------

_current: ContextVar[Span | None] = ContextVar("buildkite_fanout_span", default=None)
_NO_CONTEXT = TraceContext(_ZERO_TRACE, _ZERO_SPAN)
AttributeValue = str | int | float | bool


class Span:
    """An open span. Made by ``start`` (a request's or delivery's first span, whose parent is
    remote or none) and ``span`` (a child of the current one); used as a context manager."""

    __slots__ = ("_log", "_otel", "_parent", "_root", "_token", "_trace_field", "context", "kind", "name")

    def __init__(self, name: str, kind: str, *, root: bool, parent: TraceContext | None, project: str | None) -> None:
        self.name, self.kind = name, kind
        self._root, self._parent = root, parent
        self._trace_field = project  # until entry: the project; then what Cloud Logging reads as the trace
        self._otel: Any = None
        self._token: Token[Span | None] | None = None
        self._log: Token[Mapping[str, Any]]
        self.context = _NO_CONTEXT  # set on entry

    def __enter__(self) -> Span:
        outer = None if self._root else _current.get()
        if outer is None:  # no trace yet: this span starts one
            self._root = True
        if outer._otel is not None if outer is not None else _exporting(self.name):
            assert _State.otel is not None
            self._otel = _State.otel.begin(self.name, self.kind, self._parent, outer._otel if outer else None)
            ids = self._otel.get_span_context()
            self.context = TraceContext(f"{ids.trace_id:032x}", f"{ids.span_id:016x}", ids.trace_flags.sampled)
        elif (base := outer.context if outer is not None else self._parent) is not None:
            self.context = TraceContext(base.trace_id, f"{random.getrandbits(64) or 1:016x}", base.sampled)
        else:  # ids as OpenTelemetry's own: random, not secret, never all zero
            self.context = TraceContext(f"{random.getrandbits(128) or 1:032x}", f"{random.getrandbits(64) or 1:016x}")
        if outer is not None and outer.context.trace_id == self.context.trace_id:
            self._trace_field = outer._trace_field  # computed once per trace
        else:
            project = self._trace_field or os.environ.get("GOOGLE_CLOUD_PROJECT")
            trace_id = self.context.trace_id
            self._trace_field = f"projects/{project}/traces/{trace_id}" if project else trace_id
        self._token = _current.set(self)
        self._log = trace_fields.set(self.log_fields())
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: object) -> None:
        if self._token is not None:
            trace_fields.reset(self._log)
            _current.reset(self._token)
        if self._otel is None:
            return
        if exc is not None:
            self.fail(f"{type(exc).__name__}: {exc}")
        self._otel.end()
        if self._root and _State.otel is not None:
            _State.otel.flush()

    def log_fields(self) -> dict[str, Any]:
        """What Cloud Logging reads to put a line in this span's trace."""
        if self.context.sampled:
            return {TRACE_FIELD: self._trace_field, SPAN_FIELD: self.context.span_id, SAMPLED_FIELD: True}
        return {TRACE_FIELD: self._trace_field, SPAN_FIELD: self.context.span_id}

    def set(self, key: str, value: AttributeValue | None) -> None:
        """A span attribute (exported spans only; None is left out)."""
        if self._otel is not None and value is not None:
            self._otel.set_attribute(key, value)

    def fail(self, description: str) -> None:
        """Mark the span failed; the description is redacted like a log line."""
        if self._otel is not None:
            from opentelemetry.trace import Status, StatusCode

            self._otel.set_status(Status(StatusCode.ERROR, redact(description)[:500]))


def start(name: str, parent: TraceContext | None, *, kind: str = "server", project: str | None = None) -> Span:
    """The first span of a request or delivery: a child of ``parent``, or a new trace without one.
    ``project`` qualifies the trace for Cloud Logging (default: ``GOOGLE_CLOUD_PROJECT``)."""
    return Span(name, kind, root=True, parent=parent, project=project)


def span(name: str, *, kind: str = "internal") -> Span:
    """A child of the current span (a new trace when there is none)."""
    return Span(name, kind, root=False, parent=None, project=None)


def current() -> TraceContext | None:
    open_span = _current.get()
    return open_span.context if open_span else None


# --- export (OpenTelemetry, imported only here and only when TRACE_EXPORTER asks for it) -----


class _State:
    settings: tuple[str, str] = ("none", "")
    otel: _Otel | None = None  # while settings name an exporter that could be set up
    lock = threading.Lock()  # the first requests of an instance may arrive together


def _exporting(service: str) -> bool:
    """Whether spans are exported; (re)configured when TRACE_EXPORTER or TRACE_FILE changed."""
    exporter = os.environ.get("TRACE_EXPORTER")
    if exporter is None and _State.otel is None and _State.settings[0] == "none":
        return False  # the default, checked on every request: one lookup
    exporter = (exporter or "none").strip().lower() or "none"
    settings = (exporter, os.environ.get("TRACE_FILE", "") if exporter == "file" else "")
    if settings != _State.settings:
        with _State.lock:
            if settings != _State.settings:
                if _State.otel is not None:
                    _State.otel.shutdown()
                    _State.otel = None
                if settings[0] != "none":
                    _State.otel = _setup(*settings, service=os.environ.get("K_SERVICE") or service)
                _State.settings = settings
    return _State.otel is not None


def _setup(exporter: str, path: str, *, service: str) -> _Otel | None:
    try:
        if exporter not in EXPORTERS:
            raise ValueError(f"it must be one of {', '.join(EXPORTERS)}")
        return _Otel(exporter, path, service)
    except Exception as err:  # a missing package, no credentials, a bad value: never fail a request
        reason = f"{type(err).__name__}: {str(err)[:300]}"
        log(logging.ERROR, f"tracing is off: TRACE_EXPORTER={exporter[:20]!r} could not be set up: {reason}")
        return None


class _Otel:
    """A tracer provider of its own (the global one is left to the application) with one exporter."""

    def __init__(self, exporter: str, path: str, service: str) -> None:
        from opentelemetry.sdk.resources import Resource
        from opentelemetry.sdk.trace import TracerProvider
        from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
        from opentelemetry.sdk.trace.sampling import ALWAYS_ON

        # Every event is worth a trace (a few per build), whatever a proxy in front sampled;
        # OTEL_TRACES_SAMPLER, when set, decides instead.
        sampler = None if os.environ.get("OTEL_TRACES_SAMPLER") else ALWAYS_ON
        self.provider = TracerProvider(sampler=sampler, resource=Resource.create({"service.name": service}))
        if exporter == "file":
            self.provider.add_span_processor(SimpleSpanProcessor(_file_exporter(path)))
        else:
            self.provider.add_span_processor(BatchSpanProcessor(_network_exporter(exporter)))
        self.tracer = self.provider.get_tracer("buildkite_events")

    def begin(self, name: str, kind: str, remote: TraceContext | None, local: Any) -> Any:
        from opentelemetry import trace
        from opentelemetry.context import Context

        if local is not None:
            context = trace.set_span_in_context(local)
        elif remote is not None:
            flags = trace.TraceFlags(trace.TraceFlags.SAMPLED if remote.sampled else trace.TraceFlags.DEFAULT)
            parent = trace.SpanContext(int(remote.trace_id, 16), int(remote.span_id, 16), True, flags)
            context = trace.set_span_in_context(trace.NonRecordingSpan(parent))
        else:
            context = Context()  # a new trace, whatever OpenTelemetry's own current span is
        return self.tracer.start_span(
            name,
            context=context,
            kind=trace.SpanKind[kind.upper()],
            record_exception=False,  # exception text may hold what logs redact: Span.fail records it redacted
            set_status_on_exception=False,
        )

    def flush(self) -> None:
        self.provider.force_flush(FLUSH_MILLIS)

    def shutdown(self) -> None:
        self.provider.shutdown()


def _file_exporter(path: str) -> Any:
    """OpenTelemetry's console exporter, one compact JSON line per span, appended to ``path``."""
    from opentelemetry.sdk.trace.export import ConsoleSpanExporter

    class JsonLines(ConsoleSpanExporter):
        def shutdown(self) -> None:
            self.out.close()

    if not path:
        raise ValueError("TRACE_EXPORTER=file needs TRACE_FILE, the file to append spans to")
    out = open(path, "a", encoding="utf-8")  # noqa: SIM115 - the exporter owns it and closes it at shutdown
    return JsonLines(out=out, formatter=lambda s: s.to_json(indent=None) + "\n")


def _network_exporter(exporter: str) -> Any:
    if exporter == "gcp":  # pip install buildkite-events[trace-gcp]; the account needs roles/cloudtrace.agent
        from opentelemetry.exporter.cloud_trace import CloudTraceSpanExporter

        project = os.environ.get("GOOGLE_CLOUD_PROJECT") or None  # None: the credentials' project
        return CloudTraceSpanExporter(project_id=project)  # type: ignore[no-untyped-call]
    # pip install buildkite-events[trace-otlp]; endpoint, headers: OTEL_EXPORTER_OTLP_TRACES_* or OTEL_EXPORTER_OTLP_*
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    return OTLPSpanExporter()
