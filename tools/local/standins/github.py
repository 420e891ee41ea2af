"""A GitHub-like REST API under ``/github`` (and ``/github/api/v3``, as GitHub Enterprise Server).

Commit statuses: create (201 with the status object; 422 for an unknown commit, a bad
state or a description over 140 characters), list for a ref (newest first, paged) and the
combined status. Tokens are checked (401 "Bad credentials"; 403 for a read-only token).
Unknown repositories answer 404, and so does a repository the token cannot see (a private
one outside a fine-grained token's selection, or where the App is not installed): GitHub
never says 403 there, so as not to reveal that it exists. Rate limits as GitHub sends them: primary
(403, ``x-ratelimit-remaining: 0`` + ``x-ratelimit-reset``) and secondary (403 or 429 with
``retry-after``). GitHub Apps: ``POST /app/installations/{id}/access_tokens`` verifies the
RS256 JWT against the app's registered public key and issues an expiring token.

Tests drive it through ``state(server)`` and the helpers below; ``report(server)`` shows
``make demo`` the statuses that would have been set.
"""

from __future__ import annotations

import math
import re
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any
from urllib.parse import parse_qs

from tools.local.standin import Recorded, Reply, StandIn

PREFIX = r"/github(?:/api/v3)?"
DOCS = "https://docs.github.com/rest"
DEMO_TOKEN = "local-github-status-github_token"  # what the local stack sets GITHUB_TOKEN to  # noqa: S105
STATES = ("error", "failure", "pending", "success")
_KEY = "github"


@dataclass
class Repo:
    full_name: str
    id: int
    commits: set[str] | None = None  # None: every 40-hex SHA exists
    hidden_from: set[str] = field(default_factory=set)  # tokens that cannot see it (404)
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sha -> oldest first


@dataclass
class GitHubState:
    repos: dict[str, Repo] = field(default_factory=dict)  # lower-case full name -> repo
    tokens: set[str] = field(default_factory=lambda: {DEMO_TOKEN})
    read_only_tokens: set[str] = field(default_factory=set)
    apps: dict[str, str] = field(default_factory=dict)  # app id -> public key PEM
    installations: dict[str, str] = field(default_factory=dict)  # installation id -> app id
    issued: dict[str, float] = field(default_factory=dict)  # installation token -> expiry (epoch)
    token_lifetime: float = 3600.0
    rate_limit: int = 5000
    remaining: int = 5000
    reset_at: float = 0.0
    secondary: list[tuple[int, float, int]] = field(default_factory=list)  # (count left, retry-after, status)
    slow: dict[str, float] = field(default_factory=dict)  # status state -> seconds to wait before creating it
    created: list[dict[str, Any]] = field(default_factory=list)  # every status created, in order
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def repo(self, full_name: str) -> Repo | None:
        return self.repos.get(full_name.lower())


def state(server: StandIn) -> GitHubState:
    """This provider's data on ``server`` (seeded on first use, again after ``server.reset()``)."""
    with server.lock:
        current = server.state.get(_KEY)
        if current is None:
            current = server.state[_KEY] = GitHubState()
            current.repos["my-great-org/my-pipeline"] = Repo("my-great-org/my-pipeline", 1296269)
        assert isinstance(current, GitHubState)
        return current


# -- helpers for tests ----------------------------------------------------------------------


def add_repo(server: StandIn, full_name: str, commits: set[str] | None = None) -> Repo:
    gh = state(server)
    repo = Repo(full_name, 1000 + len(gh.repos), {c.lower() for c in commits} if commits is not None else None)
    gh.repos[full_name.lower()] = repo
    return repo


def hide_repo(server: StandIn, full_name: str, token: str | None = None) -> None:
    """Make ``full_name`` invisible to ``token`` (every token when None, App installation tokens
    included): it answers 404 Not Found, as GitHub does for a private repository."""
    repo = state(server).repo(full_name) or add_repo(server, full_name)
    repo.hidden_from.add(token or "*")


def allow_token(server: StandIn, token: str, *, read_only: bool = False) -> None:
    gh = state(server)
    gh.tokens.add(token)
    if read_only:
        gh.read_only_tokens.add(token)


def register_app(server: StandIn, app_id: str, public_key_pem: str, installation_id: str) -> None:
    gh = state(server)
    gh.apps[str(app_id)] = public_key_pem
    gh.installations[str(installation_id)] = str(app_id)


def exhaust_rate_limit(server: StandIn, reset_in: float = 1.0) -> None:
    """Primary rate limit: every request answers 403 until ``reset_in`` seconds have passed."""
    gh = state(server)
    gh.remaining, gh.reset_at = 0, time.time() + reset_in


def secondary_rate_limit(server: StandIn, count: int = 1, retry_after: float = 1, status: int = 403) -> None:
    """Secondary rate limit: the next ``count`` requests answer ``status`` with ``retry-after``."""
    state(server).secondary.append((count, retry_after, status))


def slow_down(server: StandIn, status_state: str, seconds: float) -> None:
    """Hold every create-status request for ``status_state`` for ``seconds`` before recording it."""
    state(server).slow[status_state] = seconds


def statuses(server: StandIn, full_name: str, sha: str) -> list[dict[str, Any]]:
    """Statuses on a commit, newest first (as GitHub lists them)."""
    repo = state(server).repo(full_name)
    return list(reversed(repo.statuses.get(sha.lower(), []))) if repo else []


def combined(server: StandIn, full_name: str, sha: str) -> dict[str, Any]:
    repo = state(server).repo(full_name)
    assert repo is not None, full_name
    return _combined(server, repo, sha.lower())


# -- routes ---------------------------------------------------------------------------------


def register(server: StandIn) -> None:
    repo = r"/repos/(?P<owner>[^/]+)/(?P<name>[^/]+)"
    _route(server, "POST", repo + r"/statuses/(?P<sha>[^/]+)", _create_status)
    _route(server, "GET", repo + r"/commits/(?P<ref>[^/]+)/statuses", _list_statuses)
    _route(server, "GET", repo + r"/commits/(?P<ref>[^/]+)/status", _combined_status)
    _route(server, "GET", repo, _get_repo)
    _route(server, "GET", r"/rate_limit", _rate_limit_status, counts=False)
    server.route("POST", PREFIX + r"/app/installations/(?P<id>[^/]+)/access_tokens", _access_token(server))


def _error(status: int, message: str, headers: dict[str, str] | None = None, **extra: Any) -> Reply:
    return Reply(status, {"message": message, "documentation_url": DOCS, "status": str(status), **extra}, headers or {})


def _rate_headers(gh: GitHubState) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(gh.rate_limit),
        "x-ratelimit-remaining": str(gh.remaining),
        "x-ratelimit-used": str(gh.rate_limit - gh.remaining),
        "x-ratelimit-reset": str(math.ceil(gh.reset_at or time.time() + 3600)),
        "x-ratelimit-resource": "core",
        "x-github-api-version-selected": "2022-11-28",
    }


Handler = Callable[[StandIn, Recorded, dict[str, str], str], Reply]


def _route(server: StandIn, method: str, path: str, handler: Handler, *, counts: bool = True) -> None:
    """Register ``handler(server, request, path params, token)`` behind authentication and rate limits."""
    pattern = re.compile(PREFIX + path)

    def respond(request: Recorded) -> Reply:
        gh = state(server)
        token = _bearer(request)
        with gh.lock:
            known = token in gh.tokens or (token in gh.issued and gh.issued[token] >= time.time())
            if not known:
                return _error(401, "Bad credentials" if token else "Requires authentication")
            if gh.reset_at and time.time() >= gh.reset_at:
                gh.remaining, gh.reset_at = gh.rate_limit, 0.0
            if gh.secondary:
                count, retry_after, status = gh.secondary[0]
                if count <= 1:
                    gh.secondary.pop(0)
                else:
                    gh.secondary[0] = (count - 1, retry_after, status)
                headers = {**_rate_headers(gh), "retry-after": f"{retry_after:g}"}
                message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
                return _error(status, message, headers)
            if gh.remaining <= 0:
                if not gh.reset_at:
                    gh.reset_at = time.time() + 60
                message = "API rate limit exceeded for installation. Check out the documentation for more details."
                return _error(403, message, _rate_headers(gh))
            if counts:
                gh.remaining -= 1
            headers = _rate_headers(gh)
        match = pattern.fullmatch(request.path)
        assert match is not None
        reply = handler(server, request, match.groupdict(), token)
        reply.headers = {**headers, **reply.headers}
        return reply

    server.route(method, PREFIX + path, respond)


def _bearer(request: Recorded) -> str:
    value = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() in ("token", "bearer") else ""


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _find_repo(server: StandIn, params: dict[str, str], token: str) -> Repo | None:
    """The repository if this token can see it (else None: GitHub answers 404)."""
    repo = state(server).repo(f"{params['owner']}/{params['name']}")
    if repo is None or token in repo.hidden_from or "*" in repo.hidden_from:
        return None
    return repo


def _commit_exists(repo: Repo, sha: str) -> bool:
    if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
        return False
    return repo.commits is None or sha in repo.commits


def _create_status(server: StandIn, request: Recorded, params: dict[str, str], token: str) -> Reply:
    gh = state(server)
    repo = _find_repo(server, params, token)
    if repo is None:
        return _error(404, "Not Found")
    if token in gh.read_only_tokens:
        return _error(403, "Resource not accessible by personal access token")
    body = request.json
    if not isinstance(body, dict):
        return _error(400, "Problems parsing JSON")
    sha = params["sha"].lower()
    if not _commit_exists(repo, sha):
        return _error(422, f"No commit found for SHA: {params['sha']}")
    problems = _validate(body)
    if problems:
        errors = [{"resource": "Status", "code": "custom", "field": f, "message": m} for f, m in problems]
        return _error(422, "Validation Failed", errors=errors)
    delay = gh.slow.get(body["state"], 0.0)
    if delay:
        time.sleep(delay)
    with gh.lock:
        status_id = gh.next_id
        gh.next_id += 1
        now = _now()
        status = {
            "url": f"https://api.github.com/repos/{repo.full_name}/statuses/{sha}",
            "avatar_url": "https://avatars.githubusercontent.com/oa/4808?v=4",
            "id": status_id,
            "node_id": f"SC_kwDO{status_id:08d}",
            "state": body["state"],
            "description": body.get("description"),
            "target_url": body.get("target_url"),
            "context": body.get("context") or "default",
            "created_at": now,
            "updated_at": now,
            "creator": _user(token),
        }
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


def _user(token: str) -> dict[str, Any]:
    login = "buildkite-fanout[bot]" if token.startswith("ghs_") else "buildkite-bot"
    return {
        "login": login,
        "id": 4808,
        "node_id": "MDQ6VXNlcjQ4MDg=",
        "avatar_url": "https://avatars.githubusercontent.com/u/4808?v=4",
        "gravatar_id": "",
        "url": f"https://api.github.com/users/{login}",
        "html_url": f"https://github.com/{login}",
        "followers_url": f"https://api.github.com/users/{login}/followers",
        "following_url": f"https://api.github.com/users/{login}/following{{/other_user}}",
        "gists_url": f"https://api.github.com/users/{login}/gists{{/gist_id}}",
        "starred_url": f"https://api.github.com/users/{login}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"https://api.github.com/users/{login}/subscriptions",
        "organizations_url": f"https://api.github.com/users/{login}/orgs",
        "repos_url": f"https://api.github.com/users/{login}/repos",
        "events_url": f"https://api.github.com/users/{login}/events{{/privacy}}",
        "received_events_url": f"https://api.github.com/users/{login}/received_events",
        "type": "Bot" if token.startswith("ghs_") else "User",
        "user_view_type": "public",
        "site_admin": False,
    }


def _page(request: Recorded) -> tuple[int, int]:
    query = parse_qs(request.query)
    try:
        per_page = max(1, min(100, int(query.get("per_page", ["30"])[0])))
        page = max(1, int(query.get("page", ["1"])[0]))
    except ValueError:
        per_page, page = 30, 1
    return per_page, page


def _list_statuses(server: StandIn, request: Recorded, params: dict[str, str], token: str) -> Reply:
    repo = _find_repo(server, params, token)
    if repo is None:
        return _error(404, "Not Found")
    ref = params["ref"].lower()
    if not _commit_exists(repo, ref):
        return _error(422, f"No commit found for SHA: {params['ref']}")
    newest_first = list(reversed(repo.statuses.get(ref, [])))
    per_page, page = _page(request)
    chunk = newest_first[(page - 1) * per_page : page * per_page]
    headers = {}
    if page * per_page < len(newest_first):
        base = request.path
        headers["Link"] = f'<{base}?per_page={per_page}&page={page + 1}>; rel="next"'
    return Reply(200, chunk, headers)


def _combined(server: StandIn, repo: Repo, sha: str) -> dict[str, Any]:
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


def _combined_status(server: StandIn, request: Recorded, params: dict[str, str], token: str) -> Reply:
    repo = _find_repo(server, params, token)
    if repo is None:
        return _error(404, "Not Found")
    ref = params["ref"].lower()
    if not _commit_exists(repo, ref):
        return _error(422, f"No commit found for SHA: {params['ref']}")
    return Reply(200, _combined(server, repo, ref))


def _get_repo(server: StandIn, request: Recorded, params: dict[str, str], token: str) -> Reply:
    repo = _find_repo(server, params, token)
    if repo is None:
        return _error(404, "Not Found")
    return Reply(200, {"id": repo.id, "full_name": repo.full_name, "private": True})


def _rate_limit_status(server: StandIn, request: Recorded, params: dict[str, str], token: str) -> Reply:
    gh = state(server)
    core = {"limit": gh.rate_limit, "remaining": gh.remaining, "reset": math.ceil(gh.reset_at or time.time() + 3600)}
    return Reply(200, {"resources": {"core": core}, "rate": core})


def _access_token(server: StandIn) -> Callable[[Recorded], Reply]:
    pattern = re.compile(PREFIX + r"/app/installations/(?P<id>[^/]+)/access_tokens")

    def respond(request: Recorded) -> Reply:
        import jwt

        gh = state(server)
        match = pattern.fullmatch(request.path)
        assert match
        token = _bearer(request)
        try:
            app_id = str(jwt.decode(token, options={"verify_signature": False}).get("iss"))
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            return _error(401, "A JSON web token could not be decoded")
        public_key = gh.apps.get(app_id)
        if header.get("alg") != "RS256" or public_key is None:
            return _error(401, "A JSON web token could not be decoded")
        try:
            claims = jwt.decode(token, public_key, algorithms=["RS256"], options={"require": ["iat", "exp", "iss"]})
        except jwt.ExpiredSignatureError:
            return _error(401, "'Expiration time' claim ('exp') must be a numeric value representing the future time")
        except jwt.PyJWTError:
            return _error(401, "A JSON web token could not be decoded")
        if int(claims["exp"]) - int(claims["iat"]) > 660 or int(claims["exp"]) > time.time() + 600:
            return _error(401, "'Expiration time' claim ('exp') is too far in the future")
        if gh.installations.get(match.group("id")) != app_id:
            return _error(404, "Not Found")
        issued = "ghs_" + secrets.token_hex(18)
        expires = time.time() + gh.token_lifetime
        with gh.lock:
            gh.issued[issued] = expires
        body = {
            "token": issued,
            "expires_at": datetime.fromtimestamp(expires, UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
            "permissions": {"statuses": "write", "metadata": "read"},
            "repository_selection": "all",
        }
        return Reply(201, body)

    return respond


# -- make demo ------------------------------------------------------------------------------


def report(server: StandIn) -> tuple[str, list[str]]:
    gh = state(server)
    title = "GitHub (stand-in): commit statuses that would have been set"
    if not gh.created:
        return title, ["(none)"]
    lines: list[str] = []
    for repo in gh.repos.values():
        for sha, history in repo.statuses.items():
            by_context: dict[str, list[dict[str, Any]]] = {}
            for status in history:
                by_context.setdefault(status["context"], []).append(status)
            for context, entries in by_context.items():
                last = entries[-1]
                trail = " → ".join(e["state"] for e in entries)
                lines.append(f"{repo.full_name}@{sha[:7]}  {context}  {last['state']:<7}  {last['description']!r}")
                if len(entries) > 1:
                    lines.append(f"    history: {trail}")
    attempts = server.recorded(PREFIX + r"/repos/.*/statuses/", "POST")
    lines.append(f"{len(gh.created)} statuses created ({len(attempts)} create requests)")
    return title, lines
