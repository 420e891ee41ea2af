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

import base64
import re
import threading
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import parse_qs

from tools.local.standin import Recorded, Reply, StandIn

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
    with server.lock:
        current = server.state.get(_KEY)
        if current is None:
            current = server.state[_KEY] = _seed()
        assert isinstance(current, JiraState)
        return current


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


# -- routes ---------------------------------------------------------------------------------


def register(server: StandIn) -> None:
    key = r"(?P<key>[^/]+)"
    _route(server, "GET", r"/serverInfo", _server_info, auth=False)
    _route(server, "GET", r"/myself", _myself)
    _route(server, "GET", r"/project", _projects)
    _route(server, "GET", rf"/issue/{key}", _get_issue)
    _route(server, "GET", rf"/issue/{key}/comment", _list_comments)
    _route(server, "POST", rf"/issue/{key}/comment", _post_comment)
    _route(server, "POST", r"/comment/list", _comments_by_id)
    _route(server, "GET", r"/comment/(?P<id>\d+)/properties/(?P<prop>[^/]+)", _get_property)
    _route(server, "GET", rf"/issue/{key}/transitions", _list_transitions)
    _route(server, "POST", rf"/issue/{key}/transitions", _do_transition)


def _route(server: StandIn, method: str, path: str, handler: Any, *, auth: bool = True) -> None:
    pattern = re.compile(PREFIX + path)

    def respond(request: Recorded) -> Reply:
        jira = state(server)
        user = _user(request, jira)
        if auth and user is None:
            return _error(401, "You are not authenticated. Authentication required.")
        match = pattern.fullmatch(request.path)
        assert match is not None
        reply: Reply = handler(server, request, match.groupdict(), user or "anonymous")
        return reply

    server.route(method, PREFIX + path, respond)


def _user(request: Recorded, jira: JiraState) -> str | None:
    value = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
    scheme, _, credentials = value.partition(" ")
    if scheme.lower() == "bearer" and credentials in jira.tokens:
        return "Buildkite Bot (PAT)"
    if scheme.lower() == "basic":
        try:
            user, _, token = base64.b64decode(credentials).decode().partition(":")
        except ValueError:
            return None
        if user and token in jira.tokens:
            return user
    return None


def _self(request: Recorded, path: str) -> str:
    host = next((v for k, v in request.headers.items() if k.lower() == "host"), "127.0.0.1")
    return f"http://{host}{PREFIX}/{path}"


def _error(status: int, message: str = "", **errors: str) -> Reply:
    return Reply(status, {"errorMessages": [message] if message else [], "errors": errors})


def _not_found(key: str) -> Reply:
    return _error(404, "Issue does not exist or you do not have permission to see it.")


def _find(server: StandIn, params: dict[str, str]) -> Issue | None:
    return state(server).issues.get(params["key"].upper())


def _server_info(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    info = {"version": "10.3.0", "versionNumbers": [10, 3, 0], "deploymentType": "Server", "serverTitle": "stand-in"}
    return Reply(200, {"baseUrl": _self(request, "").split(PREFIX)[0], **info})


def _myself(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    return Reply(200, {"name": user, "displayName": user, "active": True})


def _projects(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    listed = [
        {"self": _self(request, f"project/{key}"), "id": str(10000 + i), "key": key, "name": name,
         "projectTypeKey": "software", "avatarUrls": {}}
        for i, (key, name) in enumerate(sorted(state(server).projects.items()))
    ]  # fmt: skip
    return Reply(200, listed)


def _issue_json(request: Recorded, issue: Issue) -> dict[str, Any]:
    fields = {"summary": issue.summary, "status": _status_json(request, issue.status),
              "project": {"key": issue.project, "id": "10000", "name": issue.project},
              "issuetype": {"name": "Task", "id": "10002", "subtask": False}}  # fmt: skip
    return {"expand": "renderedFields,names,schema,transitions,changelog", "id": issue.id,
            "self": _self(request, f"issue/{issue.id}"), "key": issue.key, "fields": fields}  # fmt: skip


def _status_json(request: Recorded, name: str) -> dict[str, Any]:
    status_id = _STATUS_IDS.get(name, "1")
    return {"self": _self(request, f"status/{status_id}"), "name": name, "id": status_id,
            "statusCategory": {"key": _CATEGORY.get(name, "indeterminate"), "name": name}}  # fmt: skip


def _get_issue(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    found = _find(server, params)
    return Reply(200, _issue_json(request, found)) if found else _not_found(params["key"])


def _comment_json(comment: dict[str, Any]) -> dict[str, Any]:
    name = comment["author"]
    author = {"displayName": name, "active": True, "accountId": f"acc-{abs(hash(name)) % 10**6}"}
    hidden = ("seeded", "author", "properties")  # properties only when asked for (comment/list?expand=properties)
    return {k: v for k, v in comment.items() if k not in hidden} | {"author": author, "updateAuthor": author}


def _new_comment(jira: JiraState, issue: Issue, body: str, author: str, when: datetime, *, seeded: bool = True,
                 properties: dict[str, Any] | None = None) -> dict[str, Any]:  # fmt: skip
    jira.next_id += 1
    stamp = when.strftime("%Y-%m-%dT%H:%M:%S.000+0000")
    comment = {"self": f"{PREFIX}/issue/{issue.id}/comment/{jira.next_id}", "id": str(jira.next_id),
               "body": _rendered(body), "properties": dict(properties or {}), "author": author,
               "created": stamp, "updated": stamp, "jsdPublic": True, "seeded": seeded}  # fmt: skip
    issue.comments.append(comment)
    return comment


def _int(query: dict[str, list[str]], name: str, default: int) -> int:
    try:
        return max(0, int(query.get(name, [str(default)])[0]))
    except ValueError:
        return default


def _list_comments(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    jira = state(server)
    found = _find(server, params)
    if found is None:
        return _not_found(params["key"])
    query = parse_qs(request.query)
    start = _int(query, "startAt", 0)
    size = min(_int(query, "maxResults", 5000) or jira.max_results, jira.max_results)
    ordered = list(found.comments)
    if query.get("orderBy", [""])[0] == "-created":
        ordered.reverse()
    page = ordered[start : start + size]
    body = {"startAt": start, "maxResults": size, "total": len(ordered), "comments": [_comment_json(c) for c in page]}
    return Reply(200, body)


def _post_comment(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    jira = state(server)
    found = _find(server, params)
    if found is None:
        return _not_found(params["key"])
    if found.key in jira.forbidden:
        return _error(403, "You do not have the permission to comment on this issue.")
    data = request.json
    text = data.get("body") if isinstance(data, dict) else None
    if not isinstance(text, str) or not text.strip():
        return _error(400, comment="Comment body can not be empty!")
    if len(text) > 32767:
        return _error(400, comment="The entered text is too long.")
    properties = data.get("properties") or []
    if not isinstance(properties, list) or not all(
        isinstance(p, dict) and _PROPERTY_KEY.match(str(p.get("key"))) for p in properties
    ):
        return _error(400, "The property key is invalid.")
    values = {str(p["key"]): p.get("value") for p in properties}
    with jira.lock:
        comment = _new_comment(jira, found, text, user, datetime.now(UTC), seeded=False, properties=values)
    return Reply(201, _comment_json(comment))


# Jira Cloud renders its stored document back as canonical wiki markup, not as it was sent.
_NEEDLESS_ESCAPE = re.compile(r"\\([^\w\s\\\[\]{}|!*_^~+?#-])|(?<=\w)\\([-_])")
_COLOUR = re.compile(r"\{color:(#[0-9A-Fa-f]{6})\}")
_PROPERTY_KEY = re.compile(r"^[^/]{1,255}$")


def _rendered(body: str) -> str:
    lines = []
    for line in body.splitlines():
        line = _NEEDLESS_ESCAPE.sub(lambda m: m.group(1) or m.group(2), line)
        line = _COLOUR.sub(lambda m: "{color:" + m.group(1).lower() + "}", line)
        lines.append(re.sub(r"[ \t]+", " ", line).rstrip())
    return "\n".join(lines)


def _all_comments(jira: JiraState) -> dict[str, dict[str, Any]]:
    return {c["id"]: c for i in jira.issues.values() for c in i.comments}


def _comments_by_id(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    data = request.json
    ids = data.get("ids") if isinstance(data, dict) else None
    if not isinstance(ids, list) or not ids or len(ids) > 1000:
        return _error(400, "Specify between 1 and 1000 comment ids.")
    expand = parse_qs(request.query).get("expand", [""])[0].split(",")
    known = _all_comments(state(server))
    found = [known[str(i)] for i in ids if str(i) in known]
    values = [_comment_json(c) | ({"properties": _properties_json(c)} if "properties" in expand else {}) for c in found]
    return Reply(200, {"startAt": 0, "maxResults": 1000, "total": len(values), "isLast": True, "values": values})


def _properties_json(comment: dict[str, Any]) -> list[dict[str, Any]]:
    return [{"key": key, "value": value} for key, value in comment["properties"].items()]


def _get_property(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    comment, key = _all_comments(state(server)).get(params["id"]), params["prop"]
    if comment is None:
        return _error(404, "Can not find a comment for the id.")
    if key not in comment["properties"]:
        return _error(404, f"The property with key '{key}' does not exist.")
    return Reply(200, {"key": key, "value": comment["properties"][key]})


def _available(jira: JiraState, issue: Issue) -> list[tuple[str, str, str]]:
    return [t for t in jira.workflow if t[2] != issue.status]


def _list_transitions(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    jira = state(server)
    found = _find(server, params)
    if found is None:
        return _not_found(params["key"])
    transitions = [
        {"id": tid, "name": name, "to": _status_json(request, target), "hasScreen": False, "isGlobal": True,
         "isInitial": False, "isAvailable": True, "isConditional": False, "isLooped": False}
        for tid, name, target in _available(jira, found)
    ]  # fmt: skip
    return Reply(200, {"expand": "transitions", "transitions": transitions})


def _do_transition(server: StandIn, request: Recorded, params: dict[str, str], user: str) -> Reply:
    jira = state(server)
    found = _find(server, params)
    if found is None:
        return _not_found(params["key"])
    data = request.json
    wanted = str(((data or {}).get("transition") or {}).get("id", "")) if isinstance(data, dict) else ""
    match = next((t for t in _available(jira, found) if t[0] == wanted), None)
    if match is None:
        return _error(400, f"Transition id '{wanted}' is not valid for this issue.")
    with jira.lock:
        found.transitions.append((found.status, match[2]))
        found.status = match[2]
    return Reply(204, b"")


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
