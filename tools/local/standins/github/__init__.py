"""A GitHub-like REST API under ``/github`` (and ``/github/api/v3``, as GitHub Enterprise Server).

- ``commit_statuses``: commit statuses (create, list for a ref, combined status), the repository and
  rate-limit reads.
- ``checks``: check runs (create, update, list for a ref), for GitHub Apps only.
- ``apps``: the App's installation per repository and installation tokens, for the App's JWT.
- ``core``: the data, the callers (tokens, installation tokens, the App's JWT), rate limits,
  and 404 for what a caller cannot see.

Tests drive it through ``state(server)`` and the helpers below; ``report(server)`` shows
``make demo`` the statuses and check runs that would have been set.
"""

from __future__ import annotations

import time
from typing import Any

from tools.local.standin import StandIn

from . import apps, checks, commit_statuses
from .apps import DEMO_APP_ID, demo_app_env, generate_key, install_app, register_app
from .checks import check_runs
from .core import DEMO_TOKEN, PREFIX, GitHubState, Installation, Repo, state

__all__ = [
    "DEMO_APP_ID",
    "DEMO_TOKEN",
    "PREFIX",
    "GitHubState",
    "Installation",
    "Repo",
    "add_repo",
    "allow_token",
    "check_runs",
    "combined",
    "demo_app_env",
    "exhaust_rate_limit",
    "generate_key",
    "hide_repo",
    "install_app",
    "register",
    "register_app",
    "report",
    "secondary_rate_limit",
    "slow_down",
    "state",
    "statuses",
]


def register(server: StandIn) -> None:
    apps.register(server)
    checks.register(server)
    commit_statuses.register(server)


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
    return commit_statuses.combined_status(repo, sha.lower())


# -- make demo ------------------------------------------------------------------------------


def report(server: StandIn) -> tuple[str, list[str]]:
    gh = state(server)
    title = "GitHub (stand-in): commit statuses and check runs that would have been set"
    if not gh.created and not gh.check_runs:
        return title, ["(none)"]
    lines = ["commit statuses:", *commit_statuses.report_lines(server)] if gh.created else ["0 commit statuses"]
    return title, lines + (["check runs:", *checks.report_lines(server)] if gh.check_runs else ["0 check runs"])
