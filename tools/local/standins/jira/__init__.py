"""A Jira-like REST API (v2) under ``/jira``: what the ``jira`` library calls for jira-update.

Issues (``GET /rest/api/2/issue/{key}``; 404 with Jira's "does not exist" message for
unknown keys), comments (list with ``startAt``/``maxResults``/``total`` paging, newest or
oldest first, page size capped like Jira does; add, with comment properties; by ids with
``expand=properties``, as Jira Cloud's ``POST /comment/list``), one comment property
(``GET /comment/{id}/properties/{key}``), transitions (list those available from the
issue's status; do one, 204), projects (``/rest/api/2/project``) and serverInfo.

Like Jira Cloud, it does not hand back the wiki markup it was sent: Cloud keeps comments
in its own document format and renders that back on read. Here: escapes that change
nothing are dropped, spaces collapsed, colours written in lower case, line ends trimmed. A
text marker may therefore not come back byte for byte; comment properties do.
Credentials are checked: basic auth (email + API token, as Jira Cloud) or a bearer
personal access token (as Data Center); anything else answers 401.

Tests drive it through ``state(server)`` and the helpers below; ``report(server)`` shows
``make demo`` the comments and transitions that would have been made.
"""

from __future__ import annotations

from tools.local.standin import StandIn

from .project import (
    DEMO_TOKEN,
    PREFIX,
    WORKFLOW,
    Issue,
    JiraState,
    add_comment,
    add_issue,
    add_project,
    allow_token,
    comment_properties,
    edit_comment,
    issue,
    new_comments,
    state,
)
from .rest import register

__all__ = [
    "DEMO_TOKEN",
    "PREFIX",
    "WORKFLOW",
    "Issue",
    "JiraState",
    "add_comment",
    "add_issue",
    "add_project",
    "allow_token",
    "comment_properties",
    "edit_comment",
    "issue",
    "new_comments",
    "register",
    "report",
    "state",
]


# -- make demo ------------------------------------------------------------------------------


def report(server: StandIn) -> tuple[str, list[str]]:
    jira = state(server)
    title = "Jira (stand-in): comments and transitions that would have been made"
    lines: list[str] = []
    for found in jira.issues.values():
        added = [c for c in found.comments if not c.get("seeded")]
        for from_status, to_status in found.transitions:
            lines.append(f"{found.key} {found.summary!r}: moved {from_status} → {to_status}")
        for comment in added:
            body = comment["body"].splitlines()
            lines.append(f"{found.key} {found.summary!r} ← comment by {comment['author']}:")
            lines += [f"    {line}" for line in body]
    attempts = server.recorded(PREFIX + r"/issue/[^/]+/comment$", "POST")
    misses = [
        r for r in server.recorded(PREFIX + r"/issue/[^/]+$", "GET") if r.path.rsplit("/", 1)[-1] not in jira.issues
    ]
    if not lines:
        lines.append("(none)")
    count = sum(1 for i in jira.issues.values() for c in i.comments if not c.get("seeded"))
    summary = f"{count} comment{'' if count == 1 else 's'} added ({len(attempts)} POSTed)"
    lines.append(f"{summary}; lookups of unknown issues: {len(misses)}")
    return title, lines
