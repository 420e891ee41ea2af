"""BigQuery as Terraform makes it, and as the tools read and write it: the client, the dataset's
tables and views (``schemas/bigquery``, ``queries/views``), the questions in ``queries/*.sql``,
bigquery-metrics' own row builders, and what ``make demo`` shows of the dataset.

Used by the local stack, the tests and the operator tools (report, backfill) alike.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import sys
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from types import ModuleType
from typing import Any

from tools import ROOT
from tools.tables import Column, format_table

SCHEMA_DIR = ROOT / "schemas" / "bigquery"
QUERY_DIR = ROOT / "queries"
VIEW_DIR = QUERY_DIR / "views"
ROWS_MODULE = ROOT / "functions" / "bigquery-metrics" / "metrics_rows.py"
QUERY_TIMEOUT_SECONDS = 300.0
# Pipeline-slug globs, as Terraform's deploy_pipelines takes them: slug characters, * and ?.
_GLOB = re.compile(r"^[a-z0-9_*?-]+$")


def bigquery_client(project: str, api_url: str | None = None) -> Any:
    """The official client: Application Default Credentials, or anonymous against an emulator."""
    from google.cloud import bigquery

    if not api_url:
        return bigquery.Client(project=project, location=os.environ.get("BIGQUERY_LOCATION") or None)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=api_url)
    )


def emulator_url() -> str | None:
    """``BIGQUERY_API_URL``, else ``http://$BIGQUERY_EMULATOR_HOST``, else None (Google's API)."""
    host = os.environ.get("BIGQUERY_EMULATOR_HOST", "")
    return os.environ.get("BIGQUERY_API_URL") or (f"http://{host}" if host else None)


def table_specs() -> dict[str, dict[str, Any]]:
    """``schemas/bigquery/<table>.json`` by table name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.glob("*.json"))}


def deploy_pipelines_regex(globs: Iterable[str]) -> str:
    """Pipeline-slug globs as one anchored pattern, as terraform/bigquery.tf renders them.

    ``*`` is any run of characters, ``?`` one character; no globs: a pattern no slug matches.
    """
    globs = list(globs)
    for glob in globs:
        if not _GLOB.match(glob):
            raise ValueError(f"deploy pipeline glob {glob!r}: use slug characters (a-z, 0-9, - and _), * and ?")
    if not globs:
        return "^$"
    return "^(" + "|".join(glob.replace("*", ".*").replace("?", ".") for glob in globs) + ")$"


def render(sql: str, project: str, dataset: str, deploy_pipelines: Iterable[str] = ()) -> str:
    """Fill the placeholders Terraform fills in the views: ``${project}``, ``${bigquery_dataset}``
    and ``${deploy_pipelines_regex}`` (from the ``deploy_pipelines`` globs)."""
    text = (
        sql.replace("${project}", project)
        .replace("${bigquery_dataset}", dataset)
        .replace("${deploy_pipelines_regex}", deploy_pipelines_regex(deploy_pipelines))
    )
    if "${" in text:
        raise ValueError("SQL uses a placeholder other than ${project}, ${bigquery_dataset}, ${deploy_pipelines_regex}")
    return text


def create_dataset(client: Any, project: str, dataset: str, deploy_pipelines: Iterable[str] = ()) -> None:
    """The dataset, its tables (schema, partitioning, clustering) and views, as Terraform makes them."""
    from google.cloud import bigquery

    client.create_dataset(f"{project}.{dataset}", exists_ok=True, timeout=30)
    for name, spec in table_specs().items():
        fields = spec["fields"] if isinstance(spec, dict) else spec
        table = bigquery.Table(
            f"{project}.{dataset}.{name}", schema=[bigquery.SchemaField.from_api_repr(f) for f in fields]
        )
        if isinstance(spec, dict):
            table.description = spec.get("description")
            partitioning = spec.get("time_partitioning")
            if partitioning:
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=partitioning.get("type", "DAY"),
                    field=partitioning.get("field"),
                    expiration_ms=partitioning.get("expiration_ms"),
                )
            table.clustering_fields = spec.get("clustering")
        client.create_table(table, exists_ok=True, timeout=30)
    globs = list(deploy_pipelines)
    # Views over tables first, then views over views (BigQuery checks a view's query when it is made).
    for path in [*sorted(VIEW_DIR.glob("*.sql")), *sorted(VIEW_DIR.glob("on_views/*.sql"))]:
        view = bigquery.Table(f"{project}.{dataset}.{path.stem}")
        view.view_query = render(path.read_text(), project, dataset, globs)
        client.create_table(view, exists_ok=True, timeout=30)


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
    """Rows of ``queries/<name>.sql`` over the window [since, until)."""
    from google.cloud import bigquery

    sql = render((QUERY_DIR / f"{name}.sql").read_text(), project, dataset)
    values: dict[str, tuple[str, Any]] = {
        "since": ("TIMESTAMP", since),
        "until": ("TIMESTAMP", until),
        "top_n": ("INT64", top_n),
    }
    parameters = [bigquery.ScalarQueryParameter(k, kind, v) for k, (kind, v) in values.items() if f"@{k}" in sql]
    return select(client, sql, parameters)


def select(client: Any, sql: str, parameters: Sequence[Any] = ()) -> list[dict[str, Any]]:
    from google.cloud import bigquery

    config = bigquery.QueryJobConfig(query_parameters=list(parameters))
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


def metrics_rows() -> ModuleType:
    """``functions/bigquery-metrics/metrics_rows.py``: the row builders the function writes with."""
    name = ROWS_MODULE.stem  # the name the function's own import gives it: one module, not two
    if name in sys.modules:
        return sys.modules[name]
    spec = importlib.util.spec_from_file_location(name, ROWS_MODULE)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module
    spec.loader.exec_module(module)
    return module


# --- what `make demo` shows ----------------------------------------------------------

_BUILD_ROWS = (
    Column("pipeline_slug", "pipeline"),
    Column("number", "build", "count"),
    Column("outcome", "outcome"),
    Column("branch", "branch"),
    Column("duration_seconds", "duration", "seconds"),
    Column("wait_seconds", "wait", "seconds"),
    Column("finished_at", "finished", "time"),
)
_JOB_ROWS = (
    Column("build_number", "build", "count"),
    Column("name", "job"),
    Column("state", "state"),
    Column("queue", "queue"),
    Column("run_seconds", "run", "seconds"),
    Column("wait_seconds", "wait", "seconds"),
    Column("failure_cause", "cause"),
)
_EVENT_ROWS = (Column("event_type", "event"), Column("events", "events", "count"))
BUILD_HEALTH_COLUMNS = (  # the head of queries/build_health.sql's answer, as the demo and the report show it
    Column("pipeline", "pipeline"),
    Column("branch", "branch"),
    Column("builds", "builds", "count"),
    Column("passed", "passed", "count"),
    Column("failed", "failed", "count"),
    Column("failure_rate", "failure rate", "rate"),
)


def demo_lines(client: Any, project: str, dataset: str) -> list[str]:
    """What the demo's deliveries wrote: row counts, events by type, the deduplicated rows, build health."""

    def rows(sql: str) -> list[dict[str, Any]]:
        return select(client, render(sql, project, dataset))

    counts = rows(
        "SELECT"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.events_raw`) AS event_rows,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.events`) AS events,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.builds`) AS build_rows,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.builds_latest`) AS builds,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.jobs`) AS job_rows,"
        " (SELECT COUNT(*) FROM `${project}.${bigquery_dataset}.jobs_latest`) AS jobs"
    )[0]
    out = [
        f"BigQuery {project}.{dataset}: events_raw {counts['event_rows']} rows ({counts['events']} events),"
        f" builds {counts['build_rows']} rows ({counts['builds']} builds),"
        f" jobs {counts['job_rows']} rows ({counts['jobs']} jobs)",
    ]
    by_type = rows("SELECT event_type, COUNT(*) AS events FROM `${project}.${bigquery_dataset}.events` GROUP BY 1")
    builds = rows("SELECT * FROM `${project}.${bigquery_dataset}.builds_latest` ORDER BY number")
    jobs = rows("SELECT * FROM `${project}.${bigquery_dataset}.jobs_latest` ORDER BY finished_at")
    start, end = datetime(2000, 1, 1, tzinfo=UTC), datetime(2100, 1, 1, tzinfo=UTC)
    health = run_query(client, "build_health", project=project, dataset=dataset, since=start, until=end)
    for title, answer, columns in (
        ("events by type:", sorted(by_type, key=lambda row: str(row["event_type"])), _EVENT_ROWS),
        ("builds_latest:", builds, _BUILD_ROWS),
        ("jobs_latest:", jobs, _JOB_ROWS),
        ("queries/build_health.sql over every row:", health, BUILD_HEALTH_COLUMNS),
    ):
        out += [title, *(f"  {line}" for line in format_table(answer, columns))]
    return out
