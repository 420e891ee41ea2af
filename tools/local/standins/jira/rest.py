"""The REST v2 resources the stand-in serves, with Jira's checks, paging and errors."""

from __future__ import annotations

import base64
import re
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from tools.local.standin import Recorded, Reply, StandIn

from .project import _CATEGORY, _STATUS_IDS, PREFIX, Issue, JiraState, _new_comment, state


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
_PROPERTY_KEY = re.compile(r"^[^/]{1,255}$")


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
