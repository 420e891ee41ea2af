"""GitHub App authentication: an RS256 JWT for the App itself, the installation that covers each
repository, and installation tokens reused until shortly before they expire.

With ``GITHUB_APP_INSTALLATION_ID`` every repository uses that installation. Without it, the
installation of each repository is looked up (``GET /repos/{owner}/{repo}/installation``, with the
JWT) and kept for the life of the instance, so one deployment serves repositories in several
organisations, each through its own installation.
"""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any

from github_api import raise_for_github

from buildkite_events import ConfigError, TransientError
from buildkite_events.http import json_object

if TYPE_CHECKING:
    from github_api import GitHub

JWT_LIFETIME = 600  # GitHub's maximum: ten minutes
CLOCK_DRIFT = 60  # iat this far in the past, as GitHub advises
REFRESH_BEFORE = 300.0  # installation tokens live an hour; replaced 5 minutes early (halfway if shorter)
MAX_CACHED = 1000  # repositories (and installations) remembered per instance


@dataclass(frozen=True)
class App:
    """GitHub App credentials: the App, its private key, and optionally the one installation to use."""

    app_id: str
    private_key: str = field(repr=False)
    installation_id: str = ""  # empty: the installation of each repository, looked up


class AppAuth:
    """Installation tokens per repository for one App (thread-safe; one per instance)."""

    def __init__(self, app: App, github: GitHub) -> None:
        self.app = app
        self.github = github
        self._lock = threading.Lock()
        self._installations: dict[str, str] = {}  # lower-case owner/repo -> installation id (looked up)
        self._tokens: dict[str, tuple[str, float]] = {}  # installation id -> (token, refresh at)

    def token(self, repo: str) -> str:
        """An installation token that can act on ``repo``."""
        installation = self.installation(repo)
        with self._lock:
            token, refresh_at = self._tokens.get(installation, ("", 0.0))
        if token and time.time() < refresh_at:
            return token
        token, refresh_at = self._installation_token(installation, repo)
        with self._lock:
            _bounded(self._tokens)[installation] = (token, refresh_at)
        return token

    def installation(self, repo: str) -> str:
        if self.app.installation_id:
            return self.app.installation_id.strip()
        with self._lock:
            known = self._installations.get(repo.lower())
        if known:
            return known
        response = self.github.request("GET", f"/repos/{repo}/installation", None, authorization=self._bearer())
        raise_for_github(
            response,
            f"looking up the GitHub App's installation on {repo}",
            config={
                404: f"GitHub App {self.app.app_id} is not installed on {repo}: install it on the repository's "
                "owner (all repositories, or a selection that includes this one)"
            },
        )
        found = str(json_object(response).get("id") or "")
        if not found.isdigit():
            raise TransientError(f"GitHub answered no installation id for {repo}")
        with self._lock:
            _bounded(self._installations)[repo.lower()] = found
        return found

    def looked_up(self, repo: str) -> bool:
        """True when ``repo``'s installation came from a lookup (so it may have changed since)."""
        with self._lock:
            return repo.lower() in self._installations

    def forget(self, repo: str, token: str | None = None) -> None:
        """Drop a token GitHub refused (``token``), or everything known about ``repo``'s installation."""
        with self._lock:
            installation = self.app.installation_id.strip() or self._installations.get(repo.lower(), "")
            held = self._tokens.get(installation)
            if held and (token is None or held[0] == token):
                del self._tokens[installation]
            if token is None:
                self._installations.pop(repo.lower(), None)

    def jwt(self, now: float | None = None) -> str:
        import jwt

        issued = int(now or time.time()) - CLOCK_DRIFT
        claims = {"iat": issued, "exp": issued + JWT_LIFETIME, "iss": self.app.app_id.strip()}
        try:
            return jwt.encode(claims, private_key_pem(self.app.private_key), algorithm="RS256")
        except Exception as err:  # a malformed key: nothing a retry can fix
            reason = type(err).__name__
            raise ConfigError(f"GITHUB_APP_PRIVATE_KEY is not a usable RSA private key ({reason})") from None

    def _bearer(self) -> str:
        return f"Bearer {self.jwt()}"

    def _installation_token(self, installation: str, repo: str) -> tuple[str, float]:
        path = f"/app/installations/{installation}/access_tokens"
        response = self.github.request("POST", path, None, authorization=self._bearer())
        if response.status_code == 404 and self.looked_up(repo):
            # Uninstalled (or reinstalled under a new id) since the lookup: look it up again.
            self.forget(repo)
            installation = self.installation(repo)
            path = f"/app/installations/{installation}/access_tokens"
            response = self.github.request("POST", path, None, authorization=self._bearer())
        raise_for_github(
            response,
            "getting an installation token",
            config={404: f"installation {installation} not found for this app"},
        )
        data = json_object(response)
        token, expires = data.get("token"), _parse_expiry(data.get("expires_at"))
        if not isinstance(token, str) or not token:
            raise TransientError("GitHub returned no installation token")
        lifetime = max(0.0, expires - time.time())
        return token, expires - min(REFRESH_BEFORE, lifetime / 2)


def private_key_pem(value: str) -> str:
    """Keys pasted into an environment often carry literal ``\\n``: put the newlines back."""
    key = value.strip()
    if "\\n" in key and "\n" not in key:
        key = key.replace("\\n", "\n")
    return key


def _parse_expiry(value: Any) -> float:
    try:
        return datetime.fromisoformat(str(value).replace("Z", "+00:00")).timestamp()
    except ValueError:
        return time.time() + 600  # unknown: assume a short life


def _bounded(cache: dict[str, Any]) -> dict[str, Any]:
    """``cache``, its oldest entry dropped when full (a long-lived instance meets many repositories)."""
    if len(cache) >= MAX_CACHED:
        del cache[next(iter(cache))]
    return cache
