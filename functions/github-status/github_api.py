"""GitHub: the REST calls github-status makes (commit statuses, check runs), GitHub's answers as the
handler's error kinds (rate limits first), and which repository and commit a build is on."""

from __future__ import annotations

import contextlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from buildkite_events import BuildkiteEvent, Skip, TransientError
from buildkite_events.http import json_object, raise_for, retry_after

if TYPE_CHECKING:
    from github_app import App, AppAuth
    from requests import Response

USER_AGENT = "buildkite-fanout-github-status"
API_VERSION = "2022-11-28"
LIST_PAGES = 10  # check runs looked through for ours: 1,000 per commit and name at most
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>[^\s]+)$")  # git@github.com:o/r.git
_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_GITHUB_PROVIDERS = {"github", "github_enterprise"}
_OPEN_PROVIDERS = {"", "private", "unknown"}  # generic git: decide by the repository's host
_REJECTED = "it rejected the credentials (GITHUB_TOKEN, or the App's id and private key)"


def _cannot_see(repo: str, permission: str) -> str:
    # A token or App installation that cannot see a private repository gets 404, not 403.
    return (
        f"these credentials cannot see {repo}: give the token access to it (fine-grained: {permission} read and "
        "write on that repository; classic: the repo:status scope, repo for a private one), or install the "
        f"GitHub App on it with {permission}: read and write"
    )


class GitHub:
    """The calls we need, with GitHub's error answers mapped onto ack/nack."""

    def __init__(self, api_url: str, *, token: str = "", app: App | None = None, timeout: float = 10.0) -> None:
        import requests

        self.base = api_url.rstrip("/")
        self.token = token.strip()
        self.session = requests.Session()
        self.session.headers.update(
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT}
        )
        self.auth: AppAuth | None = None
        if app is not None:  # the App's code (and PyJWT) loads only for App authentication
            from github_app import AppAuth

            self.auth = AppAuth(app, self)
        self._timeout = (min(5.0, timeout), timeout)

    def create_status(self, repo: str, sha: str, body: dict[str, Any]) -> None:
        """``POST /repos/{repo}/statuses/{sha}``; ``repo`` is ``owner/name``."""
        response = self._authorized("POST", f"/repos/{repo}/statuses/{sha}", repo, body)
        raise_for_github(
            response,
            f"creating a status on {repo}@{sha[:7]} ({body.get('context')})",
            invalid={422: "an unknown commit, or 1,000 statuses on this context already"},
            config={404: _cannot_see(repo, "Commit statuses")},
        )

    def create_check_run(self, repo: str, body: dict[str, Any]) -> int:
        """``POST /repos/{repo}/check-runs``: the new run's id."""
        response = self._authorized("POST", f"/repos/{repo}/check-runs", repo, body)
        self._raise_for_checks(response, f"creating check run {body.get('name')!r} on {repo}", repo)
        run_id = json_object(response).get("id")
        if not isinstance(run_id, int):
            raise TransientError(f"GitHub answered no check run id on {repo}")  # found again by the redelivery
        return run_id

    def update_check_run(self, repo: str, run_id: int, body: dict[str, Any]) -> None:
        """``PATCH /repos/{repo}/check-runs/{run_id}``."""
        response = self._authorized("PATCH", f"/repos/{repo}/check-runs/{run_id}", repo, body)
        self._raise_for_checks(response, f"updating check run {run_id} on {repo}", repo)

    def find_check_run(self, repo: str, sha: str, name: str, external_id: str) -> int | None:
        """Our App's check run named ``name`` with ``external_id`` on commit ``sha``, if there is one."""
        params = {"check_name": name, "filter": "all", "per_page": "100"}
        if self.auth:
            params["app_id"] = self.auth.app.app_id.strip()
        for page in range(1, LIST_PAGES + 1):
            path = f"/repos/{repo}/commits/{sha}/check-runs"
            response = self._authorized("GET", path, repo, params={**params, "page": str(page)})
            self._raise_for_checks(response, f"listing check runs of {repo}@{sha[:7]}", repo)
            runs = json_object(response).get("check_runs")
            runs = runs if isinstance(runs, list) else []
            for run in runs:
                if isinstance(run, dict) and run.get("external_id") == external_id and run.get("name") == name:
                    return int(run["id"])
            if 'rel="next"' not in response.headers.get("Link", ""):
                return None
        return None

    def _raise_for_checks(self, response: Response, what: str, repo: str) -> None:
        raise_for_github(
            response,
            what,
            invalid={422: "an unknown commit, or a check run GitHub refuses"},
            config={
                403: "the GitHub App needs the Checks: read and write permission (and to be installed on the "
                "repository); only GitHub Apps can write check runs",
                404: _cannot_see(repo, "Checks"),
            },
        )

    def _authorized(
        self,
        method: str,
        path: str,
        repo: str,
        body: dict[str, Any] | None = None,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        for attempt in (1, 2):
            token = self.auth.token(repo) if self.auth else self.token
            response = self.request(method, path, body, authorization=f"Bearer {token}", params=params)
            if self.auth and attempt == 1 and response.status_code == 401:
                self.auth.forget(repo, token)  # revoked or expired early: one fresh installation token
                continue
            if self.auth and attempt == 1 and response.status_code == 404 and self.auth.looked_up(repo):
                self.auth.forget(repo)  # the App may have moved to another installation: look again, once
                continue
            return response
        return response

    def request(
        self,
        method: str,
        path: str,
        body: dict[str, Any] | None,
        *,
        authorization: str,
        params: Mapping[str, str] | None = None,
    ) -> Response:
        import requests

        try:
            return self.session.request(
                method,
                self.base + path,
                json=body,
                params=dict(params or {}),
                headers={"Authorization": authorization},
                timeout=self._timeout,
            )
        except requests.Timeout:
            raise TransientError(f"GitHub did not answer {method} {path} in time") from None
        except requests.RequestException as err:
            raise TransientError(f"could not reach GitHub: {type(err).__name__}") from None


def _message(response: Response) -> str:
    try:
        data = response.json()
    except ValueError:
        return response.text[:200]
    if not isinstance(data, dict):
        return ""
    errors = data.get("errors")
    detail = "; ".join(str(e.get("message") or e.get("code")) for e in errors if isinstance(e, dict)) if errors else ""
    return "; ".join(str(p) for p in (data.get("message"), detail) if p)[:300]


def rate_limit_wait(response: Response, now: float | None = None) -> float | None:
    """Seconds to wait if ``response`` is a primary or secondary rate limit, else None."""
    if response.status_code not in (403, 429):
        return None
    headers = response.headers
    wait = retry_after(headers)
    if wait is not None:
        return max(1.0, wait)
    if headers.get("x-ratelimit-remaining") == "0" and headers.get("x-ratelimit-reset"):
        with contextlib.suppress(ValueError):
            return max(1.0, float(headers["x-ratelimit-reset"]) - (now or time.time()) + 1.0)
    if response.status_code == 429 or "rate limit" in _message(response).lower():
        return 60.0  # GitHub: without a hint, wait at least a minute
    return None


def raise_for_github(
    response: Response,
    what: str,
    *,
    invalid: Mapping[int | range, str] | None = None,
    config: Mapping[int | range, str] | None = None,
) -> None:
    """GitHub's answers as the handler's error kinds: rate limits first, then the shared mapping."""
    wait = rate_limit_wait(response)
    if wait is not None:
        raise TransientError(f"GitHub rate limit while {what}; retry in {wait:.0f}s", retry_after=wait)
    message = _message(response)
    raise_for(
        response.status_code,
        f"GitHub ({what})",
        headers=response.headers,
        detail=f"({message})" if message else "",
        transient={409},
        invalid=invalid,
        config={401: _REJECTED, 403: "check the token's permissions", **(config or {})},
    )


# -- which repository and commit -------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    """Where a build's report goes: ``owner/repo``, the commit, and the context (the check run's name)."""

    repo: str
    sha: str
    name: str


def target_of(event: BuildkiteEvent, host: str, name: str) -> Target:
    """The build's repository on this GitHub and its full commit SHA; ``Skip`` says why there is none."""
    build = event.build
    try:
        repo = repository_of(event, host)
    except NotOnGitHub as why:
        raise Skip(f"nothing to report: {why}") from None
    commit = ((build.commit if build else None) or "").strip()
    if not _SHA.match(commit):
        raise Skip(f"nothing to report: commit {commit[:50]!r} is not a full 40-character SHA (a UI or API build?)")
    return Target(repo, commit.lower(), name)


class NotOnGitHub(Exception):
    """The build's repository is not one this function can report on (acked, no request)."""


def repository_of(event: BuildkiteEvent, host: str) -> str:
    """``owner/repo`` on this GitHub (``host`` is its web host); ``NotOnGitHub`` says why not."""
    pipeline = event.pipeline
    provider = (pipeline.provider or "").lower() if pipeline else ""
    url = (pipeline.repository if pipeline else None) or ""
    if provider in _GITHUB_PROVIDERS:
        from_settings = (pipeline.provider_repository if pipeline else None) or ""
        if owner_repo(from_settings.strip("/").split("/")):
            return from_settings.strip("/")
        parsed = parse_repository(url)
        if parsed:
            return parsed[1]
        raise NotOnGitHub(f"the {provider} pipeline's repository {url[:200]!r} is not an owner/repo I can read")
    if provider not in _OPEN_PROVIDERS:
        raise NotOnGitHub(f"the pipeline's provider is {provider}, not GitHub")
    parsed = parse_repository(url)
    if parsed and parsed[0] in {"github.com", host}:
        return parsed[1]
    raise NotOnGitHub(f"repository {url[:200]!r} is not on {host}" if url else "the pipeline has no repository")


def web_host(api_url: str) -> str:
    """The web host an API serves: github.com for api.github.com, <sub>.ghe.com for GHE.com's
    api.<sub>.ghe.com, and the host itself for GitHub Enterprise Server (https://<host>/api/v3)."""
    host = (urlsplit(api_url).hostname or "").lower()
    if host == "api.github.com" or (host.startswith("api.") and host.endswith(".ghe.com")):
        return host.removeprefix("api.")
    return host


def parse_repository(url: str) -> tuple[str, str] | None:
    """(host, "owner/repo") from the clone URL forms Buildkite shows; None if it is none of them.

    git@github.com:o/r.git, https://github.com/o/r(.git), ssh://git@host[:port]/o/r.git,
    git://host/o/r.git, and the same on GHE.com (<sub>.ghe.com) or a GitHub Enterprise Server host.
    """
    url = url.strip()
    if "://" in url:
        parts = urlsplit(url)
        if parts.scheme not in {"https", "http", "ssh", "git", "git+ssh", "ssh+git"}:
            return None
        try:
            host = (parts.hostname or "").lower()
        except ValueError:
            return None
        path = parts.path
    else:
        match = _SCP_LIKE.match(url)
        if not match:
            return None
        host, path = match.group("host").lower(), match.group("path")
    segments = [s for s in path.strip("/").split("/") if s]
    if segments and segments[-1].endswith(".git"):
        segments[-1] = segments[-1][:-4]
    repo = owner_repo(segments)
    return (host, repo) if host and repo else None


def owner_repo(segments: list[str]) -> str | None:
    if len(segments) != 2 or not all(_NAME.match(s) and s not in {".", ".."} for s in segments):
        return None
    return "/".join(segments)
