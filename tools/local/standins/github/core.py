"""What every route of the GitHub stand-in shares: its data, who is calling, and the checks
GitHub makes before any endpoint answers.

Callers: a personal access token, an installation token (issued to a GitHub App's
installation, seeing only that installation's repositories with its permissions), or the
App's own RS256 JWT (for the App endpoints only). Then rate limits as GitHub sends them:
primary (403, ``x-ratelimit-remaining: 0`` + ``x-ratelimit-reset``) and secondary (403 or 429
with ``retry-after``). A repository a caller cannot see answers 404, as GitHub does, so as
not to reveal that it exists.
"""

from __future__ import annotations

import math
import re
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
DEFAULT_PERMISSIONS = {"checks": "write", "statuses": "write", "metadata": "read"}
JWT_MAX_LIFETIME = 600  # GitHub: exp at most 10 minutes after iat
_KEY = "github"


@dataclass
class Repo:
    full_name: str
    id: int
    commits: set[str] | None = None  # None: every 40-hex SHA exists
    hidden_from: set[str] = field(default_factory=set)  # tokens that cannot see it (404); "*": every token
    statuses: dict[str, list[dict[str, Any]]] = field(default_factory=dict)  # sha -> oldest first

    @property
    def owner(self) -> str:
        return self.full_name.split("/")[0]


@dataclass
class Installation:
    """A GitHub App installed on one account: all its repositories, or a selection."""

    id: str
    app_id: str
    account: str
    repositories: set[str] | None = None  # lower-case full names when only some were selected
    permissions: dict[str, str] = field(default_factory=lambda: dict(DEFAULT_PERMISSIONS))

    def sees(self, full_name: str) -> bool:
        if full_name.split("/")[0].lower() != self.account.lower():
            return False
        return self.repositories is None or full_name.lower() in self.repositories


@dataclass(frozen=True)
class Caller:
    token: str
    installation: Installation | None = None  # set for an installation token
    app_id: str | None = None  # set for the App's JWT

    def can(self, permission: str) -> bool:
        """A token's own rights are not modelled; an installation token has its installation's."""
        return self.installation is None or self.installation.permissions.get(permission) == "write"


@dataclass
class GitHubState:
    repos: dict[str, Repo] = field(default_factory=dict)  # lower-case full name -> repo
    tokens: set[str] = field(default_factory=lambda: {DEMO_TOKEN})
    read_only_tokens: set[str] = field(default_factory=set)
    apps: dict[str, str] = field(default_factory=dict)  # app id -> public key PEM
    installations: dict[str, Installation] = field(default_factory=dict)
    issued: dict[str, tuple[str, float]] = field(default_factory=dict)  # installation token -> (installation, expiry)
    token_lifetime: float = 3600.0
    rate_limit: int = 5000
    remaining: int = 5000
    reset_at: float = 0.0
    secondary: list[tuple[int, float, int]] = field(default_factory=list)  # (count left, retry-after, status)
    slow: dict[str, float] = field(default_factory=dict)  # status state -> seconds to wait before creating it
    created: list[dict[str, Any]] = field(default_factory=list)  # every status created, in order
    check_runs: dict[int, dict[str, Any]] = field(default_factory=dict)  # id -> check run, as GitHub shows it
    check_run_log: list[dict[str, Any]] = field(default_factory=list)  # every create and update, in order
    lost_check_run_answers: int = 0  # creates that happen but whose answer is lost (502)
    slow_check_runs: float = 0.0  # seconds every check-run create waits before it is made
    next_id: int = 1
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def repo(self, full_name: str) -> Repo | None:
        return self.repos.get(full_name.lower())

    def new_id(self) -> int:
        with self.lock:
            self.next_id += 1
            return self.next_id - 1


def state(server: StandIn) -> GitHubState:
    """This provider's data on ``server`` (seeded on first use, again after ``server.reset()``)."""
    return server.provider_state(_KEY, GitHubState, _seed)


def _seed() -> GitHubState:
    seeded = GitHubState()
    seeded.repos["my-great-org/my-pipeline"] = Repo("my-great-org/my-pipeline", 1296269)
    return seeded


def error(status: int, message: str, headers: dict[str, str] | None = None, docs: str = DOCS, **extra: Any) -> Reply:
    return Reply(status, {"message": message, "documentation_url": docs, "status": str(status), **extra}, headers or {})


def rate_headers(gh: GitHubState) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(gh.rate_limit),
        "x-ratelimit-remaining": str(gh.remaining),
        "x-ratelimit-used": str(gh.rate_limit - gh.remaining),
        "x-ratelimit-reset": str(math.ceil(gh.reset_at or time.time() + 3600)),
        "x-ratelimit-resource": "core",
        "x-github-api-version-selected": "2022-11-28",
    }


Handler = Callable[[StandIn, Recorded, dict[str, str], Caller], Reply]


def route(server: StandIn, method: str, path: str, handler: Handler, *, counts: bool = True, jwt: bool = False) -> None:
    """Register ``handler(server, request, path params, caller)`` behind authentication (a token,
    or the App's JWT when ``jwt``) and rate limits."""
    pattern = re.compile(PREFIX + path)

    def respond(request: Recorded) -> Reply:
        gh = state(server)
        caller = app_caller(gh, request) if jwt else token_caller(gh, request)
        if isinstance(caller, Reply):
            return caller
        with gh.lock:
            limited = _rate_limited(gh)
            if limited is not None:
                return limited
            if counts:
                gh.remaining -= 1
            headers = rate_headers(gh)
        match = pattern.fullmatch(request.path)
        assert match is not None
        reply = handler(server, request, match.groupdict(), caller)
        reply.headers = {**headers, **reply.headers}
        return reply

    server.route(method, PREFIX + path, respond)


def _rate_limited(gh: GitHubState) -> Reply | None:
    if gh.reset_at and time.time() >= gh.reset_at:
        gh.remaining, gh.reset_at = gh.rate_limit, 0.0
    if gh.secondary:
        count, retry_after, status = gh.secondary[0]
        if count <= 1:
            gh.secondary.pop(0)
        else:
            gh.secondary[0] = (count - 1, retry_after, status)
        headers = {**rate_headers(gh), "retry-after": f"{retry_after:g}"}
        message = "You have exceeded a secondary rate limit. Please wait a few minutes before you try again."
        return error(status, message, headers)
    if gh.remaining <= 0:
        if not gh.reset_at:
            gh.reset_at = time.time() + 60
        message = "API rate limit exceeded for installation. Check out the documentation for more details."
        return error(403, message, rate_headers(gh))
    return None


def bearer(request: Recorded) -> str:
    value = next((v for k, v in request.headers.items() if k.lower() == "authorization"), "")
    scheme, _, token = value.partition(" ")
    return token.strip() if scheme.lower() in ("token", "bearer") else ""


def token_caller(gh: GitHubState, request: Recorded) -> Caller | Reply:
    token = bearer(request)
    with gh.lock:
        if token in gh.tokens:
            return Caller(token)
        installation_id, expires = gh.issued.get(token, ("", 0.0))
        installation = gh.installations.get(installation_id)
    if installation is None or expires < time.time():
        return error(401, "Bad credentials" if token else "Requires authentication")
    return Caller(token, installation=installation)


def app_caller(gh: GitHubState, request: Recorded) -> Caller | Reply:
    """The App whose RS256 JWT authenticates this request: signed with its key, ``iss`` its id,
    ``iat`` in the past and ``exp`` at most 10 minutes later and in the future."""
    import jwt

    token = bearer(request)
    undecodable = error(401, "A JSON web token could not be decoded")
    try:
        header = jwt.get_unverified_header(token)
        app_id = str(jwt.decode(token, options={"verify_signature": False}).get("iss"))
    except jwt.PyJWTError:
        return undecodable
    public_key = gh.apps.get(app_id)
    if header.get("alg") != "RS256" or public_key is None:
        return undecodable
    try:
        claims = jwt.decode(
            token, public_key, algorithms=["RS256"], options={"require": ["iat", "exp", "iss"], "verify_iat": False}
        )
    except jwt.ExpiredSignatureError:
        return error(401, "'Expiration time' claim ('exp') must be a numeric value representing the future time")
    except jwt.PyJWTError:
        return undecodable
    issued, expires = claims["iat"], claims["exp"]
    if not isinstance(issued, int) or issued > time.time() + 1:
        return error(401, "'Issued at' claim ('iat') must be an Integer representing a time in the past")
    if not isinstance(expires, int) or expires - issued > JWT_MAX_LIFETIME + 60 or expires > time.time() + 600:
        return error(401, "'Expiration time' claim ('exp') is too far in the future")
    return Caller(token, app_id=app_id)


def now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def find_repo(server: StandIn, params: dict[str, str], caller: Caller) -> Repo | None:
    """The repository if this caller can see it (else None: GitHub answers 404)."""
    repo = state(server).repo(f"{params['owner']}/{params['name']}")
    if repo is None or caller.token in repo.hidden_from or "*" in repo.hidden_from:
        return None
    if caller.installation is not None and not caller.installation.sees(repo.full_name):
        return None
    return repo


def find_commit(server: StandIn, params: dict[str, str], caller: Caller) -> tuple[Repo, str] | Reply:
    """The repository and the commit ``params["ref"]`` names, or GitHub's 404 or 422 answer."""
    repo = find_repo(server, params, caller)
    if repo is None:
        return error(404, "Not Found")
    ref = params["ref"].lower()
    if not commit_exists(repo, ref):
        return error(422, f"No commit found for SHA: {params['ref']}")
    return repo, ref


def commit_exists(repo: Repo, sha: str) -> bool:
    if len(sha) != 40 or any(c not in "0123456789abcdef" for c in sha):
        return False
    return repo.commits is None or sha in repo.commits


def page(request: Recorded, items: list[Any]) -> tuple[list[Any], dict[str, str]]:
    """One page of ``items`` (``per_page`` ≤ 100, ``page`` from 1) and its ``Link`` header."""
    query = parse_qs(request.query)
    try:
        per_page = max(1, min(100, int(query.get("per_page", ["30"])[0])))
        number = max(1, int(query.get("page", ["1"])[0]))
    except ValueError:
        per_page, number = 30, 1
    chunk = items[(number - 1) * per_page : number * per_page]
    headers = {}
    if number * per_page < len(items):
        kept = [f"{k}={v[0]}" for k, v in query.items() if k not in ("page", "per_page")]
        link = "&".join([*kept, f"per_page={per_page}", f"page={number + 1}"])
        headers["Link"] = f'<{request.path}?{link}>; rel="next"'
    return chunk, headers


def user(caller: Caller) -> dict[str, Any]:
    """Who created a status: the App's bot for an installation token, else the token's user."""
    if caller.installation is not None:
        return account("buildkite-fanout[bot]", "Bot")
    return account("buildkite-bot", "User")


def account(login: str, kind: str = "Organization") -> dict[str, Any]:
    """A user, bot or organisation as GitHub embeds one ("Simple User")."""
    number = 4808 + sum(login.encode())
    api = f"https://api.github.com/users/{login}"
    return {
        "login": login,
        "id": number,
        "node_id": f"MDQ6VXNlcj{number}",
        "avatar_url": f"https://avatars.githubusercontent.com/u/{number}?v=4",
        "gravatar_id": "",
        "url": api,
        "html_url": f"https://github.com/{login}",
        "followers_url": f"{api}/followers",
        "following_url": f"{api}/following{{/other_user}}",
        "gists_url": f"{api}/gists{{/gist_id}}",
        "starred_url": f"{api}/starred{{/owner}}{{/repo}}",
        "subscriptions_url": f"{api}/subscriptions",
        "organizations_url": f"{api}/orgs",
        "repos_url": f"{api}/repos",
        "events_url": f"{api}/events{{/privacy}}",
        "received_events_url": f"{api}/received_events",
        "type": kind,
        "user_view_type": "public",
        "site_admin": False,
    }
