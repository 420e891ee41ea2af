"""``make demo``'s timelines: per webhook, received → published → each function's outcome.

Every function on the local stack exports its spans to one file (``TRACE_EXPORTER=file``,
``trace_env``): one JSON line per span, as OpenTelemetry's console exporter writes it. A
webhook is one trace: the ingress's span (received), its publish span (published), and
under that one delivery span per function and attempt, carrying the outcome it logged.
"""

from __future__ import annotations

import contextlib
import json
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

INGRESS = "ingress"
QUIET_OUTCOMES = frozenset({"filtered"})  # a manifest filter said no: named on one line, not timed


def trace_env(path: Path) -> dict[str, str]:
    """What makes every function of the local stack append its spans to ``path``."""
    return {"TRACE_EXPORTER": "file", "TRACE_FILE": str(path)}


@dataclass(frozen=True)
class Span:
    trace_id: str
    span_id: str
    parent_id: str | None
    name: str
    service: str
    start: float  # seconds since the epoch
    end: float
    attributes: dict[str, Any]
    failed: bool

    @classmethod
    def from_json(cls, raw: dict[str, Any]) -> Span:
        context, parent = raw["context"], raw.get("parent_id")
        return cls(
            trace_id=context["trace_id"].removeprefix("0x"),
            span_id=context["span_id"].removeprefix("0x"),
            parent_id=parent.removeprefix("0x") if parent else None,
            name=raw["name"],
            service=raw.get("resource", {}).get("attributes", {}).get("service.name", ""),
            start=_seconds(raw["start_time"]),
            end=_seconds(raw["end_time"]),
            attributes=dict(raw.get("attributes") or {}),
            failed=raw.get("status", {}).get("status_code") == "ERROR",
        )


def _seconds(stamp: str) -> float:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%f%z").timestamp()


def read_spans(path: Path) -> list[Span]:
    """Every complete span in the file (a line still being written is skipped)."""
    spans = []
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            with contextlib.suppress(ValueError, KeyError, TypeError):
                spans.append(Span.from_json(json.loads(line)))
    return spans


@dataclass
class Timeline:
    """One webhook: the ingress's spans and every function's delivery spans in its trace."""

    received: Span
    publish: Span | None = None
    deliveries: list[Span] = field(default_factory=list)

    @property
    def trace_id(self) -> str:
        return self.received.trace_id

    def rows(self) -> list[tuple[float, str, str]]:
        """(ms after received, what, detail), in time order."""
        zero = self.received.start
        status = self.received.attributes.get("http.response.status_code")
        rows = [(0.0, "received", f"by the ingress, answered {status}")]
        if self.publish is not None:
            message = self.publish.attributes.get("messaging.message.id")
            rows.append(((self.publish.end - zero) * 1000, "published", f"message {message}" if message else "failed"))
        for span in self.deliveries:
            outcome = str(span.attributes.get("buildkite.outcome", "?"))
            if outcome not in QUIET_OUTCOMES:
                took = (span.end - span.start) * 1000
                rows.append(((span.end - zero) * 1000, span.service, f"{outcome:<10} ({took:.1f} ms in the function)"))
        return sorted(rows, key=lambda row: row[0])

    def filtered(self) -> list[str]:
        return sorted({s.service for s in self.deliveries if s.attributes.get("buildkite.outcome") in QUIET_OUTCOMES})

    def title(self) -> str:
        attributes = {**self.received.attributes, **(self.publish.attributes if self.publish else {})}
        what = [str(attributes.get("buildkite.event_type", "(not published)"))]
        if "buildkite.pipeline" in attributes:
            what.append(str(attributes["buildkite.pipeline"]))
        if "buildkite.build_number" in attributes:
            what.append(f"#{attributes['buildkite.build_number']}")
        return " ".join(what)


def timelines(spans: Iterable[Span]) -> tuple[list[Timeline], list[Span]]:
    """The webhooks' timelines in the order they came in, and the deliveries outside any webhook's
    trace (messages another publisher put on the topic: each keeps its push request's trace)."""
    by_trace: dict[str, list[Span]] = defaultdict(list)
    for span in spans:
        by_trace[span.trace_id].append(span)
    found, others = [], []
    for trace in by_trace.values():
        roots = [s for s in trace if s.service == INGRESS and s.name == INGRESS]
        deliveries = sorted((s for s in trace if s.service != INGRESS and s.name == s.service), key=lambda s: s.end)
        if not roots:
            others += deliveries
            continue
        publish = next((s for s in trace if s.service == INGRESS and s.name == "publish"), None)
        found.append(Timeline(roots[0], publish, deliveries))
    return sorted(found, key=lambda t: t.received.start), others


def report(path: Path) -> str:
    """The timelines as ``make demo`` prints them."""
    found, others = timelines(read_spans(path))
    out = ["", "Timelines: one trace per webhook (spans in " + _shown(path) + ")"]
    for timeline in found:
        out += ["", f"{timeline.title():<48} trace {timeline.trace_id}"]
        out += [f"  {ms:8.1f} ms  {what:<17} {detail}" for ms, what, detail in timeline.rows()]
        if filtered := timeline.filtered():
            out.append(f"  {'':11}  filtered out by {', '.join(filtered)}")
    if others:
        traces = len({s.trace_id for s in others})
        out += ["", f"{len(others)} deliveries in {traces} traces of their own: messages put on the topic without"]
        out.append("googclient_traceparent (another publisher's) are traced in their push request's trace, if any")
    return "\n".join(out) + "\n"


def _shown(path: Path) -> str:
    with contextlib.suppress(ValueError):
        return str(path.relative_to(Path.cwd()))
    return str(path)


if __name__ == "__main__":
    import sys

    sys.stdout.write(report(Path(sys.argv[1]) if len(sys.argv) > 1 else Path(".stack/traces.jsonl")))
