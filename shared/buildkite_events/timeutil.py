"""Null-safe timestamps: Buildkite sends ISO-8601 UTC, nulls, and (via mcncl/buildkite-pubsub)
Go's zero time for "no value"."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

_ZERO_YEAR = 1  # Go's time.Time{} marshals as 0001-01-01T00:00:00Z


def parse_time(value: Any) -> datetime | None:
    """Return an aware UTC datetime, or None for null, zero time, or anything unparseable."""
    if not isinstance(value, str) or not value or len(value) > 64:
        return None
    text = value.strip()
    if text.endswith(" UTC"):  # the docs' "2013-09-03 13:24:38 UTC" style
        text = text[:-4] + "+00:00"
    try:
        parsed = datetime.fromisoformat(text)
        if parsed.tzinfo is None:
            parsed = parsed.replace(tzinfo=UTC)
        parsed = parsed.astimezone(UTC)
    except (ValueError, OverflowError):  # OverflowError: an offset pushing past year 1 or 9999
        return None
    return None if parsed.year <= _ZERO_YEAR else parsed


def isoformat(value: datetime | None) -> str | None:
    """Render as Buildkite does: UTC with milliseconds and a trailing Z."""
    if value is None:
        return None
    return value.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def seconds_between(start: datetime | None, end: datetime | None) -> float | None:
    if start is None or end is None:
        return None
    return round((end - start).total_seconds(), 3)


def format_duration(seconds: float | None) -> str | None:
    """3725.4 → "1h2m5s"; None stays None."""
    if seconds is None or seconds < 0:
        return None
    whole = int(seconds)
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    if hours:
        return f"{hours}h{minutes}m{secs}s"
    if minutes:
        return f"{minutes}m{secs}s"
    return f"{secs}s"
