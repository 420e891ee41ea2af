"""What the chat notifiers (Slack, Teams) share: which builds to notify (a verdict, or where
it stands on its branch: broken, fixed), which pipelines and branches, how each verdict looks
and what its headline says ("#2251 failed (2nd failure in a row on main)"). Each notifier
keeps its own layout, its provider's escaping and its provider's fix-it messages.
"""

from __future__ import annotations

import fnmatch
from typing import NamedTuple
from urllib.parse import urlsplit

from .builds import BranchStanding, FailedJob
from .errors import InvalidEvent, Skip
from .event import Build, BuildkiteEvent
from .text import clean, ordinal, plural

FINISHED_STATES = ("passed", "failed", "blocked", "canceled", "skipped", "not_run")
STANDINGS = ("broken", "fixed")  # a failure right after a pass, a pass right after a failure (same branch)
NOTIFY_STATES = FINISHED_STATES + STANDINGS
BRANCH_LIMIT = 60  # of a branch name inside a headline


class Look(NamedTuple):
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
    "failing": Look("🔴", "is failing", "attention"),  # still running, with a hard failure
}


def look(state: str) -> Look:
    """How a verdict looks; an unknown state shows as itself, cleaned."""
    return LOOKS.get(state) or Look("ℹ️", clean(state)[:40] or "finished", "default")


def notify_states(values: tuple[str, ...], variable: str) -> frozenset[str]:
    """The configured states: finished verdicts, ``broken`` and ``fixed``; ``all`` (or ``*``) means every one."""
    states = {value.strip().lower() for value in values if value.strip()}
    if states & {"all", "*"}:
        return frozenset(NOTIFY_STATES)
    unknown = sorted(states - set(NOTIFY_STATES))
    if unknown:
        hint = " (Buildkite spells it canceled)" if "cancelled" in unknown else ""
        raise ValueError(
            f"{variable}: unknown state {', '.join(unknown)}{hint}; use any of {', '.join(NOTIFY_STATES)}, or all"
        )
    if not states:
        raise ValueError(f"{variable} names no state; use any of {', '.join(NOTIFY_STATES)}, or all")
    return frozenset(states)


def notified(state: str, standing: BranchStanding | None, states: frozenset[str]) -> bool:
    """Whether a build of verdict ``state`` (``failed`` for a failing build) is notified: its
    state is one of ``states``, or it broke (``broken``) or fixed (``fixed``) its branch."""
    if state in states:
        return True
    return standing is not None and ((standing.broken and "broken" in states) or (standing.fixed and "fixed" in states))


def notified_build(event: BuildkiteEvent, states: frozenset[str], standing: BranchStanding | None = None) -> Build:
    """The finished build to notify (see ``notified``); ``Skip`` says why another is not notified."""
    build = event.build
    if event.event_type != "build.finished":
        raise Skip(f"{event.event_type} is not build.finished")
    if build is None:
        raise InvalidEvent("build.finished carries no build (no id and no number)")
    state = build.effective_state or "unknown"
    if not notified(state, standing, states):
        raise Skip(f"state {clean(state)[:40]} not notified")
    return build


def headline(build: Build, standing: BranchStanding | None) -> tuple[Look, str]:
    """How the build looks, and what it did, where it stands, unescaped: "#2251 failed (2nd
    failure in a row on main)", "#2252 fixed main (passed after 2 failures)", "#2250 failed
    (broke main)", "#2253 is failing (2nd failure in a row on main)"."""
    state = build.effective_state or "unknown"
    number = f"#{build.number}" if build.number is not None else "(no number)"
    branch = clean(build.branch)[:BRANCH_LIMIT] or "its branch"
    shown = look(state)
    if standing is None or state not in ("passed", "failed", "failing"):
        return shown, f"{number} {shown.verb}"
    if state == "passed" and standing.fixed:
        failures = plural(standing.previous_streak, "failure") if standing.previous_streak else "a failure"
        return Look("✅", f"fixed {branch}", "good"), f"{number} fixed {branch} (passed after {failures})"
    if state != "passed" and standing.streak >= 2:
        return shown, f"{number} {shown.verb} ({ordinal(standing.streak)} failure in a row on {branch})"
    if state != "passed" and standing.broken:
        return shown, f"{number} {shown.verb} ({'breaking' if state == 'failing' else 'broke'} {branch})"
    return shown, f"{number} {shown.verb}"


def job_detail(job: FailedJob) -> str:
    """ "exit 1", "timed out", "exit 2 after 1 retry": what a failed job's line says after its name."""
    what = {"timed_out": "timed out", "expired": "expired before an agent took it"}.get(job.state)
    if what is None:
        what = f"exit {job.exit_status}" if job.exit_status is not None else "failed"
    return what + (f" after {plural(job.retries, 'retry', 'retries')}" if job.retries else "")


class BuildGlob(NamedTuple):
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
