"""GitHub check runs: one per build, created on its first event and then updated, never twice.

A build's check run is named like its status context (``buildkite/<pipeline slug>``), on the
build's commit, with ``external_id`` the Buildkite build id and ``details_url`` the build page.
Three records in Firestore (buildkite_events.state) keep it to one run whatever the order of
the deliveries:

- the content, an ordered record per build: the newest build state wins, and a completed run
  outranks any run still going, so a late ``build.running`` never reopens it (GitHub keeps a
  completed run's conclusion anyway);
- the run's id per build, written once (the first writer wins);
- a short lease around creating it, so that of two deliveries of one build only one creates.
  The lease holder first lists the commit's check runs of this App with this name, and adopts
  one whose ``external_id`` is the build's: a create whose answer was lost (GitHub made the run,
  we never heard) is found again instead of made twice.

The summary names the build's failed jobs, read from the shared per-build record
(``buildkite_events.builds``) each time the run is sent; after sending, the jobs are read again
and the run re-sent if a job landed meanwhile, so the last update lists every failed job.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from github_api import GitHub, Target
from github_statuses import FINISHED_RANK, RANK, describe

from buildkite_events import BuildkiteEvent, InvalidEvent, Skip, TransientError
from buildkite_events.builds import FailedJob, build_key, failed_jobs
from buildkite_events.idempotency import IdempotencyStore
from buildkite_events.state import Record, Records
from buildkite_events.text import clean, fit, safe_url
from buildkite_events.timeutil import format_duration

log = logging.getLogger(__name__)

SUMMARY_LIMIT = 65535  # GitHub's maximum for output.summary
TITLE_LIMIT = 120
LISTED_JOBS = 50  # then "…and N more"
JOB_NAME_LIMIT = 100  # UTF-16 units of escaped text
URL_LIMIT = 500
CREATE_LEASE_SECONDS = 30
MAX_ROUNDS = 5
# Buildkite's verdict → (status, conclusion). A blocked build stays in progress: see README.
_COMPLETED = {
    "passed": "success",
    "failed": "failure",
    "canceled": "cancelled",
    "skipped": "skipped",
    "not_run": "skipped",
}
_IN_PROGRESS = {"running", "blocked", "failing", "canceling"}
_QUEUED = {"creating", "waiting", "scheduled"}
_HEADLINE = {
    "passed": "Passed",
    "failed": "Failed",
    "canceled": "Canceled",
    "skipped": "Skipped",
    "not_run": "Not run",
    "running": "Running",
    "failing": "Failing",
    "canceling": "Being canceled",
    "blocked": "Blocked, waiting for someone to unblock it",
    "scheduled": "Scheduled",
    "creating": "Scheduled",
    "waiting": "Waiting",
}
_PUNCTUATION = re.compile(r"([!-/:-@\[-`{-~])")  # every ASCII punctuation character


@dataclass(frozen=True)
class CheckRun:
    """What a build event says its check run should show, and where that stands among the build's events."""

    target: Target
    external_id: str
    details_url: str | None
    status: str
    conclusion: str | None
    state: str
    number: int
    branch: str | None
    started_at: str | None
    completed_at: str | None
    duration: float | None
    at: float  # the build's own latest timestamp
    rank: int

    @property
    def key(self) -> str:
        return f"{self.target.repo.lower()}|{self.target.name.lower()}|{self.external_id}"

    @property
    def order(self) -> tuple[int, float, int]:
        return (1 if self.status == "completed" else 0, self.at, self.rank)

    @property
    def value(self) -> dict[str, Any]:
        fields = ("external_id", "details_url", "status", "conclusion", "state", "number", "branch")
        times = {"started_at": self.started_at, "completed_at": self.completed_at, "duration": self.duration}
        target = {"repo": self.target.repo, "sha": self.target.sha, "name": self.target.name}
        return {**target, **{f: getattr(self, f) for f in fields}, **times}


def plan_check(event: BuildkiteEvent, target: Target) -> CheckRun:
    """The check run this event's build asks for (a job event carries its build too)."""
    build = event.build
    if build is None or build.number is None:
        raise InvalidEvent(f"{event.event_type} carries no build number")
    state = build.effective_state or ""
    mapped = check_state(state)
    if mapped is None:
        raise Skip(f"no check run for build state {clean(state)[:40]!r}")
    status, conclusion, rank = mapped
    moment = build.latest_at or event.occurred_at
    return CheckRun(
        target=target,
        external_id=build_key(event),  # the build id; the key of its failed jobs too
        details_url=_link(build.web_url),
        status=status,
        conclusion=conclusion,
        state=state,
        number=build.number,
        branch=build.branch,
        started_at=_time(build.started_at),
        completed_at=_time(build.finished_at) if conclusion else None,
        duration=build.duration_seconds,
        at=moment.timestamp() if moment else 0.0,
        rank=rank,
    )


def check_state(state: str) -> tuple[str, str | None, int] | None:
    """(status, conclusion, rank) for a Buildkite build state; None for one we do not report."""
    if state in _COMPLETED:
        return "completed", _COMPLETED[state], FINISHED_RANK
    if state in _IN_PROGRESS:
        return "in_progress", None, RANK[state]
    if state in _QUEUED:
        return "queued", None, RANK[state]
    return None


class CheckRuns:
    """Check runs on GitHub and their records in Firestore (one instance per function instance)."""

    def __init__(self, github: GitHub) -> None:
        self.github = github
        self.records = Records("github-status.check-run")
        self.ids = Records("github-status.check-run-id")
        self.creations = IdempotencyStore(scope="github-status.check-run-create", lease_seconds=CREATE_LEASE_SECONDS)
        self._ids: dict[str, int] = {}

    def publish(self, run: CheckRun, *, refresh: bool = False) -> str:
        """Show ``run`` unless a newer state is shown; with ``refresh`` (the failed jobs changed),
        send whatever is newest again."""
        reservation = self.records.reserve(run.key, run.order, run.value)
        held = reservation.record
        where = f"{run.target.repo}@{run.target.sha[:7]} ({run.target.name}, build #{run.number})"
        if reservation.verdict == "confirmed" and not refresh:
            raise Skip(f"check run on {where} already shows {_shown(held.value)}")
        if reservation.verdict == "stale" and not refresh:
            late = f"a late {run.state} never reopens a completed check run"
            why = late if held.order[0] > run.order[0] else f"{run.state} would be a step back"
            raise Skip(f"kept {_shown(held.value)} on {where}: {why}")
        action, shown, jobs = self._sync(held)
        return f"{action} check run on {where}: {_shown(shown.value)}, {title(shown.value, jobs)}"

    def _sync(self, record: Record) -> tuple[str, Record, list[FailedJob]]:
        """Send ``record`` with the failed jobs; again while a newer record or another job came meanwhile."""
        build_id, actions = str(record.value["external_id"]), set()
        for _ in range(MAX_ROUNDS):
            jobs = failed_jobs(build_id)
            actions.add(self._send(record, jobs))
            newer = self.records.confirm(record)
            if newer is not None:
                record = newer
                continue
            if failed_jobs(build_id) == jobs:
                return ("created" if "created" in actions else "updated"), record, jobs
        raise TransientError(f"check run for build {build_id} kept changing; will check again")

    def _send(self, record: Record, jobs: Sequence[FailedJob]) -> str:
        value = record.value
        body = render(value, jobs)
        run_id = self._known_id(record.key)
        if run_id is None:
            run_id, created = self._create_once(record.key, value, body)
            if created:
                return "created"
        self.github.update_check_run(value["repo"], run_id, body)
        return "updated"

    def _known_id(self, key: str) -> int | None:
        if key not in self._ids:
            held = self.ids.get(key)
            if held is None:
                return None
            self._ids[key] = int(held.value["id"])
        return self._ids[key]

    def _create_once(self, key: str, value: Mapping[str, Any], body: dict[str, Any]) -> tuple[int, bool]:
        """The run's id, found or created under a lease; True when this call created it."""
        try:
            claim = self.creations.claim(key)
        except TransientError as err:
            raise TransientError(f"check run for build {value['external_id']}: {err}", retry_after=1.0) from None
        if claim.state == "done":
            known = self._known_id(key)
            if known is not None:
                return known, False
            log.warning("check run of %s was created but its id is no longer held; looking it up", key)
        repo, sha, name = value["repo"], value["sha"], value["name"]
        try:
            run_id = self.github.find_check_run(repo, sha, name, str(value["external_id"]))
            created = run_id is None
            if run_id is None:
                run_id = self.github.create_check_run(repo, {**body, "head_sha": sha})
            run_id = self._remember(key, run_id)
        except BaseException:
            if claim.state == "acquired":
                self.creations.release(claim)
            raise
        if claim.state == "acquired":
            self.creations.complete(claim, check_run_id=run_id)
        return run_id, created

    def _remember(self, key: str, run_id: int) -> int:
        reservation = self.ids.reserve(key, (0,), {"id": run_id})
        held = int(reservation.record.value["id"])
        if reservation.verdict == "reserved":
            self.ids.confirm(reservation.record)
        if held != run_id:
            log.warning("check run %s duplicates %s for %s; updating %s only", run_id, held, key, held)
        self._ids[key] = held
        return held


# -- what the run shows --------------------------------------------------------------------------


def render(value: Mapping[str, Any], jobs: Sequence[FailedJob]) -> dict[str, Any]:
    """The create/update body (without ``head_sha``) for a record's value and the failed jobs."""
    body: dict[str, Any] = {
        "name": value["name"],
        "external_id": value["external_id"],
        "status": value["status"],
        "output": {"title": title(value, jobs), "summary": summary(value, jobs)},
    }
    if value["details_url"]:
        body["details_url"] = value["details_url"]
    if value["started_at"]:
        body["started_at"] = value["started_at"]
    if value["conclusion"]:
        body["conclusion"] = value["conclusion"]
        if value["completed_at"]:
            body["completed_at"] = value["completed_at"]
    return body


def title(value: Mapping[str, Any], jobs: Sequence[FailedJob]) -> str:
    """ "Build #2042 failed in 5m4s · 2 failed jobs" (no untrusted text)."""
    text = describe(int(value["number"]), str(value["state"]), value["duration"], limit=TITLE_LIMIT)
    return f"{text} · {_jobs(len(jobs))}" if jobs else text


def summary(value: Mapping[str, Any], jobs: Sequence[FailedJob]) -> str:
    """Markdown: the verdict, duration, branch and commit, then the failed jobs with links."""
    state, url = str(value["state"]), value["details_url"]
    took = format_duration(value["duration"]) if value["conclusion"] else None
    build = f"build #{value['number']}"
    headline = f"**{_HEADLINE.get(state) or md(clean(state)[:40])}**" + (f" in {took}" if took else "")
    where = f"[{build}]({url})" if url else build
    if value["branch"]:
        where += f" of branch **{fit(clean(value['branch']), 200, md)}**"
    lines = [f"{headline}: {where} at commit {str(value['sha'])[:7]}."]
    if jobs:
        lines += ["", f"### {_jobs(len(jobs)).capitalize()}", ""]
        lines += [_job_line(job) for job in jobs[:LISTED_JOBS]]
        if len(jobs) > LISTED_JOBS:
            more = f"…and {len(jobs) - LISTED_JOBS} more"
            lines.append(f"- {more}: see [the build]({url})" if url else f"- {more}")
    text = "\n".join(lines)
    return text if len(text) <= SUMMARY_LIMIT else text[: SUMMARY_LIMIT - 1] + "…"  # unreachable by design


def _job_line(job: FailedJob) -> str:
    name = fit(clean(job.name) or "unnamed job", JOB_NAME_LIMIT, md)
    url = _link(job.web_url)
    line = f"- [{name}]({url})" if url else f"- {name}"
    return line + (f" (exit status {job.exit_status})" if job.exit_status is not None else "")


def md(text: str) -> str:
    """Untrusted text as literal markdown: every ASCII punctuation character backslash-escaped, so
    nothing in it can open a link, an image, emphasis, a heading, a table or HTML; and a word
    joiner (U+2060, invisible) after each ``@``, which an escape does not stop from becoming a
    mailto link or a mention."""
    return _PUNCTUATION.sub(r"\\\1", text).replace("@", "@\u2060")


def _link(url: str | None) -> str | None:
    """An http(s) URL safe as a markdown link target (parentheses encoded: they would end it)."""
    safe = safe_url(url, URL_LIMIT)
    return safe.replace("(", "%28").replace(")", "%29") if safe else None


def _jobs(count: int) -> str:
    return f"{count} failed job{'s' if count != 1 else ''}"


def _time(moment: datetime | None) -> str | None:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ") if moment else None


def _shown(value: Mapping[str, Any]) -> str:
    return str(value["conclusion"] or value["status"])
