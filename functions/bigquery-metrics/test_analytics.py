"""The analytics queries (queries/*.sql) on bqemulator, against answers worked out independently.

Two histories: a small hand-made one whose answers are written out below (worked by hand),
and the synthetic history `make report` uses, whose answers are computed here in plain
Python from the rows. Both are seeded with duplicate rows, which the *_latest views must hide.
"""

from __future__ import annotations

import math
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from tests.support import ROOT
from tools.bigquery import bigquery_client, run_query
from tools.local.emulators import Service
from tools.ops.report.history import synthetic_history
from tools.ops.report.questions import QUESTIONS, ask_all, print_answers, trend_summary
from tools.ops.report.seed import Seeded, seed, seed_rows
from tools.tables import format_table

SINCE = datetime(2025, 6, 1, tzinfo=UTC)
UNTIL = datetime(2025, 6, 8, tzinfo=UTC)
QUERY_FILES = sorted((ROOT / "queries").glob("*.sql"))


def t(text: str) -> datetime:
    return datetime.fromisoformat(f"2025-{text}:00+00:00")


def iso(when: datetime | None) -> str | None:
    return when.isoformat().replace("+00:00", "Z") if when else None


class Dataset:
    """A seeded dataset on the emulator and a way to ask it a question."""

    def __init__(self, full_id: str, url: str) -> None:
        self.project, self.dataset = full_id.split(".")
        self.client = bigquery_client(self.project, url)

    def seed(self, seeded: Seeded) -> None:
        seed(self.client, self.project, self.dataset, seeded)

    def ask(self, name: str, since: datetime = SINCE, until: datetime = UNTIL, top_n: int = 5) -> list[dict[str, Any]]:
        return run_query(
            self.client, name, project=self.project, dataset=self.dataset, since=since, until=until, top_n=top_n
        )


@pytest.fixture
def bq(bigquery_dataset: str, bigquery_emulator: Service) -> Dataset:
    return Dataset(bigquery_dataset, bigquery_emulator.url)


# --- a hand-made history -----------------------------------------------------------
#
# Pipeline "checkout", default branch main. Builds on main, in the order they finished:
#   #1 passed 06-01 10:00  600 s (wait 10)     #6 passed but blocked 06-02 09:00  200 s (50)
#   #2 failed 06-01 11:00  300 s (20)          #7 failed 06-02 10:00  100 s (60)
#   #3 failed 06-01 12:00  400 s (30)          #8 passed 06-02 10:30  700 s (70)
#   #4 canceled before it started 06-01 12:30  #9 failed 06-03 08:00  800 s (80)
#   #5 passed 06-01 13:00  500 s (40)
# feature/x: #10 passed 06-02 15:00 1000 s (5), #11 failed 06-02 16:00 900 s (15).
# Outside the window: #12 failed on main 05-20, with a very slow lint job.


def build_body(
    number: int,
    state: str,
    finished: str,
    duration: float | None,
    wait: float | None,
    *,
    branch: str = "main",
    blocked: bool = False,
    event: str = "build.finished",
) -> dict[str, Any]:
    finished_at = t(finished)
    started_at = finished_at - timedelta(seconds=duration) if duration is not None else None
    scheduled_at = started_at - timedelta(seconds=wait) if started_at and wait is not None else finished_at
    return {
        "event": event,
        "build": {
            "id": f"build-{number}",
            "number": number,
            "state": state,
            "blocked": blocked,
            "blocked_state": "passed" if blocked else "",
            "branch": branch,
            "message": f"Change {number}",
            "scheduled_at": iso(scheduled_at),
            "created_at": iso(scheduled_at),
            "started_at": iso(started_at),
            "finished_at": iso(finished_at),
        },
        "pipeline": {"slug": "checkout", "name": "Checkout", "default_branch": "main"},
    }


def job_body(
    build: int,
    step: str,
    state: str,
    finished: str,
    run: float,
    wait: float,
    *,
    queue: str | None = "default",
    soft_failed: bool = False,
    shard: int | None = None,
    attempt: int = 0,
) -> dict[str, Any]:
    finished_at = t(finished)
    started_at = finished_at - timedelta(seconds=run)
    suffix = f"{build}-{step}-{shard}-{attempt}"
    return {
        "event": "job.finished",
        "job": {
            "id": f"job-{suffix}",
            "type": "script",
            "name": f":{step}: {step.title()}",
            "step_key": step,
            "state": state,
            "exit_status": 0 if state == "passed" else 1,
            "soft_failed": soft_failed,
            "agent_query_rules": [f"queue={queue}"] if queue else [],  # no rule: the default queue
            "runnable_at": iso(started_at - timedelta(seconds=wait)),
            "started_at": iso(started_at),
            "finished_at": iso(finished_at),
            "retries_count": attempt or None,
            "retry_type": "automatic" if attempt else None,
            "parallel_group_index": shard,
            "parallel_group_total": 2 if shard is not None else None,
        },
        "build": {"id": f"build-{build}", "number": build, "branch": "main", "state": "running"},
        "pipeline": {"slug": "checkout", "name": "Checkout", "default_branch": "main"},
    }


HAND_MADE = [
    build_body(1, "passed", "06-01T10:00", 600, 10),
    build_body(2, "failed", "06-01T11:00", 300, 20),
    build_body(3, "failed", "06-01T12:00", 400, 30),
    build_body(4, "canceled", "06-01T12:30", None, None),
    build_body(5, "passed", "06-01T13:00", 500, 40),
    build_body(6, "passed", "06-02T09:00", 200, 50, blocked=True),
    build_body(7, "failed", "06-02T10:00", 100, 60),
    build_body(8, "passed", "06-02T10:30", 700, 70),
    build_body(9, "failed", "06-03T08:00", 800, 80),
    build_body(10, "passed", "06-02T15:00", 1000, 5, branch="feature/x"),
    build_body(11, "failed", "06-02T16:00", 900, 15, branch="feature/x"),
    build_body(12, "failed", "05-20T10:00", 300, 10),
    # #1: a soft failure, retried, passed: not flaky.
    job_body(1, "lint", "passed", "06-01T09:52", 50, 4),
    job_body(1, "test", "failed", "06-01T09:55", 30, 3, soft_failed=True),
    job_body(1, "test", "passed", "06-01T09:59", 210, 4, attempt=1),
    # #2: test failed for real.
    job_body(2, "lint", "passed", "06-01T10:56", 60, 5),
    job_body(2, "test", "failed", "06-01T10:59", 200, 10),
    job_body(2, "notify", "passed", "06-01T10:59", 5, 1, queue=None),
    # #5: test failed, then passed on its retry: flaky.
    job_body(5, "lint", "passed", "06-01T12:52", 70, 6),
    job_body(5, "test", "failed", "06-01T12:55", 100, 7),
    job_body(5, "test", "passed", "06-01T12:59", 220, 8, attempt=1),
    # #8: two e2e shards on macOS agents; shard 0 failed, then passed: flaky.
    job_body(8, "lint", "passed", "06-02T10:20", 80, 7),
    job_body(8, "test", "passed", "06-02T10:25", 240, 9),
    job_body(8, "e2e", "failed", "06-02T10:21", 50, 100, queue="macos", shard=0),
    job_body(8, "e2e", "passed", "06-02T10:29", 400, 200, queue="macos", shard=0, attempt=1),
    job_body(8, "e2e", "passed", "06-02T10:28", 380, 300, queue="macos", shard=1),
    # #9: test failed, retried, failed again: broken, not flaky.
    job_body(9, "test", "failed", "06-03T07:50", 150, 11),
    job_body(9, "test", "failed", "06-03T07:59", 160, 12, attempt=1),
    # #12 is outside the window.
    job_body(12, "lint", "passed", "05-20T09:59", 9999, 999),
]


@pytest.fixture
def hand_made(bq: Dataset) -> Dataset:
    bq.seed(seed_rows(HAND_MADE, duplicate_every=1))  # every row twice: the views must hide it
    return bq


def by(rows: Iterable[Mapping[str, Any]], *keys: str) -> dict[Any, dict[str, Any]]:
    return {tuple(row[k] for k in keys) if len(keys) > 1 else row[keys[0]]: dict(row) for row in rows}


def test_build_health_on_the_hand_made_history(hand_made: Dataset) -> None:
    rows = by(hand_made.ask("build_health"), "pipeline", "branch")
    assert set(rows) == {("checkout", "main"), ("checkout", "feature/x")}
    main, feature = rows["checkout", "main"], rows["checkout", "feature/x"]
    # 9 builds: #1-#9; the blocked #6 and the canceled #4 have no verdict.
    assert (main["builds"], main["passed"], main["failed"]) == (9, 3, 4)
    assert main["failure_rate"] == pytest.approx(4 / 7)
    # Durations of the 7 builds with a verdict: 100 300 400 500 600 700 800.
    assert main["p50_duration_seconds"] == pytest.approx(500)
    assert main["p95_duration_seconds"] == pytest.approx(770)  # 700 + 0.7 × 100
    # Waits of the 8 builds that started: 10 20 ... 80.
    assert main["p50_wait_seconds"] == pytest.approx(45)
    assert main["p95_wait_seconds"] == pytest.approx(76.5)
    assert (feature["builds"], feature["passed"], feature["failed"]) == (2, 1, 1)
    assert feature["failure_rate"] == pytest.approx(0.5)
    assert (feature["p50_duration_seconds"], feature["p95_duration_seconds"]) == (
        pytest.approx(950),
        pytest.approx(995),
    )
    assert (feature["p50_wait_seconds"], feature["p95_wait_seconds"]) == (pytest.approx(10), pytest.approx(14.5))


def test_time_to_recovery_on_the_hand_made_history(hand_made: Dataset) -> None:
    (row,) = hand_made.ask("time_to_recovery")
    # #2 → #5: 2 h (the canceled #4 does not end it); #7 → #8: 30 min; #9 is still red.
    assert (row["pipeline"], row["branch"], row["incidents"], row["recovered"]) == ("checkout", "main", 3, 2)
    assert row["mean_time_to_recovery_seconds"] == pytest.approx((7200 + 1800) / 2)
    assert row["longest_time_to_recovery_seconds"] == pytest.approx(7200)
    assert row["still_failing"] is True


def test_slowest_steps_on_the_hand_made_history(hand_made: Dataset) -> None:
    rows = hand_made.ask("slowest_steps", top_n=2)
    assert [(r["pipeline"], r["step"]) for r in rows] == [("checkout", "e2e"), ("checkout", "test")]
    e2e, test = rows
    assert (e2e["runs"], e2e["failed"], e2e["name"]) == (3, 1, ":e2e: E2E")
    assert (e2e["p50_run_seconds"], e2e["p95_run_seconds"]) == (pytest.approx(380), pytest.approx(398))
    assert (e2e["p50_wait_seconds"], e2e["p95_wait_seconds"]) == (pytest.approx(200), pytest.approx(290))
    # test ran 8 times (30 100 150 160 200 210 220 240); 5 failed, the soft failure included.
    assert (test["runs"], test["failed"]) == (8, 5)
    assert (test["p50_run_seconds"], test["p95_run_seconds"]) == (pytest.approx(180), pytest.approx(233))
    assert (test["p50_wait_seconds"], test["p95_wait_seconds"]) == (pytest.approx(8.5), pytest.approx(11.65))
    (lint,) = [r for r in hand_made.ask("slowest_steps", top_n=3) if r["step"] == "lint"]
    assert (lint["runs"], lint["p50_run_seconds"], lint["p95_run_seconds"]) == (4, 65, pytest.approx(78.5))


def test_flaky_steps_on_the_hand_made_history(hand_made: Dataset) -> None:
    rows = hand_made.ask("flaky_steps")
    assert [r["step"] for r in rows] == ["e2e", "test"]  # same flaky builds; e2e's rate is higher
    e2e, test = rows
    assert (e2e["builds"], e2e["flaky_builds"], e2e["flake_rate"], e2e["retries"]) == (1, 1, 1.0, 1)
    assert e2e["last_flaky_at"] == t("06-02T10:29")
    # 5 builds ran test; only #5 was flaky (#1's failure was soft, #9 never passed).
    assert (test["builds"], test["flaky_builds"], test["flake_rate"], test["retries"]) == (5, 1, 0.2, 1)
    assert test["last_flaky_at"] == t("06-01T12:59")


def test_queue_wait_on_the_hand_made_history(hand_made: Dataset) -> None:
    rows = hand_made.ask("queue_wait")
    assert [r["queue"] for r in rows] == ["macos", "default"]
    macos, default = rows
    assert (macos["jobs"], macos["p50_wait_seconds"], macos["p95_wait_seconds"]) == (3, 200, pytest.approx(290))
    assert macos["longest_wait_seconds"] == pytest.approx(300)
    assert macos["agent_hours"] == pytest.approx(830 / 3600)
    # 13 jobs, the one without a queue rule included: 1 3 4 4 5 6 7 7 8 9 10 11 12
    assert (default["jobs"], default["p50_wait_seconds"], default["p95_wait_seconds"]) == (
        13,
        pytest.approx(7),
        pytest.approx(11.4),
    )
    assert default["agent_hours"] == pytest.approx(
        (50 + 30 + 210 + 60 + 200 + 5 + 70 + 100 + 220 + 80 + 240 + 150 + 160) / 3600
    )


def test_duration_trend_on_the_hand_made_history(hand_made: Dataset) -> None:
    rows = hand_made.ask("duration_trend")
    assert [(r["day"], r["builds"], r["failed"]) for r in rows] == [
        (date(2025, 6, 1), 4, 2),
        (date(2025, 6, 2), 2, 1),  # the blocked #6 has no verdict; feature/x is not the default branch
        (date(2025, 6, 3), 1, 1),
    ]
    assert [r["p50_duration_seconds"] for r in rows] == [pytest.approx(450), pytest.approx(400), pytest.approx(800)]
    assert [r["p95_duration_seconds"] for r in rows] == [pytest.approx(585), pytest.approx(670), pytest.approx(800)]


def test_the_window_is_half_open(hand_made: Dataset) -> None:
    rows = hand_made.ask("build_health", since=t("06-01T11:00"), until=t("06-01T13:00"))
    assert [(r["builds"], r["passed"], r["failed"]) for r in rows] == [(3, 0, 2)]  # #2, #3, #4; not #5
    assert hand_made.ask("build_health", since=t("06-10T00:00"), until=t("06-11T00:00")) == []


def test_the_default_branch_comes_from_each_pipeline(bq: Dataset) -> None:
    bodies = [build_body(1, "failed", "06-01T10:00", 100, 1), build_body(2, "passed", "06-01T11:00", 100, 1)]
    for body in bodies:
        body["pipeline"] |= {"slug": "mobile", "default_branch": "develop"}
        body["build"] |= {"id": f"mobile-{body['build']['number']}", "branch": "develop"}
    bodies.append(build_body(3, "failed", "06-01T12:00", 100, 1))  # checkout's main
    bq.seed(seed_rows(bodies))
    rows = by(bq.ask("time_to_recovery"), "pipeline")
    assert (rows["mobile"]["branch"], rows["mobile"]["recovered"]) == ("develop", 1)
    assert rows["mobile"]["mean_time_to_recovery_seconds"] == pytest.approx(3600)
    assert (rows["checkout"]["incidents"], rows["checkout"]["still_failing"]) == (1, True)


# --- the synthetic history, answers computed in Python ---------------------------------


def parse(value: str | None) -> datetime | None:
    return datetime.fromisoformat(value.replace("Z", "+00:00")) if value else None


def percentile_cont(values: Iterable[float | None], fraction: float) -> float | None:
    """Linear interpolation between the closest ranks (BigQuery's PERCENTILE_CONT); nulls ignored."""
    ordered = sorted(v for v in values if v is not None)
    if not ordered:
        return None
    position = (len(ordered) - 1) * fraction
    low, high = math.floor(position), math.ceil(position)
    return ordered[low] + (ordered[high] - ordered[low]) * (position - low)


def latest(rows: Iterable[tuple[str, dict[str, Any]]], key: str) -> list[dict[str, Any]]:
    """One row per ``key``: latest finish, then latest insert (what the *_latest views promise)."""
    best: dict[str, dict[str, Any]] = {}
    for _, row in rows:
        current = best.get(row[key])
        rank = (parse(row["finished_at"]) or datetime.min.replace(tzinfo=UTC), parse(row["inserted_at"]))
        if current is None or rank > (
            parse(current["finished_at"]) or datetime.min.replace(tzinfo=UTC),
            parse(current["inserted_at"]),
        ):
            best[row[key]] = row
    return list(best.values())


def outcome(build: Mapping[str, Any]) -> str | None:
    if build["state"] == "failed":
        return "failed"
    return "blocked" if build["blocked"] else build["state"]


def in_window(row: Mapping[str, Any]) -> bool:
    finished = parse(row["finished_at"])
    return finished is not None and HISTORY_SINCE <= finished < HISTORY_UNTIL


HISTORY_UNTIL = datetime(2025, 6, 13, tzinfo=UTC)
HISTORY_SINCE = HISTORY_UNTIL - timedelta(days=8)  # the first two of the ten days stay outside


@pytest.fixture(scope="module")
def history() -> Seeded:
    return seed_rows(synthetic_history(seed=3, days=10, end=HISTORY_UNTIL), duplicate_every=7)


@pytest.fixture
def synthetic(bq: Dataset, history: Seeded) -> Dataset:
    bq.seed(history)
    return bq


def ask_synthetic(bq: Dataset, name: str, top_n: int = 5) -> list[dict[str, Any]]:
    return bq.ask(name, since=HISTORY_SINCE, until=HISTORY_UNTIL, top_n=top_n)


def builds_in_window(history: Seeded) -> list[dict[str, Any]]:
    rows = [row for row in latest(history.rows("builds"), "build_id") if in_window(row)]
    infrastructure = infrastructure_failed_builds(latest(history.rows("jobs"), "job_id"))
    return [
        {
            **row,
            "outcome": outcome(row),
            "infrastructure_failed": outcome(row) == "failed" and row["build_id"] in infrastructure,
        }
        for row in rows
    ]


def infrastructure_failed_builds(jobs: Iterable[dict[str, Any]]) -> set[str]:
    """Builds in which a step's last attempt failed because of the machine."""
    chains = grouped(
        (j for j in jobs if j["job_type"] == "script"),
        lambda r: (r["build_id"], r["step_key"] or r["name"], r["parallel_group_index"]),
    )
    failed = set()
    for (build_id, _, _), attempts in chains.items():
        last = max(attempts, key=lambda r: parse(r["finished_at"]) or datetime.min.replace(tzinfo=UTC))
        if last["infrastructure_failure"] and not last["soft_failed"]:
            failed.add(build_id)
    return failed


def jobs_in_window(history: Seeded) -> list[dict[str, Any]]:
    return [row for row in latest(history.rows("jobs"), "job_id") if in_window(row) and row["job_type"] == "script"]


def grouped(rows: Iterable[dict[str, Any]], key: Callable[[dict[str, Any]], Any]) -> dict[Any, list[dict[str, Any]]]:
    groups: dict[Any, list[dict[str, Any]]] = defaultdict(list)
    for row in rows:
        groups[key(row)].append(row)
    return groups


def assert_rows(actual: list[dict[str, Any]], expected: list[dict[str, Any]]) -> None:
    """Same rows in the same order; floats to 1e-6."""
    assert len(actual) == len(expected)
    for got, want in zip(actual, expected, strict=True):
        got = {k: got[k] for k in want}
        assert got == {k: pytest.approx(v, rel=1e-9, abs=1e-6) if isinstance(v, float) else v for k, v in want.items()}


def test_synthetic_history_is_rich_enough_to_test_against(history: Seeded) -> None:
    builds = builds_in_window(history)
    outcomes = {b["outcome"] for b in builds}
    assert {"passed", "failed", "canceled", "blocked"} <= outcomes
    assert len({b["pipeline_slug"] for b in builds}) == 5  # three pipelines and two deploy pipelines
    assert history.duplicates > 0
    assert any(j["retry_type"] == "automatic" for _, j in history.rows("jobs"))
    assert any(j["failure_cause"] == "agent_lost" for _, j in history.rows("jobs"))
    assert any(b["infrastructure_failed"] for b in builds)
    assert {"agent.connected", "agent.lost", "agent.disconnected", "agent.stopped"} <= {
        e["event_type"] for _, e in history.rows("events_raw")
    }
    assert synthetic_history(seed=3, days=2) == synthetic_history(seed=3, days=2)  # deterministic


def test_build_health_on_the_synthetic_history(synthetic: Dataset, history: Seeded) -> None:
    expected = []
    for (pipeline, branch), rows in grouped(
        builds_in_window(history), lambda r: (r["pipeline_slug"], r["branch"])
    ).items():
        passed = sum(r["outcome"] == "passed" for r in rows)
        failed = sum(r["outcome"] == "failed" for r in rows)
        verdict = [r["duration_seconds"] for r in rows if r["outcome"] in ("passed", "failed")]
        waits = [r["wait_seconds"] for r in rows]
        expected.append(
            {
                "pipeline": pipeline,
                "branch": branch,
                "builds": len(rows),
                "passed": passed,
                "failed": failed,
                "failure_rate": failed / (passed + failed) if passed + failed else None,
                "infrastructure_failed": sum(r["infrastructure_failed"] for r in rows),
                "p50_duration_seconds": percentile_cont(verdict, 0.5),
                "p95_duration_seconds": percentile_cont(verdict, 0.95),
                "p50_wait_seconds": percentile_cont(waits, 0.5),
                "p95_wait_seconds": percentile_cont(waits, 0.95),
            }
        )
    expected.sort(key=lambda r: (r["pipeline"], -r["builds"], r["branch"]))
    actual = ask_synthetic(synthetic, "build_health")
    # Branches with equal counts may come in either order only if they tie on the branch too: they cannot.
    assert_rows(actual, expected)


def test_time_to_recovery_on_the_synthetic_history(synthetic: Dataset, history: Seeded) -> None:
    expected = []
    default = [b for b in builds_in_window(history) if b["branch"] == (b["default_branch"] or "main")]
    for pipeline, rows in grouped(default, lambda r: r["pipeline_slug"]).items():
        verdicts = sorted(
            (r for r in rows if r["outcome"] in ("passed", "failed")),
            key=lambda r: (parse(r["finished_at"]), r["number"]),
        )
        started: datetime | None = None
        incidents, recoveries = 0, []
        for build in verdicts:
            finished = parse(build["finished_at"])
            assert finished is not None
            if build["outcome"] == "failed" and started is None:
                started, incidents = finished, incidents + 1
            elif build["outcome"] == "passed" and started is not None:
                recoveries.append((finished - started).total_seconds())
                started = None
        if incidents:
            expected.append(
                {
                    "pipeline": pipeline,
                    "branch": rows[0]["branch"],
                    "incidents": incidents,
                    "recovered": len(recoveries),
                    "mean_time_to_recovery_seconds": sum(recoveries) / len(recoveries) if recoveries else None,
                    "longest_time_to_recovery_seconds": max(recoveries) if recoveries else None,
                    "still_failing": started is not None,
                }
            )
    expected.sort(key=lambda r: (-(r["mean_time_to_recovery_seconds"] or -1), r["pipeline"]))
    assert len(expected) >= 3
    assert_rows(ask_synthetic(synthetic, "time_to_recovery"), expected)


def _step(row: Mapping[str, Any]) -> Any:
    return row["step_key"] or row["name"]


def test_slowest_steps_on_the_synthetic_history(synthetic: Dataset, history: Seeded) -> None:
    ran = [j for j in jobs_in_window(history) if j["run_seconds"] is not None]
    steps = []
    for (pipeline, step), rows in grouped(ran, lambda r: (r["pipeline_slug"], _step(r))).items():
        runs = [r["run_seconds"] for r in rows]
        waits = [r["wait_seconds"] for r in rows]
        steps.append(
            {
                "pipeline": pipeline,
                "step": step,
                "runs": len(rows),
                "failed": sum(r["state"] == "failed" for r in rows),
                "p50_run_seconds": percentile_cont(runs, 0.5),
                "p95_run_seconds": percentile_cont(runs, 0.95),
                "p50_wait_seconds": percentile_cont(waits, 0.5),
                "p95_wait_seconds": percentile_cont(waits, 0.95),
            }
        )
    expected = []
    for _, rows in sorted(grouped(steps, lambda r: r["pipeline"]).items()):
        expected += sorted(rows, key=lambda r: (-r["p95_run_seconds"], r["step"]))[:2]
    assert_rows(ask_synthetic(synthetic, "slowest_steps", top_n=2), expected)


def test_flaky_steps_on_the_synthetic_history(synthetic: Dataset, history: Seeded) -> None:
    chains = grouped(
        jobs_in_window(history), lambda r: (r["pipeline_slug"], _step(r), r["build_id"], r["parallel_group_index"])
    )
    per_step: dict[tuple[str, str], dict[str, Any]] = {}
    for (pipeline, step, build_id, _), attempts in chains.items():
        last = max(attempts, key=lambda r: parse(r["finished_at"]) or datetime.min.replace(tzinfo=UTC))
        hard = any(
            a["state"] == "failed" and not a["soft_failed"] and not a["infrastructure_failure"] for a in attempts
        )
        flaky = hard and last["state"] == "passed"
        entry = per_step.setdefault((pipeline, step), {"builds": set(), "flaky": set(), "retries": 0, "last": None})
        entry["builds"].add(build_id)
        if flaky:
            entry["flaky"].add(build_id)
            entry["retries"] += len(attempts) - 1
            finished = parse(last["finished_at"])
            entry["last"] = max(filter(None, [entry["last"], finished]))
    expected = [
        {
            "pipeline": pipeline,
            "step": step,
            "builds": len(e["builds"]),
            "flaky_builds": len(e["flaky"]),
            "flake_rate": len(e["flaky"]) / len(e["builds"]),
            "retries": e["retries"],
            "last_flaky_at": e["last"],
        }
        for (pipeline, step), e in per_step.items()
        if e["flaky"]
    ]
    expected.sort(key=lambda r: (-r["flaky_builds"], -r["flake_rate"], r["pipeline"], r["step"]))
    assert len(expected) >= 2
    assert_rows(ask_synthetic(synthetic, "flaky_steps"), expected)


def test_queue_wait_on_the_synthetic_history(synthetic: Dataset, history: Seeded) -> None:
    started = [j for j in jobs_in_window(history) if j["started_at"] is not None]
    expected = [
        {
            "queue": queue,
            "jobs": len(rows),
            "p50_wait_seconds": percentile_cont([r["wait_seconds"] for r in rows], 0.5),
            "p95_wait_seconds": percentile_cont([r["wait_seconds"] for r in rows], 0.95),
            "longest_wait_seconds": max(r["wait_seconds"] for r in rows),
            "agent_hours": sum(r["run_seconds"] for r in rows) / 3600,
        }
        for queue, rows in grouped(started, lambda r: r["queue"] or "default").items()
    ]
    expected.sort(key=lambda r: (-r["p95_wait_seconds"], r["queue"]))
    assert [r["queue"] for r in expected] == ["macos", "docker", "default", "deploy"]
    assert_rows(ask_synthetic(synthetic, "queue_wait"), expected)


def test_duration_trend_on_the_synthetic_history(synthetic: Dataset, history: Seeded) -> None:
    default = [
        b
        for b in builds_in_window(history)
        if b["branch"] == (b["default_branch"] or "main") and b["outcome"] in ("passed", "failed")
    ]
    expected = []
    for (pipeline, day), rows in grouped(default, lambda r: (r["pipeline_slug"], r["finished_at"][:10])).items():
        durations = [r["duration_seconds"] for r in rows]
        expected.append(
            {
                "pipeline": pipeline,
                "day": date.fromisoformat(day),  # finished_at is UTC: its date is the UTC day
                "builds": len(rows),
                "failed": sum(r["outcome"] == "failed" for r in rows),
                "p50_duration_seconds": percentile_cont(durations, 0.5),
                "p95_duration_seconds": percentile_cont(durations, 0.95),
            }
        )
    expected.sort(key=lambda r: (r["pipeline"], r["day"]))
    assert_rows(ask_synthetic(synthetic, "duration_trend"), expected)


def test_duplicates_change_no_answer(bq: Dataset) -> None:
    once = seed_rows(HAND_MADE)
    bq.seed(once)
    answers = {q.name: bq.ask(q.name) for q in QUESTIONS}
    assert all(rows for name, rows in answers.items() if not name.startswith(("dora_", "agent_")))  # no deploys
    bq.seed(once)  # every row a second time, as redeliveries past the claim would write them
    bq.seed(seed_rows(HAND_MADE, duplicate_every=2))  # and again, some with a later insert time
    for question in QUESTIONS:
        assert_rows(bq.ask(question.name), answers[question.name])  # sums may round differently


# --- the SQL files ---------------------------------------------------------------------


@pytest.mark.parametrize("path", QUERY_FILES, ids=[p.stem for p in QUERY_FILES])
def test_each_query_file_is_a_question_the_report_asks(path: Path) -> None:
    assert path.stem in {q.name for q in QUESTIONS}
    sql = path.read_text()
    assert sql.startswith("-- "), "start with a comment that says what the question is"
    assert set(re.findall(r"\$\{(\w+)\}", sql)) == {"project", "bigquery_dataset"}
    tables = set(re.findall(r"\$\{bigquery_dataset\}\.(\w+)`", sql))
    assert tables and tables <= {"builds_latest", "jobs_latest", "events", "deployments"}, "queries read the views"
    # bqemulator counts an @name in a comment as a parameter: keep them out of comments.
    assert not [line for line in sql.splitlines() if line.lstrip().startswith("--") and "@" in line]


def test_views_use_only_the_placeholders_terraform_fills() -> None:
    views = ROOT / "queries" / "views"
    assert sorted(str(v.relative_to(views)) for v in views.rglob("*.sql")) == [
        "builds_latest.sql",
        "events.sql",
        "jobs_latest.sql",
        "on_views/deployments.sql",  # reads builds_latest: Terraform creates it once that exists
    ]
    for view in views.rglob("*.sql"):
        sql = view.read_text()
        assert (
            {"project", "bigquery_dataset"}
            <= set(re.findall(r"\$\{(\w+)\}", sql))
            <= {
                "project",
                "bigquery_dataset",
                "deploy_pipelines_regex",
            }
        )
        reads_views = bool(re.search(r"\.(builds_latest|jobs_latest|events)`", sql))
        assert reads_views == (view.parent.name == "on_views"), view
        assert "%{" not in sql


def test_print_answers_renders_every_question(hand_made: Dataset, capsys: Any) -> None:
    results = ask_all(
        hand_made.client, project=hand_made.project, dataset=hand_made.dataset, since=SINCE, until=UNTIL, top_n=5
    )
    print_answers(results)
    out = capsys.readouterr().out
    for question in QUESTIONS:
        assert f"(queries/{question.name}.sql)" in out
        assert results[question.name] or question.name.startswith(("dora_", "agent_"))  # no deploys, no agents
    assert "57.1%" in out  # main's failure rate, 4 of 7
    assert "8m20s" in out  # its p50 duration, 500 s


def test_format_table_aligns_and_formats() -> None:
    columns = next(q for q in QUESTIONS if q.name == "build_health").columns
    row = {"pipeline": "api", "branch": None, "builds": 12, "failure_rate": 0.125, "p50_duration_seconds": 3725.4}
    header, rule, line = format_table([row], columns)
    assert header.split()[:3] == ["pipeline", "branch", "builds"]
    assert len(rule) == len(header)
    assert "12.5%" in line and "1h2m5s" in line and line.split()[1] == "-"
    assert format_table([], columns)[-1] == "(no rows)"


def test_trend_summary_compares_the_first_and_last_week() -> None:
    rows = [
        {"pipeline": "p", "day": date(2025, 6, d), "builds": 2, "failed": 0, "p50_duration_seconds": 100.0 + d}
        for d in range(1, 15)
    ]
    (summary,) = trend_summary(rows)
    assert (summary["days"], summary["builds"], summary["first_week"], summary["last_week"]) == (14, 28, 104, 111)
    assert summary["change"] == pytest.approx(7 / 104)
    assert summary["sparkline"][0] == "▁" and summary["sparkline"][-1] == "█"
