"""jira-update: comment on the Jira issues a finished build mentions, and move them on failure.

Issue keys come from the commit message and the branch name, restricted to projects that
exist (``JIRA_PROJECTS``, or the projects the credentials can see). Each comment carries a
comment property naming the build and its outcome, and ends with the same as a visible
marker line; before commenting, the issue's comments are searched for either (the property
first: Jira Cloud renders comment text back from its own format, not byte for byte), so a
redelivered or retried message never comments twice, even when an earlier attempt got
through only some of its keys. The comment is POSTed once per attempt (see ``post_comment``).
"""

from __future__ import annotations

import logging
import re
import threading
import time
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import functions_framework
from jira_api import call, connect, has_marker, post_comment

from buildkite_events import BuildkiteEvent, ConfigError, InvalidEvent, TransientError, env, pubsub_handler
from buildkite_events.errors import FanoutError, Skip
from buildkite_events.log import log
from buildkite_events.timeutil import format_duration

if TYPE_CHECKING:
    from jira import JIRA

# Look like issue keys, never are: character sets, hashes, standards, advisories.
NOT_PROJECTS = frozenset({"UTF", "UCS", "SHA", "MD", "ISO", "IEC", "RFC", "CVE", "CWE", "GHSA", "AES", "RSA", "TLS"})
TERMINAL = ("passed", "failed", "canceled", "skipped", "not_run")
MARKER_PREFIX = "buildkite-fanout:"
PROJECTS_TTL_SECONDS = 3600.0
MAX_CANDIDATE_KEYS = 200  # per text (message, branch); JIRA_MAX_ISSUES later caps what is updated
_KEY = re.compile(r"(?<![A-Za-z0-9_])([A-Z][A-Z0-9_]{1,19})-([1-9][0-9]{0,8})(?![0-9A-Za-z])")
_PROJECT = re.compile(r"^[A-Z][A-Z0-9_]{1,19}$")
_SAFE = re.compile(r"[^A-Za-z0-9._-]+")
_WIKI_SPECIAL = re.compile(r"([\\\[\]{}|!*_^~+?#])")
_WEB_URL = re.compile(r"^https?://[^\s|\[\]{}]+$")
_ICONS = {"passed": "(/)", "failed": "(x)", "canceled": "(!)"}


@dataclass(frozen=True)
class Config:
    server: str = env("JIRA_SERVER")
    token: str = env("JIRA_TOKEN", secret=True)
    user: str = env("JIRA_USER", default="")
    projects: tuple[str, ...] = env("JIRA_PROJECTS", default=())
    failure_transition: str = env("JIRA_FAILURE_TRANSITION", default="Needs Review")
    max_issues: int = env("JIRA_MAX_ISSUES", default=20)
    max_retries: int = env("JIRA_MAX_RETRIES", default=2)
    timeout_seconds: float = env("JIRA_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        if not self.server.startswith(("https://", "http://")):
            raise ValueError("JIRA_SERVER must be an http(s) URL, e.g. https://your-company.atlassian.net")
        projects = tuple(p.strip().upper() for p in self.projects if p.strip())
        bad = [p for p in projects if not _PROJECT.match(p)]
        if bad:
            raise ValueError(f"JIRA_PROJECTS holds {', '.join(bad)}, which are not Jira project keys")
        object.__setattr__(self, "projects", projects)
        if self.max_issues < 1 or not 0 <= self.max_retries <= 5:
            raise ValueError("JIRA_MAX_ISSUES must be at least 1 and JIRA_MAX_RETRIES between 0 and 5")
        if not 0 < self.timeout_seconds <= 60:
            raise ValueError("JIRA_TIMEOUT_SECONDS must be more than 0 and at most 60")


def finished_with_keys(event: BuildkiteEvent, config: object = None) -> list[str]:
    """The issue keys a finished build names; ``Skip`` for a build with none or not finished.
    Checked before the event is claimed too: most builds name no issue and cost no Firestore call."""
    build = event.build
    if build is None or build.number is None:
        raise InvalidEvent(f"{event.event_type} carries no build")
    verdict = build.effective_state  # a build its block step set to failed has failed
    if verdict == "blocked":
        raise Skip(f"build #{build.number} is blocked on a block step, not finished: no comment yet")
    if verdict not in TERMINAL:
        raise Skip(f"build #{build.number} is {verdict!r}, not finished: no comment")
    candidates = candidate_keys(build.message, build.branch)
    if not candidates:
        raise Skip("no Jira issue keys in the commit message or branch")
    return candidates


@functions_framework.cloud_event
@pubsub_handler(Config, before_claim=finished_with_keys)
def update_jira_tickets(event: BuildkiteEvent, config: Config) -> str:
    candidates = finished_with_keys(event)
    jira = _jira(config)
    projects = known_projects(jira, config)
    keys = issue_keys(candidates, projects, trusted=bool(config.projects))
    if not keys:
        raise Skip(f"no keys of known Jira projects among {', '.join(candidates[:10])}")
    if len(keys) > config.max_issues:
        log(logging.WARNING, f"{len(keys)} issue keys; updating the first {config.max_issues} (JIRA_MAX_ISSUES)")
        keys = keys[: config.max_issues]
    return update_issues(jira, keys, event, config)


def update_issues(jira: JIRA, keys: list[str], event: BuildkiteEvent, config: Config) -> str:
    """Every key is tried; then one failing key nacks the message (done keys are skipped on retry)."""
    results: list[str] = []
    failures: list[TransientError | ConfigError] = []
    for key in keys:
        try:
            results.append(f"{key} {update_issue(jira, key, event, config)}")
        except InvalidEvent as err:  # no such issue, or Jira refused the comment: retrying cannot help
            log(logging.WARNING, f"skipping {key}: {err}")
            results.append(f"{key} skipped ({err})")
        except ConfigError as err:
            if err.status == 401:  # the credentials: every other key would fail the same way
                raise ConfigError(f"Jira rejected the credentials at {key}: {err}") from None
            failures.append(err)
            results.append(f"{key} failed ({err})")
        except TransientError as err:
            failures.append(err)
            results.append(f"{key} failed ({err})")
    summary = "; ".join(results)
    waits = [f.retry_after for f in failures if isinstance(f, TransientError)]
    if waits:
        hints = [wait for wait in waits if wait is not None]
        raise TransientError(summary, retry_after=max(hints) if hints else None)
    if failures:
        raise ConfigError(f"Jira denied access: {summary}")
    return summary


def update_issue(jira: JIRA, key: str, event: BuildkiteEvent, config: Config) -> str:
    """Comment once per build outcome; on failure move the issue first (so a found marker means both done)."""
    issue = call(jira.issue, key, fields="summary,status")
    key = str(getattr(issue, "key", None) or key)  # a moved issue answers with its new key
    marker = build_marker(event)
    if has_marker(jira, key, marker):
        return "already commented"
    moved = None
    build = event.build
    if build and build.effective_state == "failed" and config.failure_transition.strip():
        moved = move(jira, issue, key, config.failure_transition.strip())
    call(post_comment, jira, key, comment_body(event, marker, moved), marker)
    return f"commented, moved to {moved}" if moved else "commented"


def move(jira: JIRA, issue: Any, key: str, wanted: str) -> str | None:
    """Do the transition named ``wanted`` (or leading to a status of that name); None if there is none."""
    status = getattr(getattr(getattr(issue, "fields", None), "status", None), "name", None)
    if isinstance(status, str) and status.lower() == wanted.lower():
        log(logging.INFO, f"{key} is already in {status}")
        return None
    transitions = call(jira.transitions, key)
    for transition in transitions:
        target = (transition.get("to") or {}).get("name") or ""
        if wanted.lower() in (str(transition.get("name", "")).lower(), str(target).lower()):
            try:
                call(jira.transition_issue, key, str(transition["id"]))
            except InvalidEvent as err:
                log(logging.WARNING, f"Jira refused the transition {transition.get('name')!r} on {key}: {err}")
                return None
            return str(target or transition.get("name"))
    names = ", ".join(repr(t.get("name")) for t in transitions) or "none"
    log(logging.INFO, f"no transition {wanted!r} available on {key} (status {status!r}; available: {names})")
    return None


# -- keys -----------------------------------------------------------------------------------


def candidate_keys(message: str | None, branch: str | None) -> list[str]:
    """Keys in the commit message (as written) and the branch (any case), in order, once each.

    Linear in the text (a dict finds repeats), and at most ``MAX_CANDIDATE_KEYS`` from each:
    a message listing thousands of keys is not a build reference to follow.
    """
    found: dict[str, None] = {}
    for text in (message or "", (branch or "").upper()):
        limit = len(found) + MAX_CANDIDATE_KEYS
        for match in _KEY.finditer(text):
            found.setdefault(f"{match.group(1)}-{match.group(2)}")
            if len(found) >= limit:
                break
    return list(found)


def issue_keys(candidates: list[str], projects: frozenset[str], *, trusted: bool = False) -> list[str]:
    """Candidates whose project exists. Look-alikes (UTF-8, SHA-256, ISO-8601) are dropped unless
    the operator listed that project in JIRA_PROJECTS (``trusted``)."""
    keys = []
    for key in candidates:
        project = key.rsplit("-", 1)[0]
        if project in projects and (trusted or project not in NOT_PROJECTS):
            keys.append(key)
    return keys


_projects_lock = threading.Lock()
_projects: dict[tuple[str, str], tuple[float, frozenset[str]]] = {}


def known_projects(jira: JIRA, config: Config) -> frozenset[str]:
    """JIRA_PROJECTS, or the project keys these credentials can see (asked once an hour per instance)."""
    if config.projects:
        return frozenset(config.projects)
    cache_key = (config.server, config.user)
    with _projects_lock:
        cached = _projects.get(cache_key)
        if cached and time.monotonic() - cached[0] < PROJECTS_TTL_SECONDS:
            return cached[1]
        try:
            listed = call(jira.projects)
        except TransientError as err:
            raise TransientError(f"could not list Jira projects: {err}", retry_after=err.retry_after) from None
        except FanoutError as err:  # no project list where JIRA_SERVER points, or no access to it
            raise ConfigError(f"could not list Jira projects: {err}", status=err.status) from None
        keys = frozenset(str(p.key).upper() for p in listed if getattr(p, "key", None))
        _projects[cache_key] = (time.monotonic(), keys)
        log(logging.INFO, f"Jira projects visible to these credentials: {len(keys)}")
        return keys


# -- the comment -------------------------------------------------------------------------------


def build_marker(event: BuildkiteEvent) -> str:
    """The visible, searchable line that says "this build's outcome was already reported here"."""
    build = event.build
    verdict = build.effective_state if build else None
    parts = (event.organization, event.pipeline_slug, build.number if build else None, verdict)
    return MARKER_PREFIX + "/".join(_SAFE.sub("_", str(p)) if p not in (None, "") else "-" for p in parts)


def escape(text: str) -> str:
    """Jira wiki markup: untrusted text can neither format, link, mention (``[~user]``) nor embed."""
    text = " ".join(text.split())  # no line breaks: a new line could start a heading or a table
    text = _WIKI_SPECIAL.sub(r"\\\1", text)
    return re.sub(r"(^|\s)-", r"\1\\-", text)  # "-word-" would strike through


def comment_body(event: BuildkiteEvent, marker: str, moved: str | None = None) -> str:
    build = event.build
    assert build is not None
    state = build.effective_state or "finished"
    pipeline = event.pipeline
    name = escape((pipeline.name if pipeline else None) or event.pipeline_slug or "pipeline")
    title = f"{name} #{build.number}"
    link = f"[{title}|{build.web_url}]" if build.web_url and _WEB_URL.match(build.web_url) else title
    details = [
        f"Pipeline: {escape(event.pipeline_slug)}" if event.pipeline_slug else None,
        f"Branch: {escape(build.branch)}" if build.branch else None,
        f"Commit: {escape(build.short_commit)}" if build.short_commit else None,
        f"Took {format_duration(build.duration_seconds)}" if build.duration_seconds is not None else None,
    ]
    lines = [f"{_ICONS.get(state, '(i)')} Buildkite build {link} *{escape(state)}*"]
    lines.append(" · ".join(d for d in details if d))
    if moved:
        lines.append(f"Moved to *{escape(moved)}* because the build failed.")
    lines.append(f"{{color:#97a0af}}{marker}{{color}}")
    return "\n".join(lines)


# -- the client -----------------------------------------------------------------------------------


@cache
def _jira(config: Config) -> JIRA:
    """One client per instance; building it makes no request."""
    return connect(config.server, config.user, config.token, config.max_retries, config.timeout_seconds)
