"""Check runs: create (201), update (200) and list for a commit, as GitHub answers them.

Only a GitHub App's installation token may create or update one (a personal access token gets
403 "You must authenticate via a GitHub App."), with the installation's "Checks: write"
permission (else 403 "Resource not accessible by integration"), and only the App that created a
run may update it. 422 for an unknown commit and for bodies GitHub refuses: a status or
conclusion outside the lists (``stale`` and the Actions-only statuses included), ``completed``
without a conclusion, ``action_required`` without ``details_url``, an output without its title or
summary, a summary or text over 65,535 characters, more than 50 annotations. Once a run is
completed GitHub keeps its status and conclusion: an update may change the output but not those
(the change is dropped silently, and ``state(server).check_run_log`` notes it as ``kept``).
"""

from __future__ import annotations

import time
from datetime import datetime
from typing import Any
from urllib.parse import parse_qs

from tools.local.standin import Recorded, Reply, StandIn

from .core import Caller, account, commit_exists, error, find_commit, find_repo, now, page, route, state

STATUSES = ("queued", "in_progress", "completed")
CONCLUSIONS = ("action_required", "cancelled", "failure", "neutral", "success", "skipped", "timed_out")
TEXT_LIMIT = 65535
ANNOTATIONS_LIMIT = 50
_DOCS = "https://docs.github.com/rest/checks/runs"
_FINAL = ("status", "conclusion")  # what a completed run keeps


def register(server: StandIn) -> None:
    repo = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
    route(server, "POST", repo + r"/check-runs", _create)
    route(server, "PATCH", repo + r"/check-runs/(?P<id>[0-9]+)", _update)
    route(server, "GET", repo + r"/commits/(?P<ref>[^/]+)/check-runs", _list)


def check_runs(server: StandIn, full_name: str, sha: str | None = None) -> list[dict[str, Any]]:
    """The check runs of a repository (of one commit), oldest first, as GitHub shows them."""
    held = state(server).check_runs.values()
    return [
        entry["run"]
        for entry in held
        if entry["repository"].lower() == full_name.lower() and (sha is None or entry["run"]["head_sha"] == sha)
    ]


def _write_refusal(caller: Caller, action: str) -> Reply | None:
    if caller.installation is None:
        return error(403, "You must authenticate via a GitHub App.", docs=f"{_DOCS}#{action}-a-check-run")
    if not caller.can("checks"):
        return error(403, "Resource not accessible by integration", docs=f"{_DOCS}#{action}-a-check-run")
    return None


def _create(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    gh = state(server)
    repo = find_repo(server, params, caller)
    if repo is None:
        return error(404, "Not Found")
    refused = _write_refusal(caller, "create")
    if refused:
        return refused
    body = request.json
    if not isinstance(body, dict):
        return error(400, "Problems parsing JSON")
    sha = str(body.get("head_sha") or "").lower()
    if not commit_exists(repo, sha):
        return error(422, f"No commit found for SHA: {body.get('head_sha')}")
    problems = _problems(body, None)
    if problems:
        return _invalid(problems)
    if gh.slow_check_runs:
        time.sleep(gh.slow_check_runs)
    run_id = gh.new_id()
    run: dict[str, Any] = {
        "id": run_id,
        "node_id": f"CR_kwDO{run_id:08d}",
        "head_sha": sha,
        "external_id": body.get("external_id", ""),
        "url": f"https://api.github.com/repos/{repo.full_name}/check-runs/{run_id}",
        "html_url": f"https://github.com/{repo.full_name}/runs/{run_id}",
        "details_url": body.get("details_url") or "https://buildkite.com",
        "status": "queued",
        "conclusion": None,
        "started_at": now(),
        "completed_at": None,
        "output": {
            "title": None,
            "summary": None,
            "text": None,
            "annotations_count": 0,
            "annotations_url": f"https://api.github.com/repos/{repo.full_name}/check-runs/{run_id}/annotations",
        },
        "name": body["name"],
        "check_suite": {"id": 5000 + repo.id},
        "app": _app(caller),
        "pull_requests": [],
    }
    _apply(run, body)
    with gh.lock:
        app_id = caller.installation.app_id if caller.installation else ""
        gh.check_runs[run_id] = {"repository": repo.full_name, "app_id": app_id, "run": run}
        gh.check_run_log.append(_entry("created", repo.full_name, run))
        if gh.lost_check_run_answers > 0:  # GitHub made it, but the answer never arrives
            gh.lost_check_run_answers -= 1
            return error(502, "Server Error")
    return Reply(201, run, {"Location": run["url"]})


def _update(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    gh = state(server)
    repo = find_repo(server, params, caller)
    entry = gh.check_runs.get(int(params["id"]))
    if repo is None or entry is None or entry["repository"] != repo.full_name:
        return error(404, "Not Found")
    refused = _write_refusal(caller, "update")
    if refused:
        return refused
    app_id = caller.installation.app_id if caller.installation else ""
    if entry["app_id"] != app_id:
        message = f"Invalid app_id `{app_id}` - check run can only be modified by the GitHub App that created it."
        return error(403, message)
    body = request.json
    if not isinstance(body, dict):
        return error(400, "Problems parsing JSON")
    run = entry["run"]
    problems = _problems(body, run)
    if problems:
        return _invalid(problems)
    with gh.lock:
        kept = []
        if run["status"] == "completed":
            attempted = {**body, "status": "completed"} if "conclusion" in body else body
            kept = [f for f in _FINAL if f in attempted and attempted[f] != run[f]]
            body = {k: v for k, v in body.items() if k not in _FINAL}
        _apply(run, body)
        gh.check_run_log.append(_entry("kept" if kept else "updated", repo.full_name, run, kept=kept))
    return Reply(200, run)


def _apply(run: dict[str, Any], body: dict[str, Any]) -> None:
    for field in ("name", "details_url", "external_id", "started_at", "status", "conclusion", "completed_at"):
        if field in body:
            run[field] = body[field]
    if body.get("conclusion"):
        run["status"] = "completed"  # GitHub: a conclusion completes the run
    if run["status"] == "completed" and not run["completed_at"]:
        run["completed_at"] = now()
    output = body.get("output")
    if isinstance(output, dict):
        run["output"].update({k: output.get(k, run["output"][k]) for k in ("title", "summary", "text")})
        run["output"]["annotations_count"] += len(output.get("annotations") or [])


def _problems(body: dict[str, Any], run: dict[str, Any] | None) -> list[tuple[str, str]]:
    """What GitHub refuses in a create (``run`` None) or an update of ``run``."""
    problems: list[tuple[str, str]] = []
    name = body.get("name")
    if (run is None or "name" in body) and not (isinstance(name, str) and name.strip()):
        problems.append(("name", "name can't be blank"))
    status, conclusion = body.get("status"), body.get("conclusion")
    if status is not None and status not in STATUSES:
        problems.append(("status", f"{status!r} is not a status an app can set"))
    if conclusion is not None and conclusion not in CONCLUSIONS:
        problems.append(("conclusion", f"{conclusion!r} is not a conclusion an app can set"))
    if status == "completed" and not conclusion and not (run and run["conclusion"]):
        problems.append(("conclusion", "conclusion must be given when status is completed"))
    if conclusion == "action_required" and not (body.get("details_url") or (run and run["details_url"])):
        problems.append(("details_url", "details_url must be given with action_required"))
    for field in ("started_at", "completed_at"):
        if field in body and not _is_time(body[field]):
            problems.append((field, f"{field} must be an ISO 8601 timestamp"))
    url = body.get("details_url")
    if url is not None and not (isinstance(url, str) and url.startswith(("http://", "https://"))):
        problems.append(("details_url", "details_url must be an http(s) URL"))
    output = body.get("output")
    if output is not None:
        problems += _output_problems(output)
    return problems


def _output_problems(output: Any) -> list[tuple[str, str]]:
    if not isinstance(output, dict):
        return [("output", "output must be an object")]
    problems = [
        (f"output.{k}", f"{k} can't be blank") for k in ("title", "summary") if not isinstance(output.get(k), str)
    ]
    for field in ("summary", "text"):
        value = output.get(field)
        if isinstance(value, str) and len(value) > TEXT_LIMIT:
            problems.append((f"output.{field}", f"{field} is too long (maximum is {TEXT_LIMIT} characters)"))
    if len(output.get("annotations") or []) > ANNOTATIONS_LIMIT:
        problems.append(("output.annotations", f"at most {ANNOTATIONS_LIMIT} annotations per request"))
    return problems


def _is_time(value: Any) -> bool:
    try:
        return isinstance(value, str) and datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


def _invalid(problems: list[tuple[str, str]]) -> Reply:
    errors = [{"resource": "CheckRun", "code": "custom", "field": f, "message": m} for f, m in problems]
    return error(422, "Validation Failed", errors=errors)


def _list(server: StandIn, request: Recorded, params: dict[str, str], caller: Caller) -> Reply:
    gh = state(server)
    found = find_commit(server, params, caller)
    if isinstance(found, Reply):
        return found
    repo, ref = found
    query = {k: v[0] for k, v in parse_qs(request.query).items()}
    with gh.lock:
        entries = [
            e for e in gh.check_runs.values() if e["repository"] == repo.full_name and e["run"]["head_sha"] == ref
        ]
    entries.sort(key=lambda e: e["run"]["id"], reverse=True)  # newest first
    if "check_name" in query:
        entries = [e for e in entries if e["run"]["name"] == query["check_name"]]
    if "status" in query:
        entries = [e for e in entries if e["run"]["status"] == query["status"]]
    if "app_id" in query:
        entries = [e for e in entries if e["app_id"] == query["app_id"]]
    if query.get("filter", "latest") == "latest":  # the most recent run of each name
        newest = {e["run"]["name"]: e for e in reversed(entries)}  # the last one set per name wins
        entries = [e for e in entries if newest[e["run"]["name"]] is e]
    runs, headers = page(request, [e["run"] for e in entries])
    return Reply(200, {"total_count": len(entries), "check_runs": runs}, headers)


def _app(caller: Caller) -> dict[str, Any]:
    app_id = caller.installation.app_id if caller.installation else "0"
    return {
        "id": int(app_id) if app_id.isdigit() else 1,
        "slug": "buildkite-fanout",
        "node_id": f"A_kwDO{app_id}",
        "client_id": f"Iv1.{app_id}",
        "owner": account(caller.installation.account if caller.installation else "my-great-org"),
        "name": "buildkite-fanout",
        "description": "Buildkite builds as GitHub check runs",
        "external_url": "https://buildkite.com",
        "html_url": "https://github.com/apps/buildkite-fanout",
        "created_at": "2025-01-06T10:00:00Z",
        "updated_at": "2025-01-06T10:00:00Z",
        "permissions": dict(caller.installation.permissions) if caller.installation else {},
        "events": [],
    }


def _entry(action: str, repository: str, run: dict[str, Any], kept: list[str] | None = None) -> dict[str, Any]:
    return {
        "action": action,
        "id": run["id"],
        "repository": repository,
        "name": run["name"],
        "status": run["status"],
        "conclusion": run["conclusion"],
        "title": run["output"]["title"],
        "kept": kept or [],
    }


def report_lines(server: StandIn) -> list[str]:
    """Each check run as it ended, the way there, and the failed jobs its summary lists."""
    gh = state(server)
    lines: list[str] = []
    for entry in gh.check_runs.values():
        run = entry["run"]
        shown = run["conclusion"] or run["status"]
        lines.append(
            f"{entry['repository']}@{run['head_sha'][:7]}  {run['name']}  {shown:<11}  {run['output']['title']!r}"
        )
        trail = [e["conclusion"] or e["status"] for e in gh.check_run_log if e["id"] == run["id"]]
        if len(trail) > 1:
            lines.append(f"    history: {' → '.join(trail)}")
        lines += [f"    {line}" for line in (run["output"]["summary"] or "").splitlines() if line.startswith("- ")]
    creates = server.recorded(r"/repos/.*/check-runs$", "POST")
    updates = [e for e in gh.check_run_log if e["action"] != "created"]
    kept = [e for e in updates if e["action"] == "kept"]
    lines.append(
        f"{len(gh.check_runs)} check runs created ({len(creates)} create requests), {len(updates)} updates"
        + (f", {len(kept)} of them asking a completed run to change its conclusion" if kept else "")
    )
    return lines
