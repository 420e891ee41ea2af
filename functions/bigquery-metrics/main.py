"""bigquery-metrics: every event into ``events_raw``, and a ``builds`` or ``jobs`` row for each
finished build and job (the rows: ``metrics_rows.py``, shared with ``make backfill``).

BigQuery's insertId dedupe is best effort (and bqemulator has none), so it is not what keeps
duplicates away: the manifest's Firestore claim stops a redelivered event from inserting
again, the insertId (the event key) catches quick retries, an instance remembers which of an
event's rows it already wrote, and the ``events``/``builds_latest``/``jobs_latest`` views hide
whatever slips through.
"""

from __future__ import annotations

import contextvars
import re
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import quote

import functions_framework
from metrics_rows import EVENTS_TABLE, rows_for  # beside main.py: functions-framework puts this folder on sys.path

from buildkite_events import BuildkiteEvent, ConfigError, TransientError, env, pubsub_handler
from buildkite_events.http import raise_for

# project.dataset.table; a domain-scoped project ("example.com:proj") contains a dot itself.
_TABLE_ID = re.compile(r"^(?P<project>[a-z0-9.:-]+)\.(?P<dataset>\w+)\.(?P<table>[\w-]+)$", re.IGNORECASE)
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded"})  # 403s that mean "slow down"
_REMEMBERED_EVENTS = 256


@dataclass(frozen=True)
class Config:
    builds_table: str = env("BIGQUERY_TABLE", help="project.dataset.table for build rows")
    jobs_table: str = env("BIGQUERY_JOBS_TABLE", default="", help="default: a `jobs` table beside the builds table")
    events_table: str = env("BIGQUERY_EVENTS_TABLE", default="", help="default: `events_raw` beside the builds table")
    api_url: str = env("BIGQUERY_API_URL", default="", help="emulator endpoint; empty: Google's API")
    timeout_seconds: float = env("BIGQUERY_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        for name, value in (
            ("BIGQUERY_TABLE", self.builds_table),
            ("BIGQUERY_JOBS_TABLE", self.jobs_table),
            ("BIGQUERY_EVENTS_TABLE", self.events_table),
        ):
            if value and not _TABLE_ID.match(value):
                raise ValueError(f"{name} must look like project.dataset.table, got {value!r}")
        if self.timeout_seconds <= 0:
            raise ValueError("BIGQUERY_TIMEOUT_SECONDS must be positive")

    @property
    def jobs_table_id(self) -> str:
        return self.jobs_table or self._beside("jobs")

    @property
    def events_table_id(self) -> str:
        return self.events_table or self._beside(EVENTS_TABLE)

    def table_id(self, table: str) -> str:
        """Where rows for the schema ``table`` (builds, jobs, events_raw) go."""
        return {"builds": self.builds_table, "jobs": self.jobs_table_id, EVENTS_TABLE: self.events_table_id}[table]

    def _beside(self, table: str) -> str:
        match = _TABLE_ID.match(self.builds_table)
        assert match  # checked in __post_init__
        return f"{match['project']}.{match['dataset']}.{table}"


# event key -> tables its rows already went to, on this instance: a retry after a partial
# failure (events_raw written, builds refused for now) writes only what is missing.
_written: OrderedDict[str, set[str]] = OrderedDict()


@functions_framework.cloud_event
@pubsub_handler(Config)
def store_build_metrics(event: BuildkiteEvent, config: Config) -> str:
    rows = rows_for(event)
    done = _written.setdefault(event.key_hash, set())
    _written.move_to_end(event.key_hash)
    while len(_written) > _REMEMBERED_EVENTS:
        _written.popitem(last=False)
    insert_rows([(t, row) for t, row in rows.tables.items() if t not in done], event.key_hash, config, done)
    stored = " and ".join(sorted(rows.tables))
    detail = f"; no {_typed_table(event)} row: {rows.note}" if rows.note else ""
    return f"stored {_describe(event, rows.tables)} in {stored}{detail}"


def _typed_table(event: BuildkiteEvent) -> str:
    return "jobs" if event.kind == "job" else "builds"


def _describe(event: BuildkiteEvent, tables: Mapping[str, Mapping[str, Any]]) -> str:
    if "builds" in tables:
        row = tables["builds"]
        state = f"{row['state']}, blocked" if row["blocked"] else str(row["state"])
        return f"build {event.pipeline_slug}#{row['number']} ({state})"
    if "jobs" in tables:
        row = tables["jobs"]
        return f"job {row['name'] or row['job_id']} of {event.pipeline_slug}#{row['build_number']} ({row['state']})"
    return event.event_type


# --- BigQuery ----------------------------------------------------------------------

_GOOGLE_API = "https://bigquery.googleapis.com"
_SCOPES = ("https://www.googleapis.com/auth/bigquery.insertdata",)


def insert_rows(rows: list[tuple[str, Mapping[str, Any]]], row_id: str, config: Config, done: set[str]) -> None:
    """Each table's row, side by side (a typed row and its events_raw row cost one round trip of
    waiting, not two); every table that took its row joins ``done``, then the first failure is
    raised (a configuration error before a transient one: retrying would not fix it)."""

    def insert(table: str, row: Mapping[str, Any]) -> None:
        insert_row(config.table_id(table), row, row_id, config)
        done.add(table)

    if len(rows) < 2:
        for table, row in rows:
            insert(table, row)
        return
    from concurrent.futures import ThreadPoolExecutor  # loaded already by the server's threaded workers

    with ThreadPoolExecutor(len(rows)) as pool:  # each in a copy of this delivery's context: its log fields, its span
        futures = [pool.submit(contextvars.copy_context().run, insert, table, row) for table, row in rows]
    errors = [error for future in futures if (error := future.exception()) is not None]
    if errors:
        raise next((e for e in errors if isinstance(e, ConfigError)), errors[0])


def insert_row(table: str, row: Mapping[str, Any], row_id: str, config: Config) -> None:
    """Stream one row with ``tabledata.insertAll``; map every failure onto the ack/nack contract.

    Plain REST on google-auth's session: the official client would add ~0.3 s of imports to
    every cold start for this one call. One request per attempt: the handler retries a
    ``TransientError`` within its budget (the client's default retry waits up to ~600 s).
    """
    import requests
    from google.auth import exceptions as auth_exc

    match = _TABLE_ID.match(table)
    if not match:
        raise ConfigError(f"{table!r} is not project.dataset.table")
    project, dataset, name = (quote(match[k], safe=":") for k in ("project", "dataset", "table"))
    base = (config.api_url or _GOOGLE_API).rstrip("/")
    url = f"{base}/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{name}/insertAll"
    # ignoreUnknownValues false: a field the table lacks is refused, not silently dropped.
    body = {"rows": [{"insertId": row_id, "json": row}], "skipInvalidRows": False, "ignoreUnknownValues": False}
    try:
        response = _session(config.api_url).post(url, json=body, timeout=config.timeout_seconds)
    except (auth_exc.DefaultCredentialsError, auth_exc.RefreshError) as err:
        raise ConfigError(f"no usable Google credentials for BigQuery: {type(err).__name__}") from None
    except (requests.RequestException, auth_exc.TransportError) as err:  # timeouts, resets, refused
        raise TransientError(f"BigQuery insert into {table} failed: {type(err).__name__}") from None
    _check(response, table)


def _check(response: Any, table: str) -> None:
    answer = _json(response)
    if response.status_code == 200 and answer.get("insertErrors"):
        # A row BigQuery refuses (a field the table lacks, a wrong type) is refused again on every
        # retry: nack, so the message waits in the dead-letter queue until the schema is fixed.
        raise ConfigError(f"BigQuery refused the row for {table}: {describe_insert_errors(answer['insertErrors'])}")
    error: Mapping[str, Any] = answer["error"] if isinstance(answer.get("error"), Mapping) else {}
    reasons = {str(e["reason"]) for e in error.get("errors") or [] if isinstance(e, Mapping) and e.get("reason")}
    raise_for(
        response.status_code,
        f"BigQuery (insert into {table})",
        headers=response.headers,
        detail=f"({', '.join(sorted(reasons))})" if reasons else "",
        transient={response.status_code} if reasons & _RATE_LIMIT_REASONS else (),  # a 403 that means "slow down"
        config={
            404: f"{table} does not exist (create it with Terraform)",
            400: f"the insert was rejected: {str(error.get('message', ''))[:300]}",
            range(401, 404): "no permission to insert into it",
        },
    )


def describe_insert_errors(errors: Any) -> str:
    """``insertErrors`` → "invalid at number: Cannot convert value to integer; ..." (no row values)."""
    parts: list[str] = []
    for entry in errors if isinstance(errors, list) else []:
        for error in entry.get("errors", []) if isinstance(entry, Mapping) else []:
            if not isinstance(error, Mapping):
                continue
            where = f" at {error['location']}" if error.get("location") else ""
            parts.append(f"{error.get('reason', 'error')}{where}: {error.get('message', '')}".strip(": "))
    return "; ".join(dict.fromkeys(parts))[:800] or "unknown error"


def _json(response: Any) -> dict[str, Any]:
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


@cache
def _session(api_url: str) -> Any:
    """One HTTP session per instance: keep-alive, and (for Google's API) a refreshed token."""
    import requests

    if api_url:  # an emulator takes no credentials
        session = requests.Session()
    else:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=_SCOPES)
        session = AuthorizedSession(credentials)
    session.headers["User-Agent"] = "buildkite-fanout-bigquery-metrics"
    return session
