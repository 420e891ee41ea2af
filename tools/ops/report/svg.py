"""Small inline SVG charts for the report page: no scripts, no fonts to fetch, scale to any width."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from html import escape

WIDTH, HEIGHT = 640, 200
_LEFT, _RIGHT, _TOP, _BOTTOM = 52, 12, 12, 28


@dataclass(frozen=True)
class Series:
    label: str
    values: Sequence[float | None]  # one per x label; None leaves a gap
    colour: str
    dashed: bool = False


def nice_ticks(high: float, count: int = 4) -> list[float]:
    """Round tick values from 0 to at least ``high``."""
    if high <= 0:
        return [0.0, 1.0]
    raw = high / count
    magnitude = 10 ** math.floor(math.log10(raw))
    step = next(m * magnitude for m in (1, 2, 2.5, 5, 10) if m * magnitude >= raw)
    return [step * i for i in range(math.ceil(high / step) + 1)]


def _frame(title: str, ticks: Sequence[float], y: Callable[[float], float], label: Callable[[float], str]) -> list[str]:
    parts = [
        f'<svg viewBox="0 0 {WIDTH} {HEIGHT}" role="img" aria-label="{escape(title)}" class="chart">',
        f"<title>{escape(title)}</title>",
    ]
    for tick in ticks:
        parts.append(
            f'<line x1="{_LEFT}" x2="{WIDTH - _RIGHT}" y1="{y(tick):.1f}" y2="{y(tick):.1f}" class="grid"/>'
            f'<text x="{_LEFT - 6}" y="{y(tick) + 4:.1f}" text-anchor="end">{escape(label(tick))}</text>'
        )
    return parts


def _x_labels(labels: Sequence[str], x: Callable[[float], float]) -> list[str]:
    every = max(1, math.ceil(len(labels) / 7))  # about seven labels fit a phone
    return [
        f'<text x="{x(i):.1f}" y="{HEIGHT - 8}" text-anchor="middle">{escape(text)}</text>'
        for i, text in enumerate(labels)
        if i % every == 0 or i == len(labels) - 1
    ]


def line_chart(title: str, labels: Sequence[str], series: Sequence[Series], label: Callable[[float], str]) -> str:
    """Lines over categorical x labels (days), y from 0."""
    values = [v for s in series for v in s.values if v is not None]
    ticks = nice_ticks(max(values, default=0.0))
    top = ticks[-1] or 1.0
    span = max(1, len(labels) - 1)

    def x(i: float) -> float:
        return _LEFT + (WIDTH - _LEFT - _RIGHT) * i / span

    def y(v: float) -> float:
        return HEIGHT - _BOTTOM - (HEIGHT - _TOP - _BOTTOM) * v / top

    parts = _frame(title, ticks, y, label)
    for s in series:
        runs: list[list[str]] = [[]]
        for i, v in enumerate(s.values):
            if v is None:
                runs.append([])
            else:
                runs[-1].append(f"{x(i):.1f},{y(v):.1f}")
        dash = ' stroke-dasharray="6 4"' if s.dashed else ""
        for run in (r for r in runs if r):
            parts.append(f'<polyline points="{" ".join(run)}" stroke="{s.colour}"{dash} class="line"/>')
            if len(run) == 1:
                cx, cy = run[0].split(",")
                parts.append(f'<circle cx="{cx}" cy="{cy}" r="3" fill="{s.colour}"/>')
    parts += _x_labels(labels, x)
    parts.append("</svg>")
    return "".join(parts)


def stacked_bars(title: str, labels: Sequence[str], series: Sequence[Series], label: Callable[[float], str]) -> str:
    """Stacked vertical bars, one per x label."""
    totals = [sum(s.values[i] or 0 for s in series) for i in range(len(labels))]
    ticks = nice_ticks(max(totals, default=0.0))
    top = ticks[-1] or 1.0
    slot = (WIDTH - _LEFT - _RIGHT) / max(1, len(labels))

    def x(i: float) -> float:
        return _LEFT + slot * (i + 0.5)

    def y(v: float) -> float:
        return HEIGHT - _BOTTOM - (HEIGHT - _TOP - _BOTTOM) * v / top

    parts = _frame(title, ticks, y, label)
    for i in range(len(labels)):
        base = 0.0
        for s in series:
            value = s.values[i] or 0
            if value:
                parts.append(
                    f'<rect x="{x(i) - slot * 0.4:.1f}" y="{y(base + value):.1f}" width="{slot * 0.8:.1f}"'
                    f' height="{y(base) - y(base + value):.1f}" fill="{s.colour}"><title>{escape(labels[i])}:'
                    f" {escape(s.label)} {escape(label(value))}</title></rect>"
                )
            base += value
    parts += _x_labels(labels, x)
    parts.append("</svg>")
    return "".join(parts)


def meter(fraction: float | None, colour: str = "#c0392b") -> str:
    """A small inline bar for a table cell (a rate between 0 and 1)."""
    if fraction is None:
        return ""
    width = max(0.0, min(1.0, fraction)) * 60
    return (
        f'<svg viewBox="0 0 60 8" class="meter" aria-hidden="true"><rect width="60" height="8" class="track"/>'
        f'<rect width="{width:.1f}" height="8" fill="{colour}"/></svg>'
    )


def legend(series: Sequence[Series]) -> str:
    items = "".join(
        f'<span><i style="background:{s.colour}"></i>{escape(s.label)}{" (dashed)" if s.dashed else ""}</span>'
        for s in series
    )
    return f'<p class="legend">{items}</p>'
