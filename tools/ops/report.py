"""Pipeline analytics from BigQuery: ``make report`` (``python -m tools.ops.report``).

Runs every question in ``queries/*.sql`` over a window and prints readable tables, plus one
PNG per pipeline of its default-branch duration trend (``build/report/``).

- ``BIGQUERY_PROJECT`` set: reads that project's dataset (``BIGQUERY_DATASET``, default
  ``buildkite``) with Application Default Credentials, over the last ``--days`` days.
  ``BIGQUERY_API_URL`` points it at an emulator instead (the one ``make run-local`` runs).
- otherwise: starts its own bqemulator, creates the tables and views from
  ``schemas/bigquery`` and ``queries/views``, and seeds them with the fixture webhooks plus a
  synthetic 28-day history of three pipelines, written by the function's own row builders.
  The seeded window ends on ``HISTORY_END``, so the output is the same on every run.

The helpers here (client, dataset creation, SQL rendering, the synthetic history) are what
the tests and ``make demo`` use too.
"""

from __future__ import annotations

import argparse
import base64
import importlib.util
import json
import math
import os
import random
import sys
import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from types import ModuleType
from typing import Any, TextIO

from buildkite_events import BuildkiteEvent, parse_delivery
from buildkite_events.filters import parse_filter
from buildkite_events.message import message_attributes
from buildkite_events.timeutil import format_duration, isoformat
from tools import LOCAL_PROJECT, ROOT
from tools.bigquery import QUERY_DIR, bigquery_client, create_dataset, render
from tools.manifests import function_dir, manifest

FIXTURES = ROOT / "tests" / "fixtures" / "buildkite" / "payloads"
CHART_DIR = ROOT / "build" / "report"
FUNCTION = "bigquery-metrics"
LOCAL_DATASET = "buildkite"
HISTORY_END = datetime(2025, 6, 13, tzinfo=UTC)  # the day after the fixtures' builds
HISTORY_DAYS = 28
QUERY_TIMEOUT_SECONDS = 300.0

# --- queries ---------------------------------------------------------------------


def run_query(
    client: Any,
    name: str,
    *,
    project: str,
    dataset: str,
    since: datetime,
    until: datetime,
    top_n: int = 5,
) -> list[dict[str, Any]]:
    """Rows of ``queries/<name>.sql`` for builds and jobs that finished in [since, until)."""
    from google.cloud import bigquery

    sql = render((QUERY_DIR / f"{name}.sql").read_text(), project, dataset)
    values: dict[str, tuple[str, Any]] = {
        "since": ("TIMESTAMP", since),
        "until": ("TIMESTAMP", until),
        "top_n": ("INT64", top_n),
    }
    parameters = [bigquery.ScalarQueryParameter(k, kind, v) for k, (kind, v) in values.items() if f"@{k}" in sql]
    config = bigquery.QueryJobConfig(query_parameters=parameters)
    # job_retry=None and a timeout: an emulator's HTTP 500 must not turn into minutes of retries.
    job = client.query(sql, job_config=config, job_retry=None, timeout=60)
    return [dict(row.items()) for row in job.result(timeout=QUERY_TIMEOUT_SECONDS)]


def insert_rows(client: Any, table: str, rows: Sequence[tuple[str, Mapping[str, Any]]], batch: int = 500) -> None:
    """(insertId, row) pairs, in batches; any refused row is an error."""
    for start in range(0, len(rows), batch):
        chunk = rows[start : start + batch]
        errors = client.insert_rows_json(
            table, [row for _, row in chunk], row_ids=[row_id for row_id, _ in chunk], retry=None, timeout=60
        )
        if errors:
            raise RuntimeError(f"inserting into {table} failed: {errors[:3]}")


# --- the questions -------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    key: str
    title: str
    kind: str = "text"  # text, count, seconds, rate, time, day, flag


@dataclass(frozen=True)
class Question:
    name: str  # queries/<name>.sql
    title: str
    columns: tuple[Column, ...]


QUESTIONS = (
    Question(
        "build_health",
        "Build health per pipeline and branch",
        (
            Column("pipeline", "pipeline"),
            Column("branch", "branch"),
            Column("builds", "builds", "count"),
            Column("passed", "passed", "count"),
            Column("failed", "failed", "count"),
            Column("failure_rate", "failure rate", "rate"),
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
)


TREND_SUMMARY = (
    Column("pipeline", "pipeline"),
    Column("days", "days", "count"),
    Column("builds", "builds", "count"),
    Column("first_week", "first week p50", "seconds"),
    Column("last_week", "last week p50", "seconds"),
    Column("change", "change", "change"),
    Column("sparkline", "daily p50"),
)
_BARS = "▁▂▃▄▅▆▇█"


def trend_summary(rows: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Per pipeline: the median daily p50 of the first and the last seven days, and a sparkline."""
    per_pipeline: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        per_pipeline.setdefault(str(row["pipeline"]), []).append(row)
    summary = []
    for pipeline, days in sorted(per_pipeline.items()):
        daily = [float(d["p50_duration_seconds"]) for d in days if d["p50_duration_seconds"] is not None]
        first, last = (_median(daily[:7]), _median(daily[-7:])) if daily else (None, None)
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


def _median(values: Sequence[float]) -> float | None:
    ordered = sorted(values)
    middle = len(ordered) // 2
    if not ordered:
        return None
    return ordered[middle] if len(ordered) % 2 else (ordered[middle - 1] + ordered[middle]) / 2


def format_value(value: Any, kind: str) -> str:
    if value is None:
        return "-"
    if kind == "seconds":
        return _short_duration(float(value))
    if kind == "rate":
        return f"{float(value) * 100:.1f}%"
    if kind == "change":
        return f"{float(value) * 100:+.0f}%"
    if kind == "hours":
        return f"{float(value):.1f}"
    if kind == "time" and isinstance(value, datetime):
        return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M")
    if kind == "day" and isinstance(value, date):
        return value.isoformat()
    if kind == "flag":
        return "yes" if value else "no"
    return str(value)


def _short_duration(seconds: float) -> str:
    if seconds < 10:
        return f"{seconds:.1f}s"
    return format_duration(round(seconds)) or "-"


def format_table(rows: Sequence[Mapping[str, Any]], columns: Sequence[Column]) -> list[str]:
    """Aligned text columns; numbers right-aligned."""
    cells = [[format_value(row.get(c.key), c.kind) for c in columns] for row in rows]
    widths = [max([len(c.title), *(len(r[i]) for r in cells)]) for i, c in enumerate(columns)]

    def line(values: Sequence[str]) -> str:
        parts = [
            v.ljust(w) if c.kind in ("text", "day", "time") else v.rjust(w)
            for v, w, c in zip(values, widths, columns, strict=True)
        ]
        return "  ".join(parts).rstrip()

    out = [line([c.title for c in columns]), line(["-" * w for w in widths])]
    return out + ([line(r) for r in cells] or ["(no rows)"])


def print_report(
    client: Any,
    *,
    project: str,
    dataset: str,
    since: datetime,
    until: datetime,
    top_n: int,
    chart_dir: Path | None,
    out: TextIO | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Ask every question, print its table (to ``out``, default stdout), draw the charts."""
    out = out or sys.stdout
    results: dict[str, list[dict[str, Any]]] = {}
    for question in QUESTIONS:
        rows = run_query(client, question.name, project=project, dataset=dataset, since=since, until=until, top_n=top_n)
        results[question.name] = rows
        print(f"\n{question.title}  (queries/{question.name}.sql)", file=out)
        if question.name == "duration_trend":  # one line per pipeline here; every day is in the chart
            rows, columns = trend_summary(rows), TREND_SUMMARY
        for text in format_table(rows, columns if question.name == "duration_trend" else question.columns):
            print(f"  {text}", file=out)
    if chart_dir is not None:
        charts = draw_duration_trends(results["duration_trend"], chart_dir)
        if charts:
            print("\nDuration trend charts:", file=out)
            for path in charts:
                print(f"  {_relative(path)}", file=out)
    return results


def draw_duration_trends(rows: Iterable[Mapping[str, Any]], out_dir: Path) -> list[Path]:
    """One PNG per pipeline: p50 and p95 default-branch duration per day, failures below."""
    import matplotlib

    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    per_pipeline: dict[str, list[Mapping[str, Any]]] = {}
    for row in rows:
        per_pipeline.setdefault(str(row["pipeline"]), []).append(row)
    out_dir.mkdir(parents=True, exist_ok=True)
    written: list[Path] = []
    for pipeline, points in sorted(per_pipeline.items()):
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
        bars.bar(days, [p["builds"] - p["failed"] for p in points], color="#4c9a2a", label="passed")
        bars.bar(
            days, [p["failed"] for p in points], bottom=[p["builds"] - p["failed"] for p in points], color="#c0392b"
        )
        bars.set_ylabel("builds")
        bars.grid(alpha=0.3, axis="y")
        fig.autofmt_xdate()
        path = out_dir / f"duration-trend-{_safe_name(pipeline)}.png"
        fig.savefig(path, dpi=100)
        plt.close(fig)
        written.append(path)
    return written


def _safe_name(text: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in text)[:80] or "pipeline"


def _relative(path: Path) -> str:
    try:
        return str(path.relative_to(ROOT))
    except ValueError:
        return str(path)


# --- seeding: fixtures plus a synthetic history ---------------------------------------


def metrics_function() -> ModuleType:
    """``functions/bigquery-metrics/main.py``: its row builders write the seeded rows."""
    name = "fn_bigquery_metrics"  # the name tests.support.load_function gives it
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, function_dir(FUNCTION) / "main.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


def fixture_bodies() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]


def as_event(body: Mapping[str, Any], message_id: str) -> BuildkiteEvent:
    """The event the function would see for ``body``: published a second after it happened."""
    event = parse_delivery(dict(body))
    when = event.occurred_at or HISTORY_END
    message = {
        "data": base64.b64encode(json.dumps(body).encode()).decode(),
        "messageId": message_id,
        "publishTime": isoformat(when + timedelta(seconds=1)),
        "attributes": message_attributes(event),
    }
    return parse_delivery({"message": message})


@dataclass
class Seeded:
    builds: list[tuple[str, dict[str, Any]]] = field(default_factory=list)  # (insertId, row)
    jobs: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    duplicates: int = 0


def seed_rows(bodies: Iterable[Mapping[str, Any]], *, duplicate_every: int = 0) -> Seeded:
    """The rows the function writes for ``bodies`` (events its filter rejects are skipped).

    ``duplicate_every=n`` repeats every n-th row a minute later, as a redelivery that slipped
    past the idempotency claim would: the ``*_latest`` views must hide it.
    """
    fn = metrics_function()
    accepts = parse_filter(manifest(FUNCTION).filter).matches
    seeded = Seeded()
    for index, body in enumerate(bodies):
        event = as_event(body, message_id=f"seed-{index}")
        if not accepts(event.attributes) or event.kind not in ("build", "job"):
            continue
        if event.kind == "job" and event.job is None:
            continue
        written = (event.occurred_at or HISTORY_END) + timedelta(seconds=2)
        if event.kind == "build":
            target, row = seeded.builds, fn.build_row(event, now=written)
        else:
            target, row = seeded.jobs, fn.job_row(event, now=written)
        target.append((event.key_hash, row))
        if duplicate_every and index % duplicate_every == 0:
            target.append((event.key_hash, {**row, "inserted_at": isoformat(written + timedelta(minutes=1))}))
            seeded.duplicates += 1
    return seeded


def seed(client: Any, project: str, dataset: str, seeded: Seeded) -> None:
    insert_rows(client, f"{project}.{dataset}.builds", seeded.builds)
    insert_rows(client, f"{project}.{dataset}.jobs", seeded.jobs)


@dataclass(frozen=True)
class Step:
    key: str
    name: str
    minutes: float  # typical run time
    queue: str = "default"
    flake: float = 0.0  # chance a run fails and then passes on its automatic retry
    parallelism: int = 1
    slowdown: float = 0.0  # run time grows by this fraction per day of history


@dataclass(frozen=True)
class PipelineSpec:
    slug: str
    name: str
    default_branch: str
    builds_per_day: int
    steps: tuple[Step, ...]
    block_chance: float = 0.0  # main builds that stop at a block step ("deploy?")


PIPELINES = (
    PipelineSpec(
        "web-app",
        "Web App",
        "main",
        8,
        (
            Step("lint", ":eslint: Lint", 1.0),
            Step("unit", ":jest: Unit tests", 4.0),
            Step("integration", ":cypress: Integration", 9.0, flake=0.12),
            Step("e2e", ":playwright: End to end", 12.0, slowdown=0.03),
        ),
        block_chance=0.2,
    ),
    PipelineSpec(
        "api",
        "API",
        "main",
        7,
        (
            Step("lint", ":golang: Vet", 1.5),
            Step("test", ":golang: Test", 6.0, parallelism=2, flake=0.05),
            Step("image", ":docker: Build image", 3.0, queue="docker"),
        ),
    ),
    PipelineSpec(
        "mobile",
        "Mobile",
        "develop",
        4,
        (
            Step("lint", ":swift: Lint", 1.0, queue="macos"),
            Step("ios", ":apple: iOS tests", 18.0, queue="macos", flake=0.08),
            Step("android", ":android: Android tests", 14.0),
        ),
    ),
)
_QUEUE_WAIT = {"default": 20.0, "docker": 45.0, "macos": 240.0}  # mean seconds waiting for an agent
_FEATURE_BRANCHES = ("feature/login", "feature/search", "fix/flaky-cache", "chore/deps", "feature/payments")
_PEOPLE = ("Alice Nguyen", "Bob Okafor", "Chen Wei", "Dana Schmidt", "Eve Martins")
_TITLES = ("Fix pagination", "Bump dependencies", "Add search filters", "Refactor session store", "Tidy logging")


def synthetic_history(*, seed: int = 7, days: int = HISTORY_DAYS, end: datetime = HISTORY_END) -> list[dict[str, Any]]:
    """Buildkite webhook bodies (job.finished, build.finished, build.skipped) for ``days`` days.

    Deterministic for a seed. Default branches go red now and then and recover; feature
    branches fail more often; some steps are flaky (fail, retried automatically, pass); some
    builds are canceled, skipped, or stop at a block step (some of those are unblocked
    later and finish a second time); one step gets slower every day.
    """
    rng = random.Random(seed)  # noqa: S311 - made-up data, not secrets
    start = end - timedelta(days=days)
    bodies: list[tuple[datetime, int, dict[str, Any]]] = []
    for spec in PIPELINES:
        red = False
        number = 1000
        for day in range(days):
            times = sorted(rng.uniform(0, 86_000) for _ in range(spec.builds_per_day))
            for offset in times:
                number += 1
                scheduled = start + timedelta(days=day, seconds=offset)
                on_default = rng.random() < 0.6
                branch = spec.default_branch if on_default else rng.choice(_FEATURE_BRANCHES)
                if on_default:
                    fails = rng.random() < (0.35 if red else 0.08)
                    red = fails
                else:
                    fails = rng.random() < 0.15
                build = _simulate_build(rng, spec, number, branch, scheduled, day, fails)
                bodies += [(when, len(bodies), body) for when, body in build]
    bodies.sort(key=lambda item: (item[0], item[1]))
    return [body for _, _, body in bodies]


def _simulate_build(
    rng: random.Random,
    spec: PipelineSpec,
    number: int,
    branch: str,
    scheduled: datetime,
    day: int,
    fails: bool,
) -> list[tuple[datetime, dict[str, Any]]]:
    """The events of one build, each with the time it happened."""
    build = _build_body(rng, spec, number, branch, scheduled)
    if branch != spec.default_branch and rng.random() < 0.03:  # superseded before it started
        build["state"], build["finished_at"] = "skipped", isoformat(scheduled + timedelta(seconds=rng.uniform(5, 60)))
        return [(scheduled, _envelope("build.skipped", spec, build))]
    canceled = rng.random() < 0.03
    steps = spec.steps
    failing_step = rng.randrange(len(steps)) if fails else -1
    events: list[tuple[datetime, dict[str, Any]]] = []
    clock = scheduled
    build_started: datetime | None = None
    state = "passed"
    for index, step in enumerate(steps):
        step_end = clock
        for shard in range(step.parallelism):
            attempts = ["passed"]
            if index == failing_step:
                attempts = ["failed"]
            elif rng.random() < step.flake:
                attempts = ["failed", "passed"]
            if canceled and index == len(steps) // 2:
                attempts = ["canceled"]
            runnable = clock
            previous_id: str | None = None
            for attempt, outcome in enumerate(attempts):
                wait = rng.expovariate(1 / _QUEUE_WAIT[step.queue])
                started = runnable + timedelta(seconds=wait)
                build_started = build_started or started
                minutes = step.minutes * (1 + step.slowdown * day) * rng.lognormvariate(0, 0.15)
                run = minutes * 60 * (rng.uniform(0.2, 0.6) if outcome != "passed" else 1)
                finished = started + timedelta(seconds=run)
                retried = attempt < len(attempts) - 1  # the payload may already say it was retried
                job = _job_body(
                    rng, step, outcome, (runnable, started, finished), shard, attempt, previous_id, retried, build, spec
                )
                events.append((finished, _envelope("job.finished", spec, build, job)))
                previous_id = job["id"]
                runnable = finished + timedelta(seconds=1)
            step_end = max(step_end, runnable)
            if attempts[-1] != "passed":
                state = attempts[-1]
        clock = step_end
        if state != "passed":
            break
    build["started_at"] = isoformat(build_started)
    build["finished_at"] = isoformat(clock)
    build["state"] = state
    if state == "canceled":
        build["cancel_reason"] = "superseded by a newer commit"
    if state == "passed" and branch == spec.default_branch and rng.random() < spec.block_chance:
        # Stops at "Deploy to production?"; half of those are unblocked and deploy later.
        blocked = {**build, "blocked": True, "blocked_state": "passed"}
        events.append((clock, _envelope("build.finished", spec, blocked)))
        if rng.random() >= 0.5:
            return events
        deploy = Step("deploy", ":rocket: Deploy", 2.0)
        runnable = clock + timedelta(minutes=rng.uniform(2, 15))  # someone clicks "Deploy"
        started = runnable + timedelta(seconds=rng.expovariate(1 / _QUEUE_WAIT["default"]))
        finished = started + timedelta(minutes=deploy.minutes * rng.lognormvariate(0, 0.1))
        job = _job_body(rng, deploy, "passed", (runnable, started, finished), 0, 0, None, False, build, spec)
        events.append((finished, _envelope("job.finished", spec, build, job)))
        clock = finished + timedelta(seconds=1)
        build = {**build, "finished_at": isoformat(clock)}
    events.append((clock, _envelope("build.finished", spec, build)))
    return events


def _uuid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4))


def _build_body(
    rng: random.Random, spec: PipelineSpec, number: int, branch: str, scheduled: datetime
) -> dict[str, Any]:
    person = rng.choice(_PEOPLE)
    email = person.split()[0].lower() + "@example.com"
    web_url = f"https://buildkite.com/example-org/{spec.slug}/builds/{number}"
    return {
        "id": _uuid(rng),
        "url": f"https://api.buildkite.com/v2/organizations/example-org/pipelines/{spec.slug}/builds/{number}",
        "web_url": web_url,
        "number": number,
        "state": "scheduled",
        "blocked": False,
        "blocked_state": "",
        "message": f"{rng.choice(_TITLES)}\n\nSigned-off-by: {person} <{email}>",
        "commit": f"{rng.getrandbits(160):040x}",
        "branch": branch,
        "tag": None,
        "source": "webhook",
        "author": {"name": person, "email": email},
        "creator": None,
        "pull_request": {"id": str(rng.randint(100, 999)), "base": spec.default_branch, "repository": None}
        if branch != spec.default_branch
        else None,
        "rebuilt_from": None,
        "cancel_reason": None,
        "created_at": isoformat(scheduled),
        "scheduled_at": isoformat(scheduled),
        "started_at": None,
        "finished_at": None,
    }


def _job_body(
    rng: random.Random,
    step: Step,
    outcome: str,
    times: tuple[datetime, datetime, datetime],  # runnable, started, finished
    shard: int,
    attempt: int,
    retry_of: str | None,
    retried: bool,
    build: Mapping[str, Any],
    spec: PipelineSpec,
) -> dict[str, Any]:
    runnable, started, finished = times
    job_id = _uuid(rng)
    return {
        "id": job_id,
        "type": "script",
        "name": step.name,
        "step_key": step.key,
        "agent_query_rules": [f"queue={step.queue}"],
        "state": outcome,
        "web_url": f"{build['web_url']}#{job_id}",
        "soft_failed": False,
        "exit_status": {"passed": 0, "failed": 1}.get(outcome, -1),
        "agent": {"id": _uuid(rng), "name": f"{step.queue}-agent-{rng.randint(1, 6)}", "meta_data": []},
        "created_at": build["scheduled_at"],
        "scheduled_at": build["scheduled_at"],
        "runnable_at": isoformat(runnable),
        "started_at": isoformat(started),
        "finished_at": isoformat(finished),
        "retried": retried,
        "retries_count": attempt or None,
        "retry_type": "automatic" if attempt else None,
        "retry_source": {"job_id": retry_of, "retry_type": "automatic", "retried_by": None} if retry_of else None,
        "parallel_group_index": shard if step.parallelism > 1 else None,
        "parallel_group_total": step.parallelism if step.parallelism > 1 else None,
    }


def _envelope(
    event: str, spec: PipelineSpec, build: Mapping[str, Any], job: Mapping[str, Any] | None = None
) -> dict[str, Any]:
    body: dict[str, Any] = {"event": event, "build": dict(build)}
    if job is not None:
        body["job"] = dict(job)
    body["pipeline"] = {
        "id": str(uuid.uuid5(uuid.NAMESPACE_URL, spec.slug)),
        "url": f"https://api.buildkite.com/v2/organizations/example-org/pipelines/{spec.slug}",
        "web_url": f"https://buildkite.com/example-org/{spec.slug}",
        "name": spec.name,
        "slug": spec.slug,
        "default_branch": spec.default_branch,
    }
    body["sender"] = {"id": "00000000-0000-4000-8000-000000000000", "name": "Buildkite"}
    return body


# --- make demo ----------------------------------------------------------------------


BUILD_ROWS = (
    Column("pipeline_slug", "pipeline"),
    Column("number", "build", "count"),
    Column("outcome", "outcome"),
    Column("branch", "branch"),
    Column("duration_seconds", "duration", "seconds"),
    Column("wait_seconds", "wait", "seconds"),
    Column("finished_at", "finished", "time"),
)
JOB_ROWS = (
    Column("build_number", "build", "count"),
    Column("name", "job"),
    Column("state", "state"),
    Column("queue", "queue"),
    Column("run_seconds", "run", "seconds"),
    Column("wait_seconds", "wait", "seconds"),
    Column("retry_type", "retry"),
)


def demo_lines(client: Any, project: str, dataset: str) -> list[str]:
    """What the demo's deliveries wrote: row counts, the deduplicated rows, build health."""

    def rows(sql: str) -> list[dict[str, Any]]:
        job = client.query(render(sql, project, dataset), job_retry=None, timeout=30)
        return [dict(row.items()) for row in job.result(timeout=60)]

    counts = rows(
        "SELECT"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.builds`) AS build_rows,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.builds_latest`) AS builds,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.jobs`) AS job_rows,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.jobs_latest`) AS jobs"
    )[0]
    out = [
        f"BigQuery {project}.{dataset}: builds table {counts['build_rows']} rows"
        f" ({counts['builds']} builds in builds_latest), jobs table {counts['job_rows']} rows"
        f" ({counts['jobs']} jobs in jobs_latest)",
        "builds_latest:",
    ]
    builds = rows("SELECT * FROM `${project}.${bigquery_dataset}.builds_latest` ORDER BY number")
    out += [f"  {line}" for line in format_table(builds, BUILD_ROWS)]
    out.append("jobs_latest:")
    jobs = rows("SELECT * FROM `${project}.${bigquery_dataset}.jobs_latest` ORDER BY finished_at")
    out += [f"  {line}" for line in format_table(jobs, JOB_ROWS)]
    health = run_query(
        client,
        "build_health",
        project=project,
        dataset=dataset,
        since=datetime(2000, 1, 1, tzinfo=UTC),
        until=datetime(2100, 1, 1, tzinfo=UTC),
    )
    out.append("queries/build_health.sql over every row:")
    out += [f"  {line}" for line in format_table(health, QUESTIONS[0].columns)]
    return out


# --- command line --------------------------------------------------------------------


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.ops.report",
        description="Pipeline analytics from BigQuery (set BIGQUERY_PROJECT), or from a seeded local bqemulator.",
    )
    parser.add_argument("--days", type=int, default=HISTORY_DAYS, help="window length in days (default 28)")
    parser.add_argument("--until", help="window end, ISO-8601 (default: now; seeded: the history's end)")
    parser.add_argument("--top", type=int, default=5, help="slowest steps shown per pipeline")
    parser.add_argument("--charts", type=Path, default=CHART_DIR, help="where PNG charts go (default build/report)")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument("--seed", type=int, default=7, help="synthetic history seed (local mode)")
    parser.add_argument(
        "--history-days", type=int, default=HISTORY_DAYS, help="days of synthetic history to seed (local mode)"
    )
    return parser.parse_args(argv)


def _window(args: argparse.Namespace, default_end: datetime) -> tuple[datetime, datetime]:
    until = default_end
    if args.until:
        until = datetime.fromisoformat(args.until.replace("Z", "+00:00"))
        until = until if until.tzinfo else until.replace(tzinfo=UTC)
    return until - timedelta(days=args.days), until


def main(argv: Sequence[str] | None = None) -> int:
    args = _parse_args(argv)
    charts = None if args.no_charts else args.charts
    project = os.environ.get("BIGQUERY_PROJECT", "")
    if project:
        return _report_configured(args, project, charts)
    return _report_seeded(args, charts)


def _report_configured(args: argparse.Namespace, project: str, charts: Path | None) -> int:
    from google.auth.exceptions import DefaultCredentialsError

    dataset = os.environ.get("BIGQUERY_DATASET", LOCAL_DATASET)
    since, until = _window(args, datetime.now(UTC))
    try:
        client = bigquery_client(project, os.environ.get("BIGQUERY_API_URL") or None)
    except DefaultCredentialsError:
        print("No Google credentials: run `gcloud auth application-default login`.", file=sys.stderr)
        return 2
    print(f"BigQuery {project}.{dataset}: builds and jobs that finished {_span(since, until)}")
    print_report(client, project=project, dataset=dataset, since=since, until=until, top_n=args.top, chart_dir=charts)
    return 0


def _report_seeded(args: argparse.Namespace, charts: Path | None) -> int:
    from tools.local import emulators

    since, until = _window(args, HISTORY_END)
    print("No BIGQUERY_PROJECT set: seeding a local bqemulator (fixture webhooks + a synthetic history).")
    with emulators.start_bigquery(ROOT / ".stack" / "logs", project=LOCAL_PROJECT) as service:
        client = bigquery_client(LOCAL_PROJECT, service.url)
        create_dataset(client, LOCAL_PROJECT, LOCAL_DATASET)
        bodies = fixture_bodies() + synthetic_history(seed=args.seed, days=args.history_days, end=HISTORY_END)
        seeded = seed_rows(bodies, duplicate_every=25)
        seed(client, LOCAL_PROJECT, LOCAL_DATASET, seeded)
        print(
            f"Seeded {LOCAL_PROJECT}.{LOCAL_DATASET}: {len(seeded.builds)} build rows and {len(seeded.jobs)} job rows"
            f" from {len(bodies)} webhooks ({seeded.duplicates} repeated, as a redelivery would; the *_latest views"
            " hide them)."
        )
        print(f"Window: builds and jobs that finished {_span(since, until)}")
        print_report(
            client,
            project=LOCAL_PROJECT,
            dataset=LOCAL_DATASET,
            since=since,
            until=until,
            top_n=args.top,
            chart_dir=charts,
        )
    return 0


def _span(since: datetime, until: datetime) -> str:
    return f"from {since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


if __name__ == "__main__":
    sys.exit(main())
