"""Commit statuses that never go backwards.

One status per build event on ``{owner}/{repo}@{sha}`` under one context per pipeline. Deliveries
arrive out of order, so every status first goes through an ordered record in Firestore
(buildkite_events.state; one per repository, commit and context): it is posted only if it is
newer than the one held, by build number, then the build's own latest timestamp (an unblocked
build's ``build.running`` is newer than its blocked finish), then how far along the state is.
After posting, the record is read again so that a slower, older post that landed last is
repaired at once.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from github_api import GitHub, Target

from buildkite_events import BuildkiteEvent, InvalidEvent, Skip, TransientError
from buildkite_events.state import Record, Records
from buildkite_events.timeutil import format_duration

STATES = ("error", "failure", "pending", "success")
DESCRIPTION_LIMIT = 140  # GitHub answers 422 beyond this

# How far along a build is: within a moment of the build, a status never replaces a higher rank.
RANK = {"creating": 0, "waiting": 0, "scheduled": 0, "running": 1, "blocked": 2, "failing": 3, "canceling": 3}
FINISHED_RANK = 4
_TERMINAL = {"passed": "success", "failed": "failure", "canceled": "error", "skipped": "error", "not_run": "error"}
_PENDING = {"creating", "waiting", "scheduled", "running"}


@dataclass(frozen=True)
class Status:
    """One commit status, and where it stands among the statuses of its commit and context."""

    repo: str
    sha: str
    context: str
    state: str
    description: str
    target_url: str | None
    build: int
    at: float  # the build's own latest timestamp (seconds): later events of a build have later ones
    rank: int  # how far along the state is, for two events of the same moment

    @property
    def key(self) -> str:
        return f"{self.repo.lower()}|{self.sha}|{self.context.lower()}"  # GitHub: context is case-insensitive

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.state, "description": self.description, "context": self.context}
        if self.target_url:
            body["target_url"] = self.target_url
        return body

    @property
    def where(self) -> str:
        return f"{self.repo}@{self.sha[:7]} ({self.context})"

    @classmethod
    def held(cls, record: Record) -> Status:
        """The status an ordered record holds: its value, and its order (build, at, rank)."""
        build, at, rank = record.order
        value = record.value
        return cls(
            repo=value["repo"],
            sha=value["sha"],
            context=value["context"],
            state=value["state"],
            description=value["description"],
            target_url=value.get("target_url"),
            build=int(build),
            at=float(at),
            rank=int(rank),
        )


def publish(status: Status, github: GitHub, records: Records) -> str:
    """Post ``status`` unless a newer one is held; then make sure the newest is on top."""
    value = {"repo": status.repo, "sha": status.sha, **status.body}
    reservation = records.reserve(status.key, (status.build, status.at, status.rank), value)
    held = Status.held(reservation.record)
    if reservation.verdict == "confirmed":
        raise Skip(f"already set {held.state} on {held.where}: {held.description}")
    if reservation.verdict == "stale":
        raise Skip(
            f"kept {held.state} of build #{held.build} on {held.where}: "
            f"{status.state} ({status.description}) would be a step back"
        )
    github.create_status(held.repo, held.sha, held.body)
    note, posted = "", reservation.record
    for _ in range(5):
        newer = records.confirm(posted)
        if newer is None:
            return f"set {status.state} on {status.where}: {status.description}{note}"
        # A newer status was reserved while ours was in flight, and ours may have landed
        # after it: post the newer one again so that it is the one on top.
        posted, shown = newer, Status.held(newer)
        github.create_status(shown.repo, shown.sha, shown.body)
        note = f"; re-posted the newer {shown.state} of build #{shown.build} on top"
    raise TransientError(f"statuses for {status.where} kept changing; will check again")


def status_for(event: BuildkiteEvent, target: Target, blocked_state: str) -> Status:
    """The status this build event asks for on ``target``; ``Skip`` says why it asks for none."""
    build = event.build
    if build is None or build.number is None:
        raise InvalidEvent(f"{event.event_type} carries no build number")
    mapped = github_state(build.effective_state, blocked_state)
    if mapped is None:
        raise Skip(f"no status for build state {build.effective_state!r}")
    state, rank = mapped
    moment = build.latest_at or event.occurred_at  # no build timestamp at all: the publish time
    return Status(
        repo=target.repo,
        sha=target.sha,
        context=target.name,
        state=state,
        description=describe(build.number, build.effective_state or "", build.duration_seconds),
        target_url=build.web_url,
        build=build.number,
        at=moment.timestamp() if moment else 0.0,
        rank=rank,
    )


def github_state(state: str | None, blocked_state: str = "pending") -> tuple[str, int] | None:
    """(GitHub state, rank) for a Buildkite build state; None for a state we do not report."""
    if state in _TERMINAL:
        return _TERMINAL[state], FINISHED_RANK
    if state == "blocked":
        return blocked_state, RANK["blocked"]
    if state == "failing":
        return "failure", RANK["failing"]  # as Buildkite's own GitHub integration does
    if state == "canceling":
        return "error", RANK["canceling"]
    if state in _PENDING:
        return "pending", RANK[state]
    return None


def describe(number: int, state: str, duration: float | None, limit: int = DESCRIPTION_LIMIT) -> str:
    """ "Build #2042 failed in 5m10s": short, and never over ``limit`` (GitHub's 140 for a status)."""
    took = format_duration(duration)
    words = {
        "scheduled": "is scheduled",
        "creating": "is scheduled",
        "waiting": "is waiting",
        "running": "is running",
        "failing": "is failing",
        "blocked": "is blocked, waiting to be unblocked",
        "canceling": "is being canceled",
        "canceled": "was canceled",
        "skipped": "was skipped",
        "not_run": "did not run",
        "passed": f"passed in {took}" if took else "passed",
        "failed": f"failed in {took}" if took else "failed",
    }
    text = f"Build #{number} {words.get(state, state)}"
    return text if len(text) <= limit else text[: limit - 1] + "…"
