"""What a build and its branch remember across events, in Firestore (``buildkite_events.state``).

Per build (one document of kind ``build``, keyed by the build id): the hard-failed jobs seen
in ``job.finished``, each retried job counted once by its latest attempt, and a revision
that grows with every change. Any function that needs the failed jobs subscribes to
``job.finished`` itself and calls ``remember_job``; the record is shared, so whichever
function records a job first saves the others the write.

Per pipeline and branch (``Records`` of kind ``builds.branch``): the last verdict (passed or
failed), the build number it came from and the failure streak, ordered by build number and
then the build's own timestamps, so a late older build never rewrites a newer verdict.
``branch_history`` gives a build its ``BranchStanding``: broken, fixed, the streak.

Both expire (``expire_at``, the collection's TTL policy) like the idempotency claims.
Redelivery and out-of-order arrival change nothing twice: a job is a set member, a
superseded attempt stays superseded, and a verdict is kept per build number.

Firestore operations: a job that passed at its first attempt costs none; a failed job or a
retry costs one read and, the first time, one write. A finished build's standing costs one
read and, the first time, one write; a running build's (``build.failing``) one read.
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any

from .errors import InvalidEvent, TransientError
from .event import BuildkiteEvent, Job
from .state import (
    MAX_CONFLICTS,
    MAX_STORED_KEY,
    Record,
    Records,
    call_options,
    document,
    expire_at,
    translated,
    unchanged_since,
    won,
)
from .text import clean

__all__ = [
    "BranchStanding",
    "BuildMemory",
    "FailedJob",
    "affects_failed_jobs",
    "branch_history",
    "build_key",
    "failed_jobs",
    "is_hard_failure",
    "recall",
    "remember_job",
]

log = logging.getLogger(__name__)

BUILD_KIND = "build"
BRANCH_KIND = "builds.branch"
TTL_DAYS = 30  # as the idempotency claims (terraform: the collection's TTL on expire_at)
FAILED_STATES = frozenset({"failed", "timed_out", "expired"})  # a job's own hard failure
MAX_FAILED_JOBS = 500  # kept per build (a document holds 1 MiB; a message names 5)
MAX_SUPERSEDED = 2000
RECORD_FIELDS = ("failed", "superseded")  # what ``_update`` hands a change, each a map
NAME_LIMIT = 200
URL_LIMIT = 2000


# -- failed jobs ----------------------------------------------------------------------------


@dataclass(frozen=True)
class FailedJob:
    """A job that failed the build, as its latest attempt left it."""

    id: str
    name: str
    web_url: str | None
    exit_status: int | None
    state: str  # failed, timed_out or expired
    finished_at: str | None  # ISO 8601, as Buildkite sent it: orders the jobs
    retries: int = 0  # attempts before this one
    step_key: str | None = None

    @classmethod
    def of(cls, job: Job) -> FailedJob:
        assert job.id is not None
        return cls(
            id=job.id,
            name=clean(job.name)[:NAME_LIMIT] or clean(job.step_key)[:NAME_LIMIT] or "unnamed job",
            web_url=job.web_url[:URL_LIMIT] if job.web_url else None,
            exit_status=job.exit_status,
            state=job.state or "failed",
            finished_at=job.finished_at.isoformat() if job.finished_at else None,
            retries=job.retries_count or 0,
            step_key=job.step_key,
        )

    def stored(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "web_url": self.web_url,
            "exit_status": self.exit_status,
            "state": self.state,
            "finished_at": self.finished_at,
            "retries": self.retries,
            "step_key": self.step_key,
        }

    @classmethod
    def from_stored(cls, job_id: str, data: Mapping[str, Any]) -> FailedJob:
        status = data.get("exit_status")
        return cls(
            id=job_id,
            name=str(data.get("name") or "unnamed job"),
            web_url=str(data["web_url"]) if data.get("web_url") else None,
            exit_status=status if isinstance(status, int) and not isinstance(status, bool) else None,
            state=str(data.get("state") or "failed"),
            finished_at=str(data["finished_at"]) if data.get("finished_at") else None,
            retries=int(data.get("retries") or 0),
            step_key=str(data["step_key"]) if data.get("step_key") else None,
        )

    @property
    def sort_key(self) -> tuple[str, str, str]:
        return (self.finished_at or "~", self.name, self.id)  # unknown finish times last


def is_hard_failure(job: Job) -> bool:
    """A job's own failure that fails the build: not a soft failure, not a job skipped or
    canceled because of another ("broken", "canceled")."""
    if job.soft_failed:
        return False
    if job.state in FAILED_STATES:
        return True
    return job.state == "finished" and job.exit_status not in (None, 0)  # GraphQL-style "finished"


@dataclass(frozen=True)
class BuildMemory:
    """One build's record: its failed jobs (latest attempts) and the attempts retried since."""

    key: str
    revision: int = 0  # grows with every change
    failed: Mapping[str, Mapping[str, Any]] = field(default_factory=dict)  # job id → FailedJob.stored()
    superseded: Mapping[str, str] = field(default_factory=dict)  # retried attempt → the attempt after it
    data: Mapping[str, Any] = field(default_factory=dict)  # the whole document

    @classmethod
    def of(cls, key: str, data: Mapping[str, Any]) -> BuildMemory:
        failed, superseded = _mapping(data.get("failed")), _mapping(data.get("superseded"))
        return cls(
            key,
            revision=int(data.get("revision") or 0),
            failed={str(k): dict(v) for k, v in failed.items() if isinstance(v, Mapping)},
            superseded={str(k): str(v) for k, v in superseded.items()},
            data=dict(data),
        )

    @property
    def failed_jobs(self) -> list[FailedJob]:
        jobs = [FailedJob.from_stored(job_id, value) for job_id, value in self.failed.items()]
        return sorted(jobs, key=lambda job: job.sort_key)


def build_key(event: BuildkiteEvent) -> str:
    """The build's id, else organization/pipeline#number (an event without the id)."""
    build = event.build
    if build is None:
        raise InvalidEvent(f"{event.event_type} carries no build (no id and no number)")
    if build.id:
        return build.id
    return f"{event.organization or '?'}/{event.pipeline_slug or '?'}#{build.number}"


def remember_job(event: BuildkiteEvent) -> str:
    """Record what a ``job.finished`` says about its build's failed jobs; describe the outcome.

    A hard failure is added; an attempt that was retried (``retried``/``retried_in_job_id``
    on it, or a later job's ``retry_source``) is removed and kept out for good, so a retried
    job counts once, by its latest attempt, whichever order the events come in.
    """
    job = event.job
    if event.event_type != "job.finished":
        return f"{event.event_type} is not job.finished: nothing to remember"
    if job is None or job.id is None:
        raise InvalidEvent("job.finished carries no job id")
    raw = _mapping(event.data.get("job"))
    retry_of = _text(_mapping(raw.get("retry_source")).get("job_id"))  # this attempt retries that one
    retried_in = _text(raw.get("retried_in_job_id"))  # this attempt was retried (a payload newer than its event)
    retried = job.retried or retried_in is not None
    failed = is_hard_failure(job)
    name = clean(job.name)[:80] or job.id
    if not (failed or retry_of or retried):
        soft = " (soft failure, not counted)" if job.soft_failed and job.state in FAILED_STATES else ""
        return f"job {name} {clean(job.state)[:20] or 'finished'}{soft}: nothing to remember"
    key = build_key(event)
    this_id: str = job.id

    def change(record: dict[str, Any]) -> str:
        failed_jobs, superseded, notes = record["failed"], record["superseded"], []
        if retry_of and superseded.get(retry_of) != this_id:
            superseded[retry_of] = this_id
            if failed_jobs.pop(retry_of, None) is not None:
                notes.append("cleared its earlier attempt")
        if retried and this_id not in superseded:
            superseded[this_id] = retried_in or ""
        if retried or this_id in superseded:
            removed = failed_jobs.pop(this_id, None) is not None
            notes.append("retried since: removed" if removed else "retried since: not counted")
        elif failed:
            entry = FailedJob.of(job).stored()
            if failed_jobs.get(this_id) != entry:
                if this_id not in failed_jobs and len(failed_jobs) >= MAX_FAILED_JOBS:
                    return f"failed job {name}: not kept, {MAX_FAILED_JOBS} failed jobs kept already"
                failed_jobs[this_id] = entry
                notes.append(f"recorded (exit {job.exit_status})" if job.exit_status is not None else "recorded")
        return "; ".join(notes)

    memory, note = _update(key, change)
    what = "failed job" if failed else f"job {clean(job.state)[:20] or 'finished'}"
    return f"{what} {name}: {note or 'already recorded'} ({len(memory.failed)} failed in the build)"


def affects_failed_jobs(event: BuildkiteEvent) -> bool:
    """Whether this ``job.finished`` is one ``remember_job`` records: a hard failure, an attempt
    that was retried, or a retry of another. A function that shows the failed jobs refreshes on
    these whether or not it was the first to record them (the record is shared)."""
    job = event.job
    if event.event_type != "job.finished" or job is None:
        return False
    raw = _mapping(event.data.get("job"))
    retry_of = _text(_mapping(raw.get("retry_source")).get("job_id"))
    return (
        is_hard_failure(job) or job.retried or retry_of is not None or _text(raw.get("retried_in_job_id")) is not None
    )


def failed_jobs(build_id: str) -> list[FailedJob]:
    """The build's failed jobs, latest attempts only, in the order they finished (then by name)."""
    memory = recall(build_id)
    return memory.failed_jobs if memory else []


def recall(build_id: str) -> BuildMemory | None:
    """The build's record, or None if nothing was recorded (or it expired)."""
    with translated("read of a build record"):
        snapshot = document(BUILD_KIND, build_id).get(**call_options())
    return _memory(build_id, snapshot)


def _update(key: str, change: Callable[[dict[str, Any]], str]) -> tuple[BuildMemory, str]:
    """Apply ``change`` to the build's record (its fields ``failed``, ``superseded``...,
    mutated in place) and write it only if it changed, conditionally on the document read:
    when another writer came first, read and apply again."""
    from google.cloud import firestore

    ref = document(BUILD_KIND, key)
    with translated("update of a build record"):
        for _ in range(MAX_CONFLICTS):
            snapshot = ref.get(**call_options())
            held = _memory(key, snapshot) or BuildMemory(key)
            before = {name: held.data.get(name) or {} for name in RECORD_FIELDS}
            after = copy.deepcopy(before)
            note = change(after)
            if after == before:
                return held, note
            superseded = after["superseded"]
            if len(superseded) > MAX_SUPERSEDED:  # drop the oldest entries (insertion order)
                after["superseded"] = dict(list(superseded.items())[-MAX_SUPERSEDED:])
            fields = {
                **after,
                "kind": BUILD_KIND,
                "key": key[:MAX_STORED_KEY],
                "revision": held.revision + 1,
                "updated_at": firestore.SERVER_TIMESTAMP,
                "expire_at": expire_at(dt.timedelta(days=TTL_DAYS)),
            }
            if _write(ref, snapshot, fields):
                return BuildMemory.of(key, {**held.data, **fields}), note
    raise TransientError("build record kept changing while being updated; will try again")


def _write(ref: Any, snapshot: Any, fields: dict[str, Any]) -> bool:
    if snapshot.exists:
        return won(lambda: ref.update(fields, **unchanged_since(snapshot), **call_options()))
    return won(lambda: ref.create(fields, **call_options()))


def _memory(key: str, snapshot: Any) -> BuildMemory | None:
    return BuildMemory.of(key, snapshot.to_dict() or {}) if snapshot.exists else None


def _text(value: Any) -> str | None:
    return value if isinstance(value, str) and value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


# -- the branch's standing --------------------------------------------------------------------


@dataclass(frozen=True)
class BranchStanding:
    """Where a build stands on its pipeline's branch.

    ``verdict`` is this build's (passed or failed; "failed" for a build that is failing;
    None for a build that neither passed nor failed); ``previous`` the branch's verdict before
    it (None when unknown); ``streak`` the failures in a row ending with this build (0 when it
    passed) and ``previous_streak`` those before it. ``newest`` is False when a newer build's
    verdict is held already (this one came late: the streak is not known).
    """

    verdict: str | None
    previous: str | None = None
    previous_build: int | None = None
    streak: int = 0
    previous_streak: int = 0
    newest: bool = True

    @property
    def broken(self) -> bool:
        """A failure right after a pass."""
        return self.verdict == "failed" and self.previous == "passed"

    @property
    def fixed(self) -> bool:
        """A pass right after a failure."""
        return self.verdict == "passed" and self.previous == "failed"

    @classmethod
    def of(cls, value: Mapping[str, Any], *, newest: bool = True) -> BranchStanding:
        previous = value.get("previous") if isinstance(value.get("previous"), Mapping) else None
        return cls(
            verdict=value.get("verdict"),
            previous=previous.get("verdict") if previous else None,
            previous_build=previous.get("build") if previous else None,
            streak=int(value.get("streak") or 0),
            previous_streak=int(previous.get("streak") or 0) if previous else 0,
            newest=newest,
        )


def verdict_of(event: BuildkiteEvent) -> str | None:
    """passed or failed for the branch's history; a failing build counts as failed."""
    build = event.build
    if build is None:
        return None
    state = build.effective_state
    if state in ("passed", "failed"):
        return state
    return "failed" if state == "failing" else None


def branch_history(event: BuildkiteEvent) -> BranchStanding:
    """This build's standing on its branch. A ``build.finished`` that passed or failed is
    recorded (unless a newer build's verdict is held); any other event only reads, and a
    failing build is shown as the failure it will be."""
    build, verdict = event.build, verdict_of(event)
    if build is None or build.number is None or verdict is None or not build.branch:
        return BranchStanding(verdict, newest=False)
    key = f"{event.organization or '?'}/{event.pipeline_slug or '?'}@{build.branch}"
    number, at = build.number, build.latest_at

    def value(held: Record | None) -> dict[str, Any]:
        return _next_value(held, number, verdict)

    if event.event_type != "build.finished":
        held = _branches().get(key)
        if held is not None and tuple(held.order[:1]) > (number,):
            return BranchStanding(verdict, streak=1 if verdict == "failed" else 0, newest=False)
        return BranchStanding.of(value(held), newest=False)
    order = (number, at.timestamp() if at else 0.0)
    reservation = _branches().reserve(key, order, value)
    if reservation.verdict == "stale":
        log.info("branch %s holds build #%s's verdict; #%s came late", key, reservation.record.order[0], number)
        return BranchStanding(verdict, streak=1 if verdict == "failed" else 0, newest=False)
    return BranchStanding.of(reservation.record.value)


def _next_value(held: Record | None, number: int, verdict: str) -> dict[str, Any]:
    """The branch's record once build ``number`` has ``verdict``. The same build again (a
    redelivery, a retry or an unblock that changed its verdict) builds on what came before it."""
    if held is None:
        prior = None
    elif held.order and held.order[0] == number:
        prior = held.value.get("previous")
    else:
        prior = {key: held.value.get(key) for key in ("build", "verdict", "streak")}
    before = int(prior.get("streak") or 0) if isinstance(prior, Mapping) and prior.get("verdict") == "failed" else 0
    return {
        "build": number,
        "verdict": verdict,
        "streak": before + 1 if verdict == "failed" else 0,
        "previous": dict(prior) if isinstance(prior, Mapping) else None,
    }


@cache
def _branches() -> Records:
    return Records(BRANCH_KIND, ttl_days=TTL_DAYS)
