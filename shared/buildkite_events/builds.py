"""What a build and its branch remember across events, in Firestore (``buildkite_events.state``).

Per build (one document of kind ``build``, keyed by the build id):

- its hard-failed jobs from ``job.finished`` (``remember_job``, ``failed_jobs``), a retried job
  counted once, by its latest attempt. Each function that needs them subscribes to
  ``job.finished`` itself; the record is shared, so the first to record a job saves the
  others the write;
- the build as its newest ``build.failing``/``build.finished`` showed it, and the chat messages
  about it: per notifier a lease around the post, then the channel and ``ts`` and the
  revision the message shows (``note_build``, ``record_post``, ``release_post``,
  ``mark_shown``). The revision grows with every change a message shows, so a notifier can
  update its message until it shows the newest.

Per pipeline and branch (``Records`` of kind ``builds.branch``): the last verdict (passed or
failed), the build number it came from and the failure streak, ordered by build number and
then the build's own timestamps, so a late older build never rewrites a newer verdict
(``branch_history`` → ``BranchStanding``: broken, fixed, the streak).

Both expire (``expire_at``, the collection's TTL policy) like the idempotency claims.
Redelivery and out-of-order arrival change nothing twice: a job is a set member, a retried
attempt stays retried, a build's newer state is never replaced by an older one, and a
verdict is kept per build number. Writes are conditional on the document read.

Firestore operations: a job that passed at its first attempt costs none; a failed job or a
retry one read and, the first time, one write. A finished build's standing costs one read
and, the first time, one write; a failing build's one read. The message bookkeeping costs one
read and one write per post or update, and noting the post one write (the lease's own, read
back only if the record moved on meanwhile; see the notifiers' READMEs for the figures per build).
"""

from __future__ import annotations

import copy
import datetime as dt
import logging
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from functools import cache
from typing import Any, Literal, NamedTuple

from .errors import InvalidEvent, TransientError
from .event import BuildkiteEvent, Job
from .state import (
    MAX_CONFLICTS,
    MAX_STORED_KEY,
    SERVER_TIMESTAMP,
    Record,
    Records,
    call_options,
    client,
    document,
    expire_at,
    translated,
    written,
)
from .text import clean

__all__ = [
    "BranchStanding",
    "BuildMemory",
    "FailedJob",
    "JobRecord",
    "Lease",
    "Message",
    "affects_failed_jobs",
    "branch_history",
    "build_key",
    "failed_jobs",
    "is_hard_failure",
    "mark_shown",
    "note_build",
    "recall",
    "record_job",
    "record_post",
    "release_post",
    "remember_job",
]

log = logging.getLogger(__name__)

BUILD_KIND = "build"
BRANCH_KIND = "builds.branch"
TTL_DAYS = 30  # as the idempotency claims (terraform: the collection's TTL on expire_at)
FAILED_STATES = frozenset({"failed", "timed_out", "expired"})  # a job's own hard failure
MAX_FAILED_JOBS = 500  # kept per build (a document holds 1 MiB; a message names 5)
MAX_SUPERSEDED = 2000
RECORD_FIELDS = ("failed", "superseded", "snapshot", "messages")  # the maps ``_update`` hands a change
CONTENT_FIELDS = ("failed", "superseded", "snapshot")  # what a message about the build shows
NAME_LIMIT = 200
MAX_ID = 200  # Buildkite's ids are UUIDs; a longer one is not theirs
URL_LIMIT = 2000


# -- failed jobs ----------------------------------------------------------------------------


class FailedJob(NamedTuple):
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
            step_key=job.step_key[:NAME_LIMIT] if job.step_key else None,
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
    written: dt.datetime | None = field(default=None, compare=False)  # its update time, as last read or written

    @classmethod
    def of(cls, key: str, data: Mapping[str, Any], written: dt.datetime | None = None) -> BuildMemory:
        failed, superseded = _mapping(data.get("failed")), _mapping(data.get("superseded"))
        return cls(
            key,
            revision=int(data.get("revision") or 0),
            failed={str(k): dict(v) for k, v in failed.items() if isinstance(v, Mapping)},
            superseded={str(k): str(v) for k, v in superseded.items()},
            data=dict(data),
            written=written,
        )

    @property
    def failed_jobs(self) -> list[FailedJob]:
        jobs = [FailedJob.from_stored(job_id, value) for job_id, value in self.failed.items()]
        return sorted(jobs, key=lambda job: job.sort_key)

    @property
    def build(self) -> BuildkiteEvent | None:
        """The build as its newest build event showed it (``note_build``), or None."""
        snapshot = _mapping(self.data.get("snapshot"))
        data = snapshot.get("data")
        if not isinstance(data, Mapping) or not isinstance(snapshot.get("event_type"), str):
            return None
        return BuildkiteEvent(event_type=snapshot["event_type"], data=data)

    @property
    def standing(self) -> BranchStanding:
        """The branch standing noted with that build event."""
        return BranchStanding.of(_mapping(_mapping(self.data.get("snapshot")).get("standing")))

    def message(self, notifier: str) -> Message | None:
        """What ``notifier`` posted (or is posting) about this build."""
        entry = _mapping(self.data.get("messages")).get(notifier)
        return Message.of(entry) if isinstance(entry, Mapping) else None


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
    return record_job(event).note


class JobRecord(NamedTuple):
    """What ``record_job`` did: the build's record as read or written (None when the job needed
    none: it passed at its first attempt, or failed softly), a description, and whether it changed."""

    memory: BuildMemory | None
    note: str
    changed: bool


def record_job(event: BuildkiteEvent) -> JobRecord:
    """``remember_job``, with the build's record.

    A hard failure is added; an attempt that was retried (``retried``/``retried_in_job_id``
    on it, or a later job's ``retry_source``) is removed and kept out for good, so a retried
    job counts once, by its latest attempt, whichever order the events come in.
    """
    job = event.job
    if event.event_type != "job.finished":
        return JobRecord(None, f"{event.event_type} is not job.finished: nothing to remember", False)
    if job is None or job.id is None:
        raise InvalidEvent("job.finished carries no job id")
    if len(job.id) > MAX_ID:
        raise InvalidEvent(f"job.finished carries a job id of {len(job.id)} characters, not one Buildkite makes")
    raw = _mapping(event.data.get("job"))
    retry_of = _text(_mapping(raw.get("retry_source")).get("job_id"), MAX_ID)  # this attempt retries that one
    retried_in = _text(
        raw.get("retried_in_job_id"), MAX_ID
    )  # this attempt was retried (a payload newer than its event)
    retried = job.retried or retried_in is not None
    failed = is_hard_failure(job)
    name = clean(job.name)[:80] or job.id
    if not (failed or retry_of or retried):
        soft = " (soft failure, not counted)" if job.soft_failed and job.state in FAILED_STATES else ""
        return JobRecord(None, f"job {name} {clean(job.state)[:20] or 'finished'}{soft}: nothing to remember", False)
    key = build_key(event)
    this_id: str = job.id

    def change(record: dict[str, Any], now: dt.datetime) -> str:
        failed_jobs, superseded, notes = record["failed"], record["superseded"], []
        if retry_of and superseded.get(retry_of) != this_id:
            superseded[retry_of] = this_id
            cleared = failed_jobs.pop(retry_of, None) is not None
            notes.append("cleared its earlier attempt" if cleared else "its earlier attempt will not count")
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

    memory, note, changed = _update(key, change)
    what = "failed job" if failed else f"job {clean(job.state)[:20] or 'finished'}"
    described = f"{what} {name}: {note or 'already recorded'} ({len(memory.failed)} failed in the build)"
    return JobRecord(memory, described, changed)


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


def _update(
    key: str, change: Callable[[dict[str, Any], dt.datetime], str], *, known: BuildMemory | None = None
) -> tuple[BuildMemory, str, bool]:
    """Apply ``change`` to the build's record (its maps ``failed``, ``superseded``,
    ``snapshot`` and ``messages``, changed in place; ``now`` is the read's time on
    Firestore's clock) and write it only if it changed, conditionally on the document read:
    when another writer came first, read and apply again. The revision grows when what a
    message shows changes (jobs, snapshot), not when a message is noted.

    ``known``: the record as this delivery last wrote it. The first try applies ``change`` to
    it without a read, conditionally on its update time; only if the record moved on since
    is it read."""
    ref = document(BUILD_KIND, key)
    with translated("update of a build record"):
        since: dt.datetime | None
        now: dt.datetime | None
        for attempt in range(MAX_CONFLICTS):
            if attempt == 0 and known is not None and known.written is not None:
                held, since, now = known, known.written, dt.datetime.now(dt.UTC)
            else:
                known, snapshot = None, ref.get(**call_options())
                held = _memory(key, snapshot) or BuildMemory(key)
                since, now = snapshot.update_time if snapshot.exists else None, snapshot.read_time
            before = {name: dict(_mapping(held.data.get(name))) for name in RECORD_FIELDS}
            after = copy.deepcopy(before)
            note = change(after, now or dt.datetime.now(dt.UTC))
            if after == before:
                if known is not None:  # unchanged as last written: what does the record hold now?
                    continue
                return held, note, False
            if len(after["superseded"]) > MAX_SUPERSEDED:  # drop the oldest entries (insertion order)
                after["superseded"] = dict(list(after["superseded"].items())[-MAX_SUPERSEDED:])
            shown_changed = any(after[name] != before[name] for name in CONTENT_FIELDS)
            revision = held.revision + 1 if shown_changed else held.revision
            fields = {
                **_storable(after),
                "kind": BUILD_KIND,
                "key": key[:MAX_STORED_KEY],
                "revision": revision,
                "updated_at": SERVER_TIMESTAMP,
                "expire_at": expire_at(dt.timedelta(days=TTL_DAYS)),
            }
            at = _write(ref, since, fields)
            if at is not None:
                return BuildMemory.of(key, {**held.data, **fields}, at), note, True
    raise TransientError("build record kept changing while being updated; will try again")


def _write(ref: Any, since: dt.datetime | None, fields: dict[str, Any]) -> dt.datetime | None:
    """Update the record if it is as written at ``since`` (None: create it); when it was written."""
    if since is not None:
        option = client().write_option(last_update_time=since)
        return written(lambda: ref.update(fields, option=option, **call_options()))
    return written(lambda: ref.create(fields, **call_options()))


def _memory(key: str, snapshot: Any) -> BuildMemory | None:
    return BuildMemory.of(key, snapshot.to_dict() or {}, snapshot.update_time) if snapshot.exists else None


def _storable(value: Any) -> Any:
    """``value`` as Firestore takes it: event text may hold lone surrogates (valid JSON, not UTF-8)."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, Mapping):
        return {_storable(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    return value


def _text(value: Any, limit: int | None = None) -> str | None:
    return value[:limit] if isinstance(value, str) and value else None


def _mapping(value: Any) -> Mapping[str, Any]:
    return value if isinstance(value, Mapping) else {}


def _number(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


# -- the branch's standing --------------------------------------------------------------------


class BranchStanding(NamedTuple):
    """Where a build stands on its pipeline's branch.

    ``verdict`` is this build's (passed or failed; "failed" for a build that is failing;
    None for a build that neither passed nor failed); ``previous`` the branch's verdict before
    it (None when unknown); ``streak`` the failures in a row ending with this build (0 when it
    passed) and ``previous_streak`` those before it. ``newest`` is False when a newer build's
    verdict is held already (this one came late: the streak is not known); ``finished`` is
    True once the branch holds this very build's verdict.
    """

    verdict: str | None
    previous: str | None = None
    previous_build: int | None = None
    streak: int = 0
    previous_streak: int = 0
    newest: bool = True
    finished: bool = False  # the branch holds this build's own verdict: it has finished

    @property
    def broken(self) -> bool:
        """A failure right after a pass."""
        return self.verdict == "failed" and self.previous == "passed"

    @property
    def fixed(self) -> bool:
        """A pass right after a failure."""
        return self.verdict == "passed" and self.previous == "failed"

    @classmethod
    def of(
        cls, value: Mapping[str, Any], *, newest: bool | None = None, finished: bool | None = None
    ) -> BranchStanding:
        """From a branch record's value (``_next_value``), or from ``stored()`` (which also
        carries ``newest`` and ``finished``; for a branch record, both default to True)."""
        previous = _mapping(value.get("previous"))
        return cls(
            verdict=_text(value.get("verdict")),
            previous=_text(previous.get("verdict")),
            previous_build=_number(previous.get("build")),
            streak=_number(value.get("streak")) or 0,
            previous_streak=_number(previous.get("streak")) or 0,
            newest=value.get("newest") is not False if newest is None else newest,
            finished=value.get("finished") is not False if finished is None else finished,
        )

    def stored(self) -> dict[str, Any]:
        previous = {"verdict": self.previous, "build": self.previous_build, "streak": self.previous_streak}
        return {
            "verdict": self.verdict,
            "streak": self.streak,
            "previous": previous,
            "newest": self.newest,
            "finished": self.finished,
        }


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
        finished = held is not None and tuple(held.order[:1]) == (number,)
        return BranchStanding.of(value(held), newest=False, finished=finished)
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


# -- the build as last seen, and the chat messages about it -----------------------------------

SNAPSHOT_RANK = {"build.failing": 1, "build.finished": 2}  # a build event's place among the build's own
POST_LEASE_SECONDS = 90.0  # a poster that vanished longer ago than this is taken over
MESSAGE_LIMIT = 4000  # of the commit message's first line kept: more than any chat message shows
_BUILD_FIELDS = (
    "id", "number", "state", "blocked", "blocked_state", "branch", "tag", "commit", "message", "source",
    "url", "web_url", "pull_request", "rebuilt_from", "created_at", "scheduled_at", "started_at",
    "failing_at", "finished_at",
)  # fmt: skip
_PIPELINE_FIELDS = ("id", "slug", "name", "url", "web_url", "repository", "default_branch")


class Message(NamedTuple):
    """A chat message about the build, as its notifier noted it.

    ``posting``: a delivery holds the lease and is posting it; ``unknown``: a post whose answer
    was lost (it may exist: look for it before posting again); ``posted``: it exists, in
    ``channel`` (the id the provider returned) at ``ts``, showing revision ``shown``.
    """

    state: Literal["posting", "unknown", "posted"]
    channel: str | None = None
    ts: str | None = None
    shown: int = 0
    owner: str | None = None
    since: dt.datetime | None = None
    event: str | None = None  # the key hash of the event whose delivery posts (or posted) it

    @classmethod
    def of(cls, entry: Mapping[str, Any]) -> Message:
        state = entry.get("state")
        since = entry.get("since")
        return cls(
            state=state if state in ("posting", "unknown", "posted") else "unknown",
            channel=_text(entry.get("channel")),
            ts=_text(entry.get("ts")),
            shown=_number(entry.get("shown")) or 0,
            owner=_text(entry.get("owner")),
            since=since if isinstance(since, dt.datetime) else None,
            event=_text(entry.get("event")),
        )

    def stored(self) -> dict[str, Any]:
        return {k: v for k, v in self._asdict().items() if v is not None}

    def leased(self, now: dt.datetime) -> bool:
        """Being posted by a delivery whose lease has not run out (on Firestore's clock)."""
        return (
            self.state == "posting"
            and self.since is not None
            and (now - self.since).total_seconds() < POST_LEASE_SECONDS
        )


class Lease(NamedTuple):
    """The right to post the build's one message: ``memory`` is the record to render, and
    ``lost`` a post whose answer was lost (or whose poster vanished), to look for first."""

    key: str
    notifier: str
    owner: str
    memory: BuildMemory
    lost: Message | None = None


def note_build(
    event: BuildkiteEvent,
    standing: BranchStanding,
    notifier: str,
    *,
    post: bool,
    channel: str | None = None,
) -> tuple[BuildMemory, Lease | None]:
    """Keep ``event``'s build as the one a message shows, if it is the newest seen, and take
    the lease to post when ``post`` is asked and no message exists or is being posted.

    The build is kept only where a message exists or is wanted: a build nobody posts about
    costs one read. A lease is returned only to the delivery that wrote it; a message being
    posted for another event will show what was kept here (its poster renders again when the
    record moved on while it posted, and its event stays unacked until it has). A redelivery
    of the very event being posted gets ``TransientError``: acking it would ack the message
    that the first delivery may still fail to post.
    """
    key = build_key(event)
    build = event.build
    assert build is not None
    at = build.latest_at
    order = [at.timestamp() if at else 0.0, SNAPSHOT_RANK.get(event.event_type, 0)]
    owner = uuid.uuid4().hex
    taken: list[Message | None] = []

    def change(record: dict[str, Any], now: dt.datetime) -> str:
        taken.clear()
        messages, held = record["messages"], record["snapshot"]
        entry = Message.of(messages[notifier]) if isinstance(messages.get(notifier), Mapping) else None
        if entry is None and not post:
            return "no message"
        if not held or list(held.get("order") or []) < order:
            record["snapshot"] = {
                "order": order,
                "event_type": event.event_type,
                "data": _snapshot_data(event),
                "standing": standing.stored(),
            }
        if not post or (entry is not None and entry.state == "posted"):
            return "kept"
        if entry is not None and entry.leased(now):
            return "being posted for this event" if entry.event == event.key_hash else "being posted"
        lost = entry  # a post whose answer was lost, or whose poster vanished: it may exist
        where = channel or (lost.channel if lost else None)
        messages[notifier] = Message("posting", where, owner=owner, since=now, event=event.key_hash).stored()
        taken.append(lost)
        return "leased"

    memory, note, _ = _update(key, change)
    if note == "being posted for this event":
        raise TransientError("another delivery of this event is posting the build's message", retry_after=1.0)
    if not taken:
        return memory, None
    return memory, Lease(key, notifier, owner, memory, taken[0])


def record_post(lease: Lease, channel: str, ts: str, shown: int) -> BuildMemory:
    """The message was posted: note where, and which revision it shows. A message noted by
    another delivery meanwhile (this lease was taken over) is kept: the caller's is the second."""

    def change(record: dict[str, Any], now: dt.datetime) -> str:
        entry = record["messages"].get(lease.notifier)
        if isinstance(entry, Mapping) and entry.get("state") == "posted" and entry.get("ts") != ts:
            return "another"
        posted = Message("posted", channel, ts, shown, lease.owner, now, _text(_mapping(entry).get("event")))
        record["messages"][lease.notifier] = posted.stored()
        return "noted"

    memory, note, _ = _update(lease.key, change, known=lease.memory)  # as the lease left it: no read first
    if note == "another":
        held = memory.message(lease.notifier)
        log.warning("build %s: a second message was posted (%s) after %s", lease.key, ts, held.ts if held else "?")
    return memory


def release_post(lease: Lease, *, uncertain: bool) -> None:
    """The post failed: free the lease. ``uncertain`` (the answer was lost: the message may
    exist) leaves a note that the next poster looks for it first."""

    def change(record: dict[str, Any], now: dt.datetime) -> str:
        entry = record["messages"].get(lease.notifier)
        if not isinstance(entry, Mapping) or entry.get("owner") != lease.owner or entry.get("state") != "posting":
            return "not ours"
        if uncertain:
            record["messages"][lease.notifier] = {**entry, "state": "unknown"}
        else:
            del record["messages"][lease.notifier]
        return "released"

    try:
        _update(lease.key, change)
    except Exception as err:  # the lease runs out on its own
        log.warning("could not release the post lease on build %s: %s", lease.key, type(err).__name__)


def mark_shown(key: str, notifier: str, revision: int) -> BuildMemory:
    """The message now shows ``revision`` (set, not raised: a later update that showed an older
    revision must be followed by one more)."""

    def change(record: dict[str, Any], now: dt.datetime) -> str:
        entry = record["messages"].get(notifier)
        if isinstance(entry, Mapping) and entry.get("state") == "posted":
            record["messages"][notifier] = {**entry, "shown": revision}
        return ""

    return _update(key, change)[0]


def _snapshot_data(event: BuildkiteEvent) -> dict[str, Any]:
    """What a message about the build needs of the event: its build and pipeline, trimmed."""
    build, pipeline = _mapping(event.data.get("build")), _mapping(event.data.get("pipeline"))
    kept = {name: _plain(build[name]) for name in _BUILD_FIELDS if name in build}
    if isinstance(kept.get("message"), str):  # a chat message shows the first line
        title = event.build.message_title if event.build else None
        kept["message"] = (title or "")[:MESSAGE_LIMIT]
    for person in ("author", "creator"):
        value = build.get(person)
        kept[person] = (
            {k: _plain(value.get(k)) for k in ("name", "email")} if isinstance(value, Mapping) else _plain(value)
        )
    kept["organization"] = event.organization
    kept["pipeline"] = event.pipeline_slug
    return {"build": kept, "pipeline": {name: _plain(pipeline[name]) for name in _PIPELINE_FIELDS if name in pipeline}}


def _plain(value: Any, depth: int = 0) -> Any:
    """A field as a message needs it and Firestore takes it: scalars (long text cut) and one
    level of object; anything else (lists, deeper objects: never in Buildkite's payloads) dropped."""
    if isinstance(value, str):
        return value[:MESSAGE_LIMIT]
    if value is None or isinstance(value, bool | int | float):
        return value
    if isinstance(value, Mapping) and depth == 0:
        return {str(k)[:100]: _plain(v, 1) for k, v in list(value.items())[:20]}
    return None
