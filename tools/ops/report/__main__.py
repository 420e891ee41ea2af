"""``make report``: every question in ``queries/*.sql`` over a window, as text tables, one PNG per
pipeline of its default-branch duration trend, and one self-contained HTML page
(``build/report/index.html``).

- ``BIGQUERY_PROJECT`` set: reads that project's dataset (``BIGQUERY_DATASET``, default
  ``buildkite``) with Application Default Credentials, over the last ``--days`` days.
  ``BIGQUERY_API_URL`` (or ``BIGQUERY_EMULATOR_HOST``) points it at an emulator instead.
- otherwise: starts its own bqemulator, creates the tables and views as Terraform does, and
  seeds them with the fixture webhooks plus a synthetic history (``history.py``) written by
  bigquery-metrics' own row builders. The seeded window ends on ``HISTORY_END``, so the output
  is the same on every run.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from tools import LOCAL_PROJECT, ROOT
from tools.bigquery import bigquery_client, create_dataset, emulator_url
from tools.ops.report import chromium
from tools.ops.report.history import DEPLOY_PIPELINES, HISTORY_DAYS, HISTORY_END, synthetic_history
from tools.ops.report.page import PageInfo, write_page
from tools.ops.report.questions import ask_all, draw_duration_trends, print_answers, relative
from tools.ops.report.seed import fixture_bodies, seed, seed_rows

OUT_DIR = ROOT / "build" / "report"
LOCAL_DATASET = "buildkite"


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.ops.report",
        description="Pipeline analytics from BigQuery (set BIGQUERY_PROJECT), or from a seeded local bqemulator.",
    )
    parser.add_argument("--days", type=int, default=HISTORY_DAYS, help="window length in days (default 28)")
    parser.add_argument("--until", help="window end, ISO-8601 (default: now; seeded: the history's end)")
    parser.add_argument("--top", type=int, default=5, help="slowest steps shown per pipeline")
    parser.add_argument("--charts", type=Path, default=OUT_DIR, help="where PNG charts go (default build/report)")
    parser.add_argument("--no-charts", action="store_true", help="skip the PNG charts")
    parser.add_argument("--page", type=Path, default=OUT_DIR / "index.html", help="the HTML page to write")
    parser.add_argument("--screenshot", type=Path, help="also save a PNG of the page as a phone shows it (chromium)")
    parser.add_argument("--seed", type=int, default=7, help="synthetic history seed (local mode)")
    parser.add_argument(
        "--history-days", type=int, default=HISTORY_DAYS, help="days of synthetic history to seed (local mode)"
    )
    parser.add_argument(
        "--deploy-pipelines",
        default=",".join(DEPLOY_PIPELINES),
        help="local mode: pipeline-slug globs that deploy, as Terraform's deploy_pipelines (default *-deploy)",
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
    project = os.environ.get("BIGQUERY_PROJECT", "")
    if project:
        return _report_configured(args, project)
    return _report_seeded(args)


def _report_configured(args: argparse.Namespace, project: str) -> int:
    from google.auth.exceptions import DefaultCredentialsError

    dataset = os.environ.get("BIGQUERY_DATASET", LOCAL_DATASET)
    since, until = _window(args, datetime.now(UTC))
    try:
        client = bigquery_client(project, emulator_url())
    except DefaultCredentialsError:
        print("No Google credentials: run `gcloud auth application-default login`.", file=sys.stderr)
        return 2
    print(f"BigQuery {project}.{dataset}: builds, jobs and events from {_span(since, until)}")
    _report(args, client, project, dataset, since, until, source=f"BigQuery {project}.{dataset}")
    return 0


def _report_seeded(args: argparse.Namespace) -> int:
    from tools.local import emulators

    since, until = _window(args, HISTORY_END)
    globs = [g.strip() for g in args.deploy_pipelines.split(",") if g.strip()]
    print("No BIGQUERY_PROJECT set: seeding a local bqemulator (fixture webhooks + a synthetic history).")
    with emulators.start_bigquery(ROOT / ".stack" / "logs", project=LOCAL_PROJECT) as service:
        client = bigquery_client(LOCAL_PROJECT, service.url)
        create_dataset(client, LOCAL_PROJECT, LOCAL_DATASET, globs)
        bodies = fixture_bodies() + synthetic_history(seed=args.seed, days=args.history_days, end=HISTORY_END)
        seeded = seed_rows(bodies, duplicate_every=25)
        seed(client, LOCAL_PROJECT, LOCAL_DATASET, seeded)
        counts = ", ".join(f"{len(rows)} {table} rows" for table, rows in sorted(seeded.tables.items()))
        print(
            f"Seeded {LOCAL_PROJECT}.{LOCAL_DATASET}: {counts} from {len(bodies)} webhooks ({seeded.duplicates}"
            " rows repeated, as a redelivery would; the views hide them). Deploy pipelines: " + ", ".join(globs)
        )
        print(f"Window: {_span(since, until)}")
        _report(args, client, LOCAL_PROJECT, LOCAL_DATASET, since, until, source="Synthetic demo history")
    return 0


def _report(
    args: argparse.Namespace, client: Any, project: str, dataset: str, since: datetime, until: datetime, *, source: str
) -> None:
    results = ask_all(client, project=project, dataset=dataset, since=since, until=until, top_n=args.top)
    print_answers(results)
    if not args.no_charts:
        charts = draw_duration_trends(results["duration_trend"], args.charts)
        if charts:
            print("\nDuration trend charts:")
            for path in charts:
                print(f"  {relative(path)}")
    page = write_page(results, PageInfo(source, since, until, datetime.now(UTC)), args.page)
    print(f"\nReport page: {relative(page)}")
    if args.screenshot:
        shot = chromium.screenshot(page, args.screenshot, width=390, height=1500, colours=64)  # a phone's first screens
        print(f"Screenshot: {relative(shot)}")


def _span(since: datetime, until: datetime) -> str:
    return f"{since:%Y-%m-%d %H:%M} to {until:%Y-%m-%d %H:%M} UTC"


if __name__ == "__main__":
    sys.exit(main())
