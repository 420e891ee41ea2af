"""Query results as aligned text tables, for ``make report`` and ``make demo``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import Any

from buildkite_events.timeutil import format_duration

# Right-aligned: everything but text, days and times.
_LEFT = frozenset({"text", "day", "time", "band"})


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str = "text"  # text, count, seconds, rate, change, hours, time, day, flag, band, number


def format_value(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "seconds":
        return short_duration(float(value))
    if kind == "rate":
        return f"{float(value) * 100:.1f}%"
    if kind == "change":
        return f"{float(value) * 100:+.0f}%"
    if kind in ("hours", "number"):
        return f"{float(value):.1f}"
    if kind == "time" and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if kind == "day" and isinstance(value, date):
        return value.isoformat()
    if kind == "flag":
        return "yes" if value else "no"
    return str(value)


def short_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    return format_duration(round(seconds)) or "-"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> list[str]:
    """Aligned text columns; numbers right-aligned."""
    cells = [[format_value(row.get(c.key), c.kind) for c in columns] for row in rows]
    widths = [max([len(c.title), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [v.ljust(w) if c.kind in _LEFT else v.rjust(w) for v, w, c in zip(values, widths, columns, strict=True)]
        return "  ".join(parts).rstrip()

    out = [line([c.title for c in columns]), line(["-" * w for w in widths])]
    return out + ([line(r) for r in cells] or ["(no rows)"])
