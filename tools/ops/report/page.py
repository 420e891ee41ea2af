"""``build/report/index.html``: the report as one self-contained page.

Inline CSS and SVG only: no scripts, no remote fonts, images or styles, so it opens from a
file, an artifact store or a mail attachment, and reads on a phone (one column, tables that
scroll sideways inside their section).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from html import escape
from pathlib import Path
from typing import Any

from tools.ops.report.questions import QUESTION, per
from tools.ops.report.svg import Series, legend, line_chart, meter, stacked_bars
from tools.tables import Column, format_value

SECTIONS = (
    ("four-keys", "The four keys"),
    ("build-health", "Build health"),
    ("duration-trend", "Duration trend"),
    ("time-to-recovery", "Time to recovery"),
    ("flaky-steps", "Flaky steps"),
    ("queue-wait", "Queue wait"),
    ("infrastructure", "Infrastructure"),
    ("slowest-steps", "Slowest steps"),
)
BAND_COLOURS = {"elite": "#1a7f37", "high": "#0969da", "medium": "#9a6700", "low": "#cf222e"}
_P50, _P95, _FAILED, _LOST, _STOPPED = "#0969da", "#8250df", "#cf222e", "#cf222e", "#9a6700"

_CSS = """
:root{color-scheme:light;--ink:#1f2328;--muted:#59636e;--line:#d1d9e0;--soft:#f6f8fa}
*{box-sizing:border-box}
body{margin:0;font:15px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;
color:var(--ink);background:#fff}
main{max-width:980px;margin:0 auto;padding:16px}
h1{font-size:1.5rem;margin:0 0 4px}h2{font-size:1.2rem;margin:0 0 8px}h3{font-size:1rem;margin:12px 0 4px}
p{margin:4px 0}.muted,.legend,figcaption{color:var(--muted);font-size:.85rem}
nav{display:flex;flex-wrap:wrap;gap:6px;margin:12px 0}
nav a{padding:4px 10px;border:1px solid var(--line);border-radius:999px;color:var(--ink);text-decoration:none;
font-size:.85rem}
section{border-top:1px solid var(--line);padding:16px 0}
.cards{display:grid;grid-template-columns:repeat(auto-fit,minmax(200px,1fr));gap:10px;margin:8px 0}
.card{border:1px solid var(--line);border-radius:8px;padding:10px 12px;background:var(--soft)}
.card .value{font-size:1.6rem;font-weight:600;margin:2px 0}
.band{display:inline-block;padding:1px 8px;border-radius:999px;color:#fff;font-size:.75rem;font-weight:600;
text-transform:uppercase;letter-spacing:.03em}
.scroll{overflow-x:auto;-webkit-overflow-scrolling:touch}
table{border-collapse:collapse;width:100%;font-size:.85rem;margin:6px 0}
th,td{padding:5px 8px;border-bottom:1px solid var(--line);text-align:left;white-space:nowrap;vertical-align:middle}
td.text{white-space:normal;min-width:5em}
th{background:var(--soft);font-weight:600}td.num{text-align:right;font-variant-numeric:tabular-nums}
.chart{width:100%;height:auto;display:block;font-size:11px;fill:var(--muted)}
.chart .grid{stroke:var(--line);stroke-width:1}.chart .line{fill:none;stroke-width:2}
.meter{width:60px;height:8px;margin-left:6px;vertical-align:middle}.meter .track{fill:var(--line)}
.legend span{margin-right:12px;white-space:nowrap}
.legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:2px}
figure{margin:8px 0 16px}details{margin:6px 0}summary{cursor:pointer;color:var(--muted);font-size:.85rem}
footer{color:var(--muted);font-size:.8rem;padding:16px 0}
"""


@dataclass(frozen=True)
class PageInfo:
    source: str  # where the numbers come from: "BigQuery project.dataset", or the seeded history
    since: datetime
    until: datetime
    generated_at: datetime


def write_page(results: Mapping[str, Sequence[Mapping[str, Any]]], info: PageInfo, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render_page(results, info), encoding="utf-8")
    return path


def render_page(results: Mapping[str, Sequence[Mapping[str, Any]]], info: PageInfo) -> str:
    sections = {
        "four-keys": _four_keys(results),
        "build-health": _build_health(results["build_health"]),
        "duration-trend": _duration_trend(results["duration_trend"]),
        "time-to-recovery": _table(results["time_to_recovery"], QUESTION["time_to_recovery"].columns),
        "flaky-steps": _table(results["flaky_steps"], QUESTION["flaky_steps"].columns, meters={"flake_rate"}),
        "queue-wait": _queue_wait(results["queue_wait"]),
        "infrastructure": _infrastructure(results["infrastructure_failures"], results["agent_health"]),
        "slowest-steps": _table(results["slowest_steps"], QUESTION["slowest_steps"].columns),
    }
    window = f"{info.since:%Y-%m-%d %H:%M} to {info.until:%Y-%m-%d %H:%M} UTC"
    body = "".join(f'<section id="{key}"><h2>{escape(title)}</h2>{sections[key]}</section>' for key, title in SECTIONS)
    nav = "".join(f'<a href="#{key}">{escape(title)}</a>' for key, title in SECTIONS)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>Buildkite pipelines: {escape(window)}</title><style>{_CSS}</style></head><body><main>"
        f"<header><h1>Buildkite pipelines</h1><p class=muted>{escape(info.source)}: builds, jobs and events"
        f" from {escape(window)}</p></header><nav>{nav}</nav>{body}"
        f"<footer>Made by <code>make report</code> at {info.generated_at.astimezone(UTC):%Y-%m-%d %H:%M} UTC from"
        " the questions in <code>queries/*.sql</code>; each file says exactly what it counts.</footer>"
        "</main></body></html>\n"
    )


# --- sections ---------------------------------------------------------------------------


def _four_keys(results: Mapping[str, Sequence[Mapping[str, Any]]]) -> str:
    everything = {name: _row(results[name], "(all)") for name in _KEYS}
    if not any(everything.values()):
        return (
            "<p>No deployments in this window. A deployment is a passed build of a deploy pipeline: name them"
            " with Terraform's <code>deploy_pipelines</code> (pipeline-slug globs such as <code>*-deploy</code>).</p>"
        )
    cards = "".join(_card(name, everything[name]) for name in _KEYS)
    pipelines = sorted({str(r["pipeline"]) for name in _KEYS for r in results[name] if r["pipeline"] != "(all)"})
    rows = []
    for pipeline in pipelines:
        cells = [f"<td>{escape(pipeline)}</td>"]
        for name in _KEYS:
            row = _row(results[name], pipeline)
            cells.append(f"<td>{_headline(name, row)} {_badge(row.get('band') if row else None)}</td>")
        rows.append(f"<tr>{''.join(cells)}</tr>")
    head = "".join(f"<th>{escape(title)}</th>" for title in ("deploy pipeline", *(t for t, _ in _KEYS.values())))
    table = f'<div class="scroll"><table><tr>{head}</tr>{"".join(rows)}</table></div>'
    return (
        f'<div class="cards">{cards}</div>{table}<details><summary>How the bands are set</summary>'
        "<p>Deployment frequency: elite when the median week has 7 or more deployments, high 1 or more, medium at"
        " least one a month, else low. Lead time (median): elite under an hour, high under a week, medium under"
        " 180 days. Change failure rate: elite up to 15 %, high 30 %, medium 45 %. Time to restore (median):"
        " elite under an hour, high under a day, medium under a week. Definitions: queries/dora_*.sql.</p></details>"
    )


_KEYS = {
    "dora_deployment_frequency": ("Deployment frequency", "deployments_per_week"),
    "dora_lead_time": ("Lead time for changes", "median_lead_time_seconds"),
    "dora_change_failure_rate": ("Change failure rate", "change_failure_rate"),
    "dora_time_to_restore": ("Time to restore service", "median_time_to_restore_seconds"),
}


def _card(name: str, row: Mapping[str, Any] | None) -> str:
    title = _KEYS[name][0]
    if not row:
        return (
            f'<div class="card"><p>{escape(title)}</p><p class="value">-</p><p class=muted>none in the window</p></div>'
        )
    detail = _detail(name, row)
    return (
        f'<div class="card"><p>{escape(title)} {_badge(row.get("band"))}</p>'
        f'<p class="value">{_headline(name, row)}</p><p class=muted>{escape(detail)}</p></div>'
    )


def _detail(name: str, row: Mapping[str, Any]) -> str:
    if name == "dora_deployment_frequency":
        median_week = format_value(row["median_weekly"], "number")
        return f"{row['deployments']} deployments on {row['deployment_days']} days; median week {median_week}"
    if name == "dora_lead_time":
        return f"median of {row['measured']} deployments; p90 {_seconds(row['p90_lead_time_seconds'])}"
    if name == "dora_change_failure_rate":
        return f"{row['failed_deployments']} failed and {row['rolled_back']} rolled back of {row['attempts']} attempts"
    still = "; one still open" if row["still_failing"] else ""
    return f"{row['incidents']} incidents, {row['restored']} restored{still}"


def _headline(name: str, row: Mapping[str, Any] | None) -> str:
    if not row:
        return "-"
    value = row[_KEYS[name][1]]
    if name == "dora_deployment_frequency":
        return f"{format_value(value, 'number')} / week"
    if name == "dora_change_failure_rate":
        return format_value(value, "rate")
    return _seconds(value)


def _build_health(rows: Sequence[Mapping[str, Any]]) -> str:
    by_key = {c.key: c for c in QUESTION["build_health"].columns}
    order = ("pipeline", "branch", "failure_rate", "builds", "failed", "infrastructure_failed", "p50_duration_seconds")
    columns = [by_key[key] for key in (*order, "p95_duration_seconds", "p50_wait_seconds", "p95_wait_seconds")]
    note = (
        "<p class=muted>failure rate = failed / (passed + failed). infra failed: failed builds whose last attempt"
        " of a step failed because of the machine (agent lost or stopped, ...), not the code.</p>"
    )
    return note + _table(rows, columns, meters={"failure_rate"})


def _duration_trend(rows: Sequence[Mapping[str, Any]]) -> str:
    if not rows:
        return "<p>No builds with a verdict on a default branch in this window.</p>"
    figures = []
    for pipeline, days in per(rows, "pipeline").items():
        labels = [f"{d['day']:%m-%d}" if hasattr(d["day"], "strftime") else str(d["day"]) for d in days]
        series = [
            Series("p50", [_minutes(d["p50_duration_seconds"]) for d in days], _P50),
            Series("p95", [_minutes(d["p95_duration_seconds"]) for d in days], _P95, dashed=True),
        ]
        failed = sum(int(d["failed"]) for d in days)
        chart = line_chart(f"{pipeline}: default-branch build duration per day", labels, series, _minute_label)
        figures.append(
            f"<figure><h3>{escape(pipeline)}</h3>{chart}<figcaption>{legend(series)} Minutes per build; "
            f"{sum(int(d['builds']) for d in days)} builds, {failed} failed.</figcaption></figure>"
        )
    return "".join(figures)


def _queue_wait(rows: Sequence[Mapping[str, Any]]) -> str:
    return "<p class=muted>How long command jobs waited for an agent (runnable to started).</p>" + _table(
        rows, QUESTION["queue_wait"].columns
    )


def _infrastructure(failures: Sequence[Mapping[str, Any]], agents: Sequence[Mapping[str, Any]]) -> str:
    out = ["<h3>Jobs the machine failed</h3>"]
    out.append(_table(failures, QUESTION["infrastructure_failures"].columns, meters={"infrastructure_share"}))
    out.append("<h3>Agents lost and stopped, per day</h3>")
    if not agents:
        out.append("<p>No agent events in this window.</p>")
        return "".join(out)
    days = sorted({row["day"] for row in agents})
    labels = [f"{d:%m-%d}" if hasattr(d, "strftime") else str(d) for d in days]
    for queue, rows in per(agents, "queue").items():
        by_day = {row["day"]: row for row in rows}
        series = [
            Series("lost", [float(by_day[d]["lost"]) if d in by_day else 0.0 for d in days], _LOST),
            Series("stopped", [float(by_day[d]["stopped"]) if d in by_day else 0.0 for d in days], _STOPPED),
        ]
        lost = sum(int(r["lost"]) for r in rows)
        chart = stacked_bars(f"queue {queue}: agents lost and stopped per day", labels, series, _count_label)
        connected = sum(int(r["connected"]) for r in rows)
        out.append(
            f"<figure><h3>queue {escape(queue)}</h3>{chart}<figcaption>{legend(series)} {lost} lost of"
            f" {connected} agent connections.</figcaption></figure>"
        )
    return "".join(out)


# --- pieces -------------------------------------------------------------------------------


def _table(
    rows: Sequence[Mapping[str, Any]], columns: Sequence[Column], *, meters: frozenset[str] | set[str] = frozenset()
) -> str:
    if not rows:
        return "<p>Nothing to show in this window.</p>"
    head = "".join(f"<th>{escape(c.title)}</th>" for c in columns)
    body = []
    for row in rows:
        cells = []
        for c in columns:
            value = row.get(c.key)
            text = escape(humane(value) if c.kind == "seconds" else format_value(value, c.kind))
            if c.kind == "text":  # long branch names may wrap after a slash
                cells.append(f'<td class="text">{text.replace("/", "/<wbr>")}</td>')
            elif c.kind == "band":
                cells.append(f"<td>{_badge(value)}</td>")
            elif c.key in meters:
                cells.append(f'<td class="num">{text}{meter(value)}</td>')
            else:
                cells.append(
                    f'<td class="num">{text}</td>' if c.kind not in ("text", "day", "time") else f"<td>{text}</td>"
                )
        body.append(f"<tr>{''.join(cells)}</tr>")
    return f'<div class="scroll"><table><tr>{head}</tr>{"".join(body)}</table></div>'


def _badge(band: Any) -> str:
    if not band:
        return ""
    colour = BAND_COLOURS.get(str(band), "#59636e")
    return f'<span class="band" style="background:{colour}">{escape(str(band))}</span>'


def _row(rows: Sequence[Mapping[str, Any]], pipeline: str) -> Mapping[str, Any] | None:
    return next((row for row in rows if row["pipeline"] == pipeline), None)


def _seconds(value: Any) -> str:
    return humane(value)


def humane(seconds: Any) -> str:
    """Durations as people say them: 45 s, 12 min, 5.2 h, 3.1 days."""
    if seconds is None:
        return "-"
    value = float(seconds)
    if value < 60:
        return f"{value:.0f} s" if value >= 10 else f"{value:.1f} s"
    if value < 3600:
        return f"{value / 60:.0f} min" if value >= 600 else f"{value / 60:.1f} min"
    if value < 48 * 3600:
        return f"{value / 3600:.1f} h"
    return f"{value / 86400:.1f} days"


def _minutes(value: Any) -> float | None:
    return None if value is None else float(value) / 60


def _minute_label(value: float) -> str:
    return f"{value:g} min"


def _count_label(value: float) -> str:
    return f"{value:g}"
