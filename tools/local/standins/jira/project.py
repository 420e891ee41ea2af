"""The Jira site the stand-in answers for: projects, issues with their comments and
transitions, accepted tokens; the helpers tests use to shape it."""

from __future__ import annotations

import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from tools.local.standin import StandIn

PREFIX = "/jira/rest/api/2"
DEMO_TOKEN = "local-jira-update-jira_token"  # what the local stack sets JIRA_TOKEN to  # noqa: S105
_KEY = "jira"
_STATUS_IDS = {"To Do": "10000", "In Progress": "3", "Needs Review": "10003", "Done": "10001"}
_CATEGORY = {"To Do": "new", "In Progress": "indeterminate", "Needs Review": "indeterminate", "Done": "done"}
# (id, name, target status): every transition is offered except the one to the current status.
WORKFLOW = [("11", "Back to To Do", "To Do"), ("21", "Start Progress", "In Progress"),
            ("31", "Needs Review", "Needs Review"), ("41", "Done", "Done")]  # fmt: skip


@dataclass
class Issue:
    key: str
    id: str
    summary: str
    status: str = "To Do"
    comments: list[dict[str, Any]] = field(default_factory=list)  # oldest first
    transitions: list[tuple[str, str]] = field(default_factory=list)  # (from, to) done through the API

    @property
    def project(self) -> str:
        return self.key.rsplit("-", 1)[0]


@dataclass
class JiraState:
    projects: dict[str, str] = field(default_factory=dict)  # key -> name
    issues: dict[str, Issue] = field(default_factory=dict)
    tokens: set[str] = field(default_factory=lambda: {DEMO_TOKEN})
    forbidden: set[str] = field(default_factory=set)  # issue keys these credentials may see but not comment on
    max_results: int = 50  # Jira caps a page whatever the client asks for
    workflow: list[tuple[str, str, str]] = field(default_factory=lambda: list(WORKFLOW))
    next_id: int = 10000
    seeded_comments: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def state(server: StandIn) -> JiraState:
    """This provider's data on ``server`` (seeded on first use, again after ``server.reset()``)."""
    return server.provider_state(_KEY, JiraState, _seed)


def _seed() -> JiraState:
    jira = JiraState(projects={"PROJ": "Project Phoenix", "OPS": "Operations"})
    _add_issue(jira, "PROJ-123", "Rate-limit the login endpoint", "In Progress", seeded=2)
    _add_issue(jira, "PROJ-124", "Lock accounts after repeated failures", "To Do")
    _add_issue(jira, "OPS-7", "Alert on build queue wait times", "In Progress")
    return jira


def _add_issue(jira: JiraState, key: str, summary: str, status: str, seeded: int = 0) -> Issue:
    issue = Issue(key=key, id=str(20000 + len(jira.issues)), summary=summary, status=status)
    jira.issues[key] = issue
    start = datetime(2025, 6, 1, 9, 0, tzinfo=UTC)
    for i in range(seeded):
        _new_comment(jira, issue, f"Earlier discussion, comment {i + 1}.", "Alex Reviewer", start + timedelta(hours=i))
    jira.seeded_comments += seeded
    return issue


# -- helpers for tests ----------------------------------------------------------------------


def add_project(server: StandIn, key: str, name: str = "") -> None:
    state(server).projects[key] = name or key


def add_issue(
    server: StandIn, key: str, summary: str = "An issue", status: str = "In Progress", comments: int = 0
) -> Issue:
    jira = state(server)
    jira.projects.setdefault(key.rsplit("-", 1)[0], key.rsplit("-", 1)[0])
    return _add_issue(jira, key, summary, status, seeded=comments)


def add_comment(server: StandIn, key: str, body: str, author: str = "Someone") -> None:
    jira = state(server)
    issue = jira.issues[key]
    when = datetime(2025, 6, 1, tzinfo=UTC) + timedelta(minutes=len(issue.comments))
    _new_comment(jira, issue, body, author, when)
    jira.seeded_comments += 1


def allow_token(server: StandIn, token: str) -> None:
    state(server).tokens.add(token)


def issue(server: StandIn, key: str) -> Issue:
    return state(server).issues[key]


def new_comments(server: StandIn, key: str) -> list[str]:
    """Bodies of the comments added through the API (not the seeded ones), as Jira renders them back."""
    return [c["body"] for c in state(server).issues[key].comments if not c.get("seeded")]


def comment_properties(server: StandIn, key: str) -> list[dict[str, Any]]:
    """The properties of each comment added through the API."""
    return [dict(c["properties"]) for c in state(server).issues[key].comments if not c.get("seeded")]


def edit_comment(server: StandIn, key: str, body: str, index: int = -1) -> None:
    """Someone edits a comment in Jira: its text changes, its properties stay."""
    state(server).issues[key].comments[index]["body"] = _rendered(body)


# -- comments as Jira keeps them ------------------------------------------------------

_NEEDLESS_ESCAPE = re.compile(r"\\([^\w\s\\\[\]{}|!*_^~+?#-])|(?<=\w)\\([-_])")
_COLOUR = re.compile(r"\{color:(#[0-9A-Fa-f]{6})\}")


def _rendered(body: str) -> str:
    lines = []
    for line in body.splitlines():
        line = _NEEDLESS_ESCAPE.sub(lambda m: m.group(1) or m.group(2), line)
        line = _COLOUR.sub(lambda m: "{color:" + m.group(1).lower() + "}", line)
        lines.append(re.sub(r"[ \t]+", " ", line).rstrip())
    return "\n".join(lines)


def _new_comment(jira: JiraState, issue: Issue, body: str, author: str, when: datetime, *, seeded: bool = True,
                 properties: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    jira.next_id += 1
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    comment = {"self": f"{PREFIX}/issue/{issue.id}/comment/{jira.next_id}", "id": str(jira.next_id),
               "body": _rendered(body), "properties": dict(properties or {}), "author": author,
               "created": stamp, "updated": stamp, "jsdPublic": True, "seeded": seeded}  # fmt: skip
    issue.comments.append(comment)
    return comment
