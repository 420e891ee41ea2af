"""Commit statuses: create (201 with the status object; 422 for an unknown commit, a bad state or a
description over 140 characters), list for a ref (newest first, paged), the combined status, and
the repository and rate-limit reads. A read-only token gets 403; so does an installation without
the "Commit statuses" permission."""

from __future__ import annotations

import math
import time
from typing import Any

from tools.local.standin import Recorded, Reply, StandIn

from .core import Caller, Repo, commit_exists, error, find_commit, find_repo, now, page, route, state, user

STATES = ("error", "failure", "pending", "success")


def register(server: StandIn) -> None:
    repo = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
    route(server, "POST", repo + r"/statuses/(?P<sha>[^/]+)", _create_status)
    route(server, "GET", repo + r"/commits/(?P<ref>[^/]+)/statuses", _list_statuses)
    route(server, "GET", repo + r"/commits/(?P<ref>[^/]+)/status", _combined_status)
    route(server, "GET", repo, _get_repo)
    route(server, "GET", r"/rate_limit", _rate_limit_status, counts=False)


def _create_status(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    gh = state(server)
    repo = find_repo(server, params, caller)
    if repo is None:
        return error(404, "Not Found")
    if caller.token in gh.read_only_tokens:
        return error(403, "Resource not accessible by personal access token")
    if not caller.can("statuses"):
        return error(403, "Resource not accessible by integration")
    body = request.json
    if not isinstance(body, dict):
        return error(400, "Problems parsing JSON")
    sha = params["sha"].lower()
    if not commit_exists(repo, sha):
        return error(422, f"No commit found for SHA: {params['sha']}")
    problems = _validate(body)
    if problems:
        errors = [{"resource": "Status", "code": "custom", "field": f, "message": m} for f, m in problems]
        return error(422, "Validation Failed", errors=errors)
    delay = gh.slow.get(body["state"], 0.0)
    if delay:
        time.sleep(delay)
    status_id = gh.new_id()
    created = now()
    status = {
        "url": f"https://api.github.com/repos/{repo.full_name}/statuses/{sha}",
        "avatar_url": "https://avatars.githubusercontent.com/oa/4808?v=4",
        "id": status_id,
        "node_id": f"SC_kwDO{status_id:08d}",
        "state": body["state"],
        "description": body.get("description"),
        "target_url": body.get("target_url"),
        "context": body.get("context") or "default",
        "created_at": created,
        "updated_at": created,
        "creator": user(caller),
    }
    with gh.lock:
        repo.statuses.setdefault(sha, []).append(status)
        gh.created.append({**status, "repository": repo.full_name, "sha": sha})
    return Reply(201, status, {"Location": status["url"]})


def _validate(body: dict[str, Any]) -> list[tuple[str, str]]:
    """GitHub's own checks on a new status (the OpenAPI schema is checked by the tests)."""
    problems: list[tuple[str, str]] = []
    if body.get("state") not in STATES:
        problems.append(("state", "state is not included in the list"))
    description = body.get("description")
    if description is not None and not isinstance(description, str):
        problems.append(("description", "description is not a string"))
    elif isinstance(description, str) and len(description) > 140:
        problems.append(("description", "description is too long (maximum is 140 characters)"))
    target_url = body.get("target_url")
    if target_url is not None and not (isinstance(target_url, str) and target_url.startswith(("http://", "https://"))):
        problems.append(("target_url", "target_url must use http(s) scheme"))
    context = body.get("context")
    if context is not None and not (isinstance(context, str) and context.strip()):
        problems.append(("context", "context must be a non-empty string"))
    return problems


def _list_statuses(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    found = find_commit(server, params, caller)
    if isinstance(found, Reply):
        return found
    repo, ref = found
    chunk, headers = page(request, list(reversed(repo.statuses.get(ref, []))))
    return Reply(200, chunk, headers)


def combined_status(repo: Repo, sha: str) -> dict[str, Any]:
    latest: dict[str, dict[str, Any]] = {}
    for status in reversed(repo.statuses.get(sha, [])):  # newest first: keep the first per context
        latest.setdefault(status["context"].lower(), status)
    states = [s["state"] for s in latest.values()]
    if any(s in ("error", "failure") for s in states):
        overall = "failure"
    elif not states or "pending" in states:
        overall = "pending"
    else:
        overall = "success"
    simple = [{k: v for k, v in s.items() if k != "creator"} | {"required": False} for s in latest.values()]
    owner, name = repo.full_name.split("/")
    return {
        "state": overall,
        "statuses": simple,
        "sha": sha,
        "total_count": len(simple),
        "repository": {"id": repo.id, "name": name, "full_name": repo.full_name, "owner": {"login": owner}},
        "commit_url": f"https://api.github.com/repos/{repo.full_name}/commits/{sha}",
        "url": f"https://api.github.com/repos/{repo.full_name}/commits/{sha}/status",
    }


def _combined_status(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    found = find_commit(server, params, caller)
    return found if isinstance(found, Reply) else Reply(200, combined_status(*found))


def _get_repo(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    repo = find_repo(server, params, caller)
    if repo is None:
        return error(404, "Not Found")
    return Reply(200, {"id": repo.id, "full_name": repo.full_name, "private": True})


def _rate_limit_status(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    gh = state(server)
    core = {"limit": gh.rate_limit, "remaining": gh.remaining, "reset": math.ceil(gh.reset_at or time.time() + 3600)}
    return Reply(200, {"resources": {"core": core}, "rate": core})


def report_lines(server: StandIn) -> list[str]:
    """The statuses each commit and context ended with (and the trail, when there were several)."""
    gh = state(server)
    lines: list[str] = []
    for repo in gh.repos.values():
        for sha, history in repo.statuses.items():
            by_context: dict[str, list[dict[str, Any]]] = {}
            for status in history:
                by_context.setdefault(status["context"], []).append(status)
            for context, entries in by_context.items():
                last = entries[-1]
                lines.append(f"{repo.full_name}@{sha[:7]}  {context}  {last['state']:<7}  {last['description']!r}")
                if len(entries) > 1:
                    lines.append(f"    history: {' → '.join(e['state'] for e in entries)}")
    attempts = server.recorded(r"/repos/.*/statuses/", "POST")
    lines.append(f"{len(gh.created)} statuses created ({len(attempts)} create requests)")
    return lines
