"""What the chat notifiers (Slack, Teams) share: which finished builds to notify, which
pipelines and branches, and how each verdict looks. Each notifier keeps its own layout, its
provider's escaping and its provider's fix-it messages.
"""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from urllib.parse import urlsplit

from .errors import InvalidEvent, Skip
from .event import Build, BuildkiteEvent
from .text import clean

FINISHED_STATES = ("passed", "failed", "blocked", "canceled", "skipped", "not_run")


@dataclass(frozen=True)
class Look:
    icon: str
    verb: str  # "#2042 failed", "#2043 is blocked"
    tone: str  # attention, good, warning or default (Adaptive Cards' colour names, in lower case)


LOOKS = {
    "failed": Look("🔴", "failed", "attention"),
    "passed": Look("✅", "passed", "good"),
    "blocked": Look("⏸️", "is blocked", "warning"),
    "canceled": Look("⛔", "was canceled", "warning"),
    "skipped": Look("⏭️", "was skipped", "default"),
    "not_run": Look("⚪", "was not run", "default"),
}


def look(state: str) -> Look:
    """How a verdict looks; an unknown state shows as itself, cleaned."""
    return LOOKS.get(state) or Look("ℹ️", clean(state)[:40] or "finished", "default")


def notify_states(values: tuple[str, ...], variable: str) -> frozenset[str]:
    """The configured finished states; ``all`` (or ``*``) means every one."""
    states = {value.strip().lower() for value in values if value.strip()}
    if states & {"all", "*"}:
        return frozenset(FINISHED_STATES)
    unknown = sorted(states - set(FINISHED_STATES))
    if unknown:
        hint = " (Buildkite spells it canceled)" if "cancelled" in unknown else ""
        raise ValueError(
            f"{variable}: unknown state {', '.join(unknown)}{hint}; use any of {', '.join(FINISHED_STATES)}, or all"
        )
    if not states:
        raise ValueError(f"{variable} names no state; use any of {', '.join(FINISHED_STATES)}, or all")
    return frozenset(states)


def notified_build(event: BuildkiteEvent, states: frozenset[str]) -> Build:
    """The finished build whose verdict is one of ``states``; ``Skip`` says why another is not notified."""
    build = event.build
    if event.event_type != "build.finished":
        raise Skip(f"{event.event_type} is not build.finished")
    if build is None:
        raise InvalidEvent("build.finished carries no build (no id and no number)")
    state = build.effective_state or "unknown"
    if state not in states:
        raise Skip(f"state {clean(state)[:40]} not notified")
    return build


@dataclass(frozen=True)
class BuildGlob:
    """``pipeline-glob[@branch-glob]``: shell-style globs (``*``, ``?``, ``[...]``), case-sensitive,
    on the pipeline slug and the build's branch. Without ``@`` every branch matches."""

    pipeline: str
    branch: str | None = None

    @classmethod
    def parse(cls, text: str) -> BuildGlob | None:
        """The glob ``text`` spells, or None if it spells none (the caller names the variable)."""
        pipeline, at, branch = text.strip().partition("@")
        pipeline, branch = pipeline.strip(), branch.strip()
        if not pipeline or (at and not branch):
            return None
        return cls(pipeline, branch if at else None)

    def matches(self, pipeline: str | None, branch: str | None) -> bool:
        if not fnmatch.fnmatchcase(pipeline or "", self.pipeline):
            return False
        return self.branch is None or (branch is not None and fnmatch.fnmatchcase(branch, self.branch))


def where(event: BuildkiteEvent) -> str:
    """``pipeline@branch`` for a log line, cleaned and short."""
    branch = event.build.branch if event.build else None
    return f"{clean(event.pipeline_slug)[:80] or '?'}@{clean(branch)[:80] or '?'}"


def context_line(event: BuildkiteEvent) -> str:
    """ "acme · pull request #12 · via webhook · finished 2025-06-12 03:36 UTC" (cleaned, not escaped)."""
    build = event.build
    parts = [clean(event.organization)]
    if build and build.pull_request:
        parts.append(f"pull request #{clean(build.pull_request.id)}")
    if build and build.source:
        parts.append(f"via {clean(build.source)}")
    if build and build.finished_at:
        parts.append(f"finished {build.finished_at:%Y-%m-%d %H:%M} UTC")
    return " · ".join(part for part in parts if part)


def check_url(url: str, variable: str, hint: str = "") -> None:
    """https, or plain http to this machine only (a local stand-in). The value may be a
    secret: the message never repeats it."""
    parts = urlsplit(url)
    local = parts.hostname in ("127.0.0.1", "localhost", "::1")
    if not parts.netloc or (parts.scheme != "https" and not (parts.scheme == "http" and local)):
        raise ValueError(f"{variable} must be an https URL (plain http only to localhost){hint}")
