"""bigquery-metrics: one BigQuery row per finished build and per finished job.

Rows follow ``schemas/bigquery/{builds,jobs}.json`` (Terraform creates the tables from the
same files; the tests hold the rows to them). BigQuery's insertId dedupe is best effort (and
bqemulator has none), so it is not what keeps duplicates away: the manifest's Firestore claim
stops a redelivered event from inserting again, the insertId (the event key) catches quick
retries, and the ``builds_latest``/``jobs_latest`` views hide whatever slips through.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from typing import Any
from urllib.parse import quote

import functions_framework

from buildkite_events import BuildkiteEvent, ConfigError, InvalidEvent, TransientError, env, pubsub_handler
from buildkite_events.http import raise_for
from buildkite_events.timeutil import isoformat

# project.dataset.table; a domain-scoped project ("example.com:proj") contains a dot itself.
_TABLE_ID = re.compile(r"^(?P<project>[a-z0-9.:-]+)\.(?P<dataset>\w+)\.(?P<table>[\w-]+)$", re.IGNORECASE)
_MAX_TEXT = 1024  # a commit title longer than this is noise in a metrics table
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded"})  # 403s that mean "slow down"


@dataclass(frozen=True)
class Config:
    builds_table: str = env("BIGQUERY_TABLE", help="project.dataset.table for build rows")
    jobs_table: str = env("BIGQUERY_JOBS_TABLE", default="", help="default: a `jobs` table beside the builds table")
    api_url: str = env("BIGQUERY_API_URL", default="", help="emulator endpoint; empty: Google's API")
    timeout_seconds: float = env("BIGQUERY_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        for name, value in (("BIGQUERY_TABLE", self.builds_table), ("BIGQUERY_JOBS_TABLE", self.jobs_table)):
            if value and not _TABLE_ID.match(value):
                raise ValueError(f"{name} must look like project.dataset.table, got {value!r}")
        if self.timeout_seconds <= 0:
            raise ValueError("BIGQUERY_TIMEOUT_SECONDS must be positive")

    @property
    def jobs_table_id(self) -> str:
        if self.jobs_table:
            return self.jobs_table
        match = _TABLE_ID.match(self.builds_table)
        assert match  # checked in __post_init__
        return f"{match['project']}.{match['dataset']}.jobs"


@functions_framework.cloud_event
@pubsub_handler(Config)
def store_build_metrics(event: BuildkiteEvent, config: Config) -> str:
    if event.kind == "build":
        table, row = config.builds_table, build_row(event)
        what = f"build {event.pipeline_slug}#{row['number']} ({_state_label(row)})"
    elif event.kind == "job":
        table, row = config.jobs_table_id, job_row(event)
        what = f"job {row['name'] or row['job_id']} of {event.pipeline_slug}#{row['build_number']} ({row['state']})"
    else:
        raise InvalidEvent(f"{event.event_type} carries no build or job metrics")
    insert_row(table, row, event.key_hash, config)
    return f"stored {what} in {table}"


def _state_label(row: Mapping[str, Any]) -> str:
    return f"{row['state']}, blocked" if row["blocked"] else str(row["state"])


# --- rows --------------------------------------------------------------------------


def build_row(event: BuildkiteEvent, *, now: datetime | None = None) -> dict[str, Any]:
    """The ``builds`` row for a build event; every column of the schema, null where unknown."""
    build = event.build
    if build is None or not build.id:
        raise InvalidEvent(f"{event.event_type} carries no build id")
    pipeline = event.pipeline
    return {
        "build_id": build.id,
        "organization": event.organization,
        "pipeline_slug": event.pipeline_slug,
        "pipeline_name": pipeline.name if pipeline else None,
        "default_branch": pipeline.default_branch if pipeline else None,
        "number": build.number,
        "state": build.state,
        "blocked": build.is_blocked,
        "blocked_state": build.blocked_state,
        "branch": build.branch,
        "tag": build.tag,
        "commit": build.commit,
        "source": build.source,
        "message": _clip(build.message_title),
        "creator": _clip(build.creator.display if build.creator else None),
        "author": _clip(build.author.display if build.author else None),
        "pull_request_id": build.pull_request.id if build.pull_request else None,
        "pull_request_base": build.pull_request.base if build.pull_request else None,
        "rebuilt_from_number": build.rebuilt_from_number,
        "cancel_reason": _clip(build.cancel_reason),
        "web_url": build.web_url,
        "created_at": isoformat(build.created_at),
        "scheduled_at": isoformat(build.scheduled_at),
        "started_at": isoformat(build.started_at),
        "finished_at": isoformat(build.finished_at),
        "wait_seconds": build.wait_seconds,
        "duration_seconds": build.duration_seconds,
        **_delivery_columns(event, now),
        "source_format": event.format,
    }


def job_row(event: BuildkiteEvent, *, now: datetime | None = None) -> dict[str, Any]:
    """The ``jobs`` row for a job event. mcncl/buildkite-pubsub drops the job: nothing to store."""
    job = event.job
    if job is None:
        raise InvalidEvent(f"{event.event_type} carries no job (mcncl/buildkite-pubsub messages drop it)")
    build = event.build
    raw = _mapping(event.data.get("job"))  # fields the shared Job does not model (yet)
    return {
        "job_id": job.id,
        "build_id": build.id if build else None,
        "organization": event.organization,
        "pipeline_slug": event.pipeline_slug,
        "branch": build.branch if build else None,
        "build_number": build.number if build else None,
        "job_type": job.type,
        "name": _clip(job.name),
        "step_key": job.step_key,
        "state": job.state,
        "exit_status": job.exit_status,
        "soft_failed": job.soft_failed,
        "retried": job.retried,
        "retries_count": job.retries_count,
        "retry_type": job.retry_type,
        "retry_source_job_id": _text(_mapping(raw.get("retry_source")).get("job_id")),
        "parallel_group_index": _integer(raw.get("parallel_group_index")),
        "parallel_group_total": _integer(raw.get("parallel_group_total")),
        "agent_name": job.agent.name if job.agent else None,
        "queue": job.queue,
        "web_url": job.web_url,
        "scheduled_at": isoformat(job.scheduled_at),
        "runnable_at": isoformat(job.runnable_at),
        "started_at": isoformat(job.started_at),
        "finished_at": isoformat(job.finished_at),
        "wait_seconds": job.wait_seconds,
        "run_seconds": job.run_seconds,
        **_delivery_columns(event, now),
    }


def _delivery_columns(event: BuildkiteEvent, now: datetime | None) -> dict[str, Any]:
    return {
        "event_type": event.event_type,
        "event_key": event.key_hash,
        "message_id": event.message_id,
        "publish_time": isoformat(event.publish_time),
        "inserted_at": isoformat(now or datetime.now(UTC)),
    }


def _clip(value: str | None) -> str | None:
    return value[:_MAX_TEXT] if value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# --- BigQuery ----------------------------------------------------------------------

_GOOGLE_API = "https://bigquery.googleapis.com"
_SCOPES = ("https://www.googleapis.com/auth/bigquery.insertdata",)


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
