"""The rows bigquery-metrics writes: one ``events_raw`` row for every event, plus a ``builds`` row
for a finished build and a ``jobs`` row for a finished job.

Rows follow ``schemas/bigquery/<table>.json`` (Terraform creates the tables from the same files;
the tests hold the rows to them). ``make backfill`` replays the Cloud Storage archive through
these same builders, so a backfilled table holds what the function would have written.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from buildkite_events import BuildkiteEvent, Job
from buildkite_events.timeutil import isoformat, parse_time

EVENTS_TABLE = "events_raw"
TYPED_TABLES = {"build.finished": "builds", "build.skipped": "builds", "job.finished": "jobs"}
MAX_TEXT = 1024  # a commit title longer than this is noise in a metrics table

# Why a job did not pass, from its state, exit status and signal reason (Buildkite's agent
# lifecycle and retry docs); the causes that mean the machine, not the code, failed.
_SIGNAL_REASONS = {
    "agent_stop": "agent_stopped",  # the agent was stopped while running the job
    "agent_refused": "agent_refused",  # the agent refused the job (e.g. a hook said no)
    "agent_incompatible": "agent_refused",  # the agent could not run this job
    "stack_error": "stack_error",  # provisioning infrastructure for the job failed
    "process_run_error": "process_run_error",  # the job's process failed to start
    "signature_rejected": "signature_rejected",  # the job's pipeline signature was refused
}
_NOT_PASSED = frozenset({"failed", "timed_out", "canceled", "expired"})
INFRASTRUCTURE_CAUSES = frozenset(
    {"agent_lost", "agent_stopped", "agent_refused", "stack_error", "process_run_error", "expired"}
)
_JSON_MAX_DEPTH = 500  # BigQuery's nesting limit for JSON values


@dataclass
class Rows:
    """What one event writes: ``{table: row}``, and why it writes no typed row (if it does not)."""

    tables: dict[str, dict[str, Any]] = field(default_factory=dict)
    note: str | None = None


def rows_for(event: BuildkiteEvent, *, now: datetime | None = None) -> Rows:
    """Every event gets its ``events_raw`` row; a finished build or job also its typed row."""
    now = now or datetime.now(UTC)
    rows = Rows({EVENTS_TABLE: event_row(event, now=now)})
    table = TYPED_TABLES.get(event.event_type)
    if table == "builds":
        if event.build is None or not event.build.id:
            rows.note = "it carries no build id"
        else:
            rows.tables[table] = build_row(event, now=now)
    elif table == "jobs":
        if event.job is None:
            rows.note = "it carries no job (mcncl/buildkite-pubsub messages drop it)"
        else:
            rows.tables[table] = job_row(event, now=now)
    return rows


def event_row(event: BuildkiteEvent, *, now: datetime | None = None) -> dict[str, Any]:
    """The ``events_raw`` row: identifiers worth filtering on, and the whole body as JSON."""
    build, job = event.build, event.job
    agent = event.agent or (job.agent if job else None)  # an agent event's agent, else the job's
    if event.kind == "job":
        state = job.state if job else None
    elif event.kind == "agent":
        state = agent.connection_state if agent else None
    else:
        state = build.state if build else None
    return {
        **_delivery_columns(event, now),
        "organization": event.organization,
        "pipeline_slug": event.pipeline_slug,
        "build_id": build.id if build else None,
        "build_number": build.number if build else None,
        "job_id": job.id if job else None,
        "agent_id": agent.id if agent else None,
        "agent_name": agent.name if agent else None,
        "queue": (job.queue if job else None) or (agent.queue if agent else None),
        "state": state,
        "occurred_at": isoformat(event.occurred_at),
        "source_format": event.format,
        "payload": json_payload(event.data),
    }


def build_row(event: BuildkiteEvent, *, now: datetime | None = None) -> dict[str, Any]:
    """The ``builds`` row for a build event; every column of the schema, null where unknown."""
    build, pipeline = event.build, event.pipeline
    assert build is not None  # rows_for checks
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
        "message": clip(build.message_title),
        "creator": clip(build.creator.display if build.creator else None),
        "author": clip(build.author.display if build.author else None),
        "pull_request_id": build.pull_request.id if build.pull_request else None,
        "pull_request_base": build.pull_request.base if build.pull_request else None,
        "rebuilt_from_number": build.rebuilt_from_number,
        "cancel_reason": clip(build.cancel_reason),
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
    """The ``jobs`` row for a job event (the caller checks the event carries a job)."""
    job, build = event.job, event.build
    assert job is not None  # rows_for checks
    raw = _mapping(event.data.get("job"))  # fields the shared Job does not model
    signal, reason = _text(raw.get("signal")), _text(raw.get("signal_reason"))
    cause = failure_cause(job, signal, reason)
    return {
        "job_id": job.id,
        "build_id": build.id if build else None,
        "organization": event.organization,
        "pipeline_slug": event.pipeline_slug,
        "branch": build.branch if build else None,
        "build_number": build.number if build else None,
        "job_type": job.type,
        "name": clip(job.name),
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
        "finished_at": isoformat(job.finished_at or parse_time(raw.get("expired_at"))),  # expired: never ran
        "wait_seconds": job.wait_seconds,
        "run_seconds": job.run_seconds,
        **_delivery_columns(event, now),
        "signal": signal,
        "signal_reason": reason,
        "failure_cause": cause,
        "infrastructure_failure": cause in INFRASTRUCTURE_CAUSES if cause else None,
    }


def failure_cause(job: Job, signal: str | None, signal_reason: str | None) -> str | None:
    """Why a job that did not pass did not pass; None for a job that passed or never had to run.

    In order: it expired waiting for an agent; Buildkite's signal reason for the agent or the
    job's set-up; a timeout (state timed_out, or stopped through cancellation yet failed: what a
    timeout looks like) or a cancellation; exit status -1 (Buildkite lost contact with the agent)
    or 255 (the agent was terminated); a signal that killed the command (SIGKILL: often the OOM
    killer); else the command itself exited non-zero.
    """
    state, status = job.state, job.exit_status
    if state not in _NOT_PASSED and (status in (None, 0) or state == "passed"):
        return None
    if state == "expired":
        return "expired"
    if signal_reason in _SIGNAL_REASONS:
        return _SIGNAL_REASONS[signal_reason]
    if state in ("timed_out", "canceled"):
        return state
    if signal_reason == "cancel":
        return "timed_out"
    if status == -1:
        return "agent_lost"
    if status == 255:
        return "agent_stopped"
    return "signal" if signal else "command"


def json_payload(data: Mapping[str, Any]) -> str:
    """The body as JSON text, the form insertAll takes for a JSON column (as the official client sends it).

    BigQuery refuses nesting deeper than 500 and numbers it cannot hold exactly (NaN, integers
    beyond 64 bits): such a body is stored as one JSON string instead, so nothing is lost.
    """
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    return text if _fits_bigquery_json(data) else json.dumps(text, ensure_ascii=False)


def _fits_bigquery_json(value: Any) -> bool:
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, dict | list):
            if depth > _JSON_MAX_DEPTH:
                return False
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
        elif (isinstance(item, float) and not math.isfinite(item)) or (
            isinstance(item, int) and not isinstance(item, bool) and not -(2**63) <= item < 2**64
        ):
            return False
    return True


def _delivery_columns(event: BuildkiteEvent, now: datetime | None) -> dict[str, Any]:
    return {
        "event_type": event.event_type,
        "event_key": event.key_hash,
        "message_id": event.message_id,
        "publish_time": isoformat(event.publish_time),
        "inserted_at": isoformat(now or datetime.now(UTC)),
    }


def clip(value: str | None) -> str | None:
    return value[:MAX_TEXT] if value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _integer(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None
