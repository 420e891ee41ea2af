"""bigquery-metrics: every event into ``events_raw``, and a ``builds`` or ``jobs`` row for each
finished build and job (the rows: ``metrics_rows.py``, shared with ``make backfill``).

BigQuery's insertId dedupe is best effort (and bqemulator has none), so it is not what keeps
duplicates away: the manifest's Firestore claim stops a redelivered event from inserting
again, the insertId (the event key) catches quick retries, an instance remembers which of an
event's rows it already wrote, and the ``events``/``builds_latest``/``jobs_latest`` views hide
whatever slips through.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import functions_framework
from bigquery_insert import TABLE_ID, insert_rows  # beside main.py: functions-framework puts this folder on sys.path
from metrics_rows import EVENTS_TABLE, rows_for

from buildkite_events import BuildkiteEvent, env, pubsub_handler

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
            if value and not TABLE_ID.match(value):
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
        match = TABLE_ID.match(self.builds_table)
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
