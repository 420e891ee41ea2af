"""github-status: Buildkite build states as GitHub commit statuses that never go backwards.

One status per build event on ``{owner}/{repo}@{sha}`` under one context per pipeline
(``buildkite/<pipeline slug>`` by default). Deliveries arrive out of order, so every status
first goes through an ordered record in Firestore (buildkite_events.state; one per
repository, commit and context): it is posted only if it is newer than the one held, by
build number, then the build's own latest timestamp (an unblocked build's ``build.running``
is newer than its blocked finish), then how far along the state is. After posting, the
record is read again so that a slower, older post that landed last is repaired at once.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any
from urllib.parse import urlsplit

import functions_framework
from github_api import App, GitHub, owner_repo, parse_repository

from buildkite_events import BuildkiteEvent, InvalidEvent, Skip, TransientError, env, pubsub_handler
from buildkite_events.state import Record, Records
from buildkite_events.timeutil import format_duration

STATES = ("error", "failure", "pending", "success")
DESCRIPTION_LIMIT = 140  # GitHub answers 422 beyond this

# How far along a build is: within a moment of the build, a status never replaces a higher rank.
_RANK = {"creating": 0, "waiting": 0, "scheduled": 0, "running": 1, "blocked": 2, "failing": 3, "canceling": 3}
_TERMINAL = {"passed": "success", "failed": "failure", "canceled": "error", "skipped": "error", "not_run": "error"}
_PENDING = {"creating", "waiting", "scheduled", "running"}
_GITHUB_PROVIDERS = {"github", "github_enterprise"}
_OPEN_PROVIDERS = {"", "private", "unknown"}  # generic git: decide by the repository's host
_SHA = re.compile(r"^[0-9a-fA-F]{40}$")


@dataclass(frozen=True)
class Config:
    api_url: str = env("GITHUB_API_URL", default="https://api.github.com")
    token: str = env("GITHUB_TOKEN", default="", secret=True)
    app_id: str = env("GITHUB_APP_ID", default="")
    app_private_key: str = env("GITHUB_APP_PRIVATE_KEY", default="", secret=True)
    installation_id: str = env("GITHUB_APP_INSTALLATION_ID", default="")
    context: str = env("GITHUB_STATUS_CONTEXT", default="buildkite/{pipeline}")
    blocked_state: str = env("GITHUB_BLOCKED_STATE", default="pending")
    timeout_seconds: float = env("GITHUB_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("https://", "http://")):
            raise ValueError("GITHUB_API_URL must be an http(s) URL, e.g. https://api.github.com")
        if self.blocked_state not in STATES:
            raise ValueError(f"GITHUB_BLOCKED_STATE must be one of {', '.join(STATES)}")
        app = {
            "GITHUB_APP_ID": self.app_id,
            "GITHUB_APP_INSTALLATION_ID": self.installation_id,
            "GITHUB_APP_PRIVATE_KEY": self.app_private_key,
        }
        if any(app.values()):
            missing = [name for name, value in app.items() if not value.strip()]
            if missing:
                raise ValueError(f"GitHub App authentication also needs {', '.join(missing)}")
            if not self.installation_id.strip().isdigit():
                raise ValueError("GITHUB_APP_INSTALLATION_ID must be a number")
        elif not self.token.strip():
            raise ValueError(
                "set GITHUB_TOKEN, or GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID and GITHUB_APP_PRIVATE_KEY"
            )
        try:
            self.context.format(pipeline="p", organization="o")
        except (KeyError, IndexError, ValueError):
            raise ValueError("GITHUB_STATUS_CONTEXT may only use {pipeline} and {organization}") from None

    @property
    def uses_app(self) -> bool:
        return bool(self.app_id)

    @property
    def host(self) -> str:
        """The web host whose repositories this API serves (github.com, or the GHES host)."""
        host = (urlsplit(self.api_url).hostname or "").lower()
        return "github.com" if host == "api.github.com" else host


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


@functions_framework.cloud_event
@pubsub_handler(Config)
def update_github_status(event: BuildkiteEvent, config: Config) -> str:
    return publish(plan_status(event, config), _github(config), _records())


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


# -- from a Buildkite event to a commit status ---------------------------------------------


def plan_status(event: BuildkiteEvent, config: Config) -> Status:
    """The status this event asks for; ``Skip`` says why it asks for none."""
    build = event.build
    if build is None or build.number is None:
        raise InvalidEvent(f"{event.event_type} carries no build number")
    try:
        repo = repository_of(event, config)
    except NotOnGitHub as why:
        raise Skip(f"no status: {why}") from None
    commit = (build.commit or "").strip()
    if not _SHA.match(commit):
        raise Skip(f"no status: commit {commit[:50]!r} is not a full 40-character SHA (a UI or API build?)")
    mapped = github_state(build.effective_state, config.blocked_state)
    if mapped is None:
        raise Skip(f"no status for build state {build.effective_state!r}")
    state, rank = mapped
    moment = build.latest_at or event.occurred_at  # no build timestamp at all: the publish time
    return Status(
        repo=repo,
        sha=commit.lower(),
        context=status_context(event, config),
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
        return _TERMINAL[state], 4
    if state == "blocked":
        return blocked_state, _RANK["blocked"]
    if state == "failing":
        return "failure", _RANK["failing"]  # as Buildkite's own GitHub integration does
    if state == "canceling":
        return "error", _RANK["canceling"]
    if state in _PENDING:
        return "pending", _RANK[state]
    return None


def describe(number: int, state: str, duration: float | None) -> str:
    """ "Build #2042 failed in 5m10s": short, and never over GitHub's 140 characters."""
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
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


def status_context(event: BuildkiteEvent, config: Config) -> str:
    return config.context.format(pipeline=event.pipeline_slug or "pipeline", organization=event.organization or "")


class NotOnGitHub(Exception):
    """The build's repository is not one this function can set statuses on (acked, no request)."""


def repository_of(event: BuildkiteEvent, config: Config) -> str:
    """``owner/repo`` on this GitHub; ``NotOnGitHub`` says why the build is not on it."""
    pipeline = event.pipeline
    provider = (pipeline.provider or "").lower() if pipeline else ""
    url = (pipeline.repository if pipeline else None) or ""
    if provider in _GITHUB_PROVIDERS:
        from_settings = (pipeline.provider_repository if pipeline else None) or ""
        if owner_repo(from_settings.strip("/").split("/")):
            return from_settings.strip("/")
        parsed = parse_repository(url)
        if parsed:
            return parsed[1]
        raise NotOnGitHub(f"the {provider} pipeline's repository {url[:200]!r} is not an owner/repo I can read")
    if provider not in _OPEN_PROVIDERS:
        raise NotOnGitHub(f"the pipeline's provider is {provider}, not GitHub")
    parsed = parse_repository(url)
    if parsed and parsed[0] in {"github.com", config.host}:
        return parsed[1]
    raise NotOnGitHub(f"repository {url[:200]!r} is not on {config.host}" if url else "the pipeline has no repository")


@cache
def _github(config: Config) -> GitHub:
    app = App(config.app_id, config.installation_id, config.app_private_key) if config.uses_app else None
    return GitHub(config.api_url, token=config.token, app=app, timeout=config.timeout_seconds)


@cache
def _records() -> Records:
    return Records("github-status.status")  # one per repository, commit and context
