"""The questions ``make report`` asks (``queries/*.sql``), and their answers as text tables and PNGs."""

from __future__ import annotations

import math
import sys
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any, TextIO

from tools import ROOT
from tools.bigquery import BUILD_HEALTH_COLUMNS, run_query
from tools.tables import Column, format_table


@dataclass(frozen=True)
class Question:
    name: str  # queries/<name>.sql
    title: str
    columns: tuple[Column, ...]


def _band(*columns: Column) -> tuple[Column, ...]:
    return (Column("pipeline", "pipeline"), *columns, Column("band", "band", "band"))


QUESTIONS = (
    Question(
        "build_health",
        "Build health per pipeline and branch",
        (
            *BUILD_HEALTH_COLUMNS,
            Column("infrastructure_failed", "infra failed", "count"),
            Column("p50_duration_seconds", "p50 duration", "seconds"),
            Column("p95_duration_seconds", "p95 duration", "seconds"),
            Column("p50_wait_seconds", "p50 wait", "seconds"),
            Column("p95_wait_seconds", "p95 wait", "seconds"),
        ),
    ),
    Question(
        "time_to_recovery",
        "Time to recovery on the default branch (first failure -> next pass)",
        (
            Column("pipeline", "pipeline"),
            Column("branch", "branch"),
            Column("incidents", "incidents", "count"),
            Column("recovered", "recovered", "count"),
            Column("mean_time_to_recovery_seconds", "mean time to recovery", "seconds"),
            Column("longest_time_to_recovery_seconds", "longest", "seconds"),
            Column("still_failing", "still failing", "flag"),
        ),
    ),
    Question(
        "slowest_steps",
        "Slowest steps (by p95 run time, top per pipeline)",
        (
            Column("pipeline", "pipeline"),
            Column("step", "step"),
            Column("runs", "runs", "count"),
            Column("failed", "failed", "count"),
            Column("p50_run_seconds", "p50 run", "seconds"),
            Column("p95_run_seconds", "p95 run", "seconds"),
            Column("p50_wait_seconds", "p50 wait", "seconds"),
            Column("p95_wait_seconds", "p95 wait", "seconds"),
        ),
    ),
    Question(
        "flaky_steps",
        "Flaky steps (failed, then passed on retry in the same build)",
        (
            Column("pipeline", "pipeline"),
            Column("step", "step"),
            Column("builds", "builds", "count"),
            Column("flaky_builds", "flaky builds", "count"),
            Column("flake_rate", "flake rate", "rate"),
            Column("retries", "retries", "count"),
            Column("last_flaky_at", "last flaky", "time"),
        ),
    ),
    Question(
        "queue_wait",
        "Wait for an agent per queue",
        (
            Column("queue", "queue"),
            Column("jobs", "jobs", "count"),
            Column("p50_wait_seconds", "p50 wait", "seconds"),
            Column("p95_wait_seconds", "p95 wait", "seconds"),
            Column("longest_wait_seconds", "longest wait", "seconds"),
            Column("agent_hours", "agent hours", "hours"),
        ),
    ),
    Question(
        "duration_trend",
        "Default-branch duration trend (daily p50; first week against last week)",
        (
            Column("pipeline", "pipeline"),
            Column("day", "day", "day"),
            Column("builds", "builds", "count"),
            Column("failed", "failed", "count"),
            Column("p50_duration_seconds", "p50 duration", "seconds"),
            Column("p95_duration_seconds", "p95 duration", "seconds"),
        ),
    ),
    Question(
        "dora_deployment_frequency",
        "DORA deployment frequency (passed deploy builds)",
        _band(
            Column("attempts", "attempts", "count"),
            Column("deployments", "deployments", "count"),
            Column("deployment_days", "days", "count"),
            Column("deployments_per_week", "per week", "number"),
            Column("median_weekly", "median week", "number"),
        ),
    ),
    Question(
        "dora_lead_time",
        "DORA lead time for changes (commit's first build -> deployed)",
        _band(
            Column("deployments", "deployments", "count"),
            Column("measured", "measured", "count"),
            Column("median_lead_time_seconds", "median", "seconds"),
            Column("p90_lead_time_seconds", "p90", "seconds"),
        ),
    ),
    Question(
        "dora_change_failure_rate",
        "DORA change failure rate ((failed + rolled back) / attempts)",
        _band(
            Column("attempts", "attempts", "count"),
            Column("failed_deployments", "failed", "count"),
            Column("rolled_back", "rolled back", "count"),
            Column("change_failure_rate", "rate", "rate"),
        ),
    ),
    Question(
        "dora_time_to_restore",
        "DORA time to restore service (failed change -> next good deployment)",
        _band(
            Column("incidents", "incidents", "count"),
            Column("restored", "restored", "count"),
            Column("median_time_to_restore_seconds", "median", "seconds"),
            Column("mean_time_to_restore_seconds", "mean", "seconds"),
            Column("longest_time_to_restore_seconds", "longest", "seconds"),
            Column("still_failing", "still failing", "flag"),
        ),
    ),
    Question(
        "infrastructure_failures",
        "Infrastructure failures per queue (jobs failed by the machine, not the code)",
        (
            Column("queue", "queue"),
            Column("jobs", "jobs", "count"),
            Column("failed", "failed", "count"),
            Column("infrastructure", "infrastructure", "count"),
            Column("agent_lost", "agent lost", "count"),
            Column("agent_stopped", "agent stopped", "count"),
            Column("infrastructure_share", "share", "rate"),
            Column("recovered_by_retry", "passed on retry", "count"),
        ),
    ),
    Question(
        "agent_health",
        "Agent health per queue (agent events; daily counts summed over the window)",
        (
            Column("queue", "queue"),
            Column("day", "day", "day"),
            Column("connected", "connected", "count"),
            Column("disconnected", "disconnected", "count"),
            Column("stopped", "stopped", "count"),
            Column("lost", "lost", "count"),
            Column("blocked", "blocked", "count"),
        ),
    ),
)
QUESTION = {question.name: question for question in QUESTIONS}

TREND_SUMMARY = (
    Column("pipeline", "pipeline"),
    Column("days", "days", "count"),
    Column("builds", "builds", "count"),
    Column("first_week", "first week p50", "seconds"),
    Column("last_week", "last week p50", "seconds"),
    Column("change", "change", "change"),
    Column("sparkline", "daily p50"),
)
AGENT_SUMMARY = (
    Column("queue", "queue"),
    Column("days", "days", "count"),
    Column("connected", "connected", "count"),
    Column("disconnected", "disconnected", "count"),
    Column("stopped", "stopped", "count"),
    Column("lost", "lost", "count"),
    Column("blocked", "blocked", "count"),
    Column("worst_day", "most lost on"),
)
_BARS = "▁▂▃▄▅▆▇█"


def ask_all(
    client: Any, *, project: str, dataset: str, since: datetime, until: datetime, top_n: int
) -> dict[str, list[dict[str, Any]]]:
    """Every question's rows, by question name."""
    return {
        q.name: run_query(client, q.name, project=project, dataset=dataset, since=since, until=until, top_n=top_n)
        for q in QUESTIONS
    }


def print_answers(results: Mapping[str, Sequence[Mapping[str, Any]]], out: TextIO | None = None) -> None:
    """Each question's table (to ``out``, default stdout); long daily ones as a summary per pipeline or queue."""
    out = out or sys.stdout
    summaries = {"duration_trend": (trend_summary, TREND_SUMMARY), "agent_health": (agent_summary, AGENT_SUMMARY)}
    for question in QUESTIONS:
        rows: Sequence[Mapping[str, Any]] = results[question.name]
        columns = question.columns
        if question.name in summaries:
            summarise, columns = summaries[question.name]
            rows = summarise(rows)
        print(f"\n{question.title}  (queries/{question.name}.sql)", file=out)
        for text in format_table(rows, columns):
            print(f"  {text}", file=out)


def per(rows: Iterable[Mapping[str, Any]], key: str) -> dict[str, list[Mapping[str, Any]]]:
    grouped: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(str(row[key]), []).append(row)
    return dict(sorted(grouped.items()))


def trend_summary(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per pipeline: the median daily p50 of the first and the last seven days, and a sparkline."""
    summary = []
    for pipeline, days in per(rows, "pipeline").items():
        daily = [float(d["p50_duration_seconds"]) for d in days if d["p50_duration_seconds"] is not None]
        first, last = (median(daily[:7]), median(daily[-7:])) if daily else (None, None)
        low, high = (min(daily), max(daily)) if daily else (0.0, 0.0)
        spark = "".join(_BARS[int((v - low) / (high - low) * (len(_BARS) - 1)) if high > low else 0] for v in daily)
        summary.append(
            {
                "pipeline": pipeline,
                "days": len(days),
                "builds": sum(int(d["builds"]) for d in days),
                "first_week": first,
                "last_week": last,
                "change": (last - first) / first if first and last is not None else None,
                "sparkline": spark,
            }
        )
    return summary


def agent_summary(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per queue: the daily counts summed, and the day most agents were lost."""
    summary = []
    for queue, days in per(rows, "queue").items():
        totals: dict[str, Any] = {k: sum(int(d[k]) for d in days) for k in ("connected", "disconnected", "stopped")}
        totals |= {k: sum(int(d[k]) for d in days) for k in ("lost", "blocked")}
        worst = max(days, key=lambda d: (int(d["lost"]), d["day"]))
        worst_day = f"{worst['day']} ({worst['lost']})" if int(worst["lost"]) else "-"
        summary.append({"queue": queue, "days": len(days), **totals, "worst_day": worst_day})
    return summary


def median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if not ordered:
        return None
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def draw_duration_trends(rows: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per pipeline: p50 and p95 default-branch duration per day, failures below."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for pipeline, points in per(rows, "pipeline").items():
        days = [p["day"] for p in points]
        fig, (ax, bars) = plt.subplots(
            2, 1, figsize=(9, 4.8), sharex=True, gridspec_kw={"height_ratios": [3, 1]}, layout="constrained"
        )
        for key, label, style in (("p50_duration_seconds", "p50", "-o"), ("p95_duration_seconds", "p95", "--")):
            minutes = [(p[key] / 60) if p[key] is not None else math.nan for p in points]
            ax.plot(days, minutes, style, label=label, markersize=3)
        ax.set_ylabel("minutes")
        ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
        ax.legend(loc="upper left")
        ax.set_title(f"{pipeline}: default-branch build duration per day")
        passed = [p["builds"] - p["failed"] for p in points]
        bars.bar(days, passed, color="#4c9a2a", label="passed")
        bars.bar(days, [p["failed"] for p in points], bottom=passed, color="#c0392b")
        bars.set_ylabel("builds")
        bars.grid(alpha=0.3, axis="y")
        fig.autofmt_xdate()
        path = out_dir / f"duration-trend-{safe_name(pipeline)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80] or "pipeline"


def relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)
