"""GitHub: the REST calls github-status makes (commit statuses, GitHub App installation tokens),
GitHub's answers as the handler's error kinds (rate limits first), and which repository a clone
URL names."""

from __future__ import annotations

import contextlib
import re
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from buildkite_events import ConfigError, TransientError
from buildkite_events.http import raise_for, retry_after

if TYPE_CHECKING:
    from requests import Response

USER_AGENT = "buildkite-fanout-github-status"
API_VERSION = "2022-11-28"
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>[^\s]+)$")  # git@github.com:o/r.git
_REJECTED = "it rejected the credentials (GITHUB_TOKEN, or the App's id and private key)"
# A token or App installation that cannot see a private repository gets 404, not 403.
_SEE_REPO = (
    "give the token access to it (fine-grained: Commit statuses read and write on that repository; "
    "classic: the repo:status scope, repo for a private one), or install the GitHub App on it"
)


@dataclass(frozen=True)
class App:
    """GitHub App credentials: the app, its installation on the repositories, its private key."""

    app_id: str
    installation_id: str
    private_key: str = field(repr=False)


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
        self.auth = AppAuth(app, self) if app else None
        self._timeout = (min(5.0, timeout), timeout)

    def create_status(self, repo: str, sha: str, body: dict[str, Any]) -> dict[str, Any]:
        """``POST /repos/{repo}/statuses/{sha}``; ``repo`` is ``owner/name``."""
        response = self._authorized("POST", f"/repos/{repo}/statuses/{sha}", body)
        _raise_for(
            response,
            f"creating a status on {repo}@{sha[:7]} ({body.get('context')})",
            invalid={422: "an unknown commit, or 1,000 statuses on this context already"},
            config={404: f"these credentials cannot see {repo}: {_SEE_REPO}"},
        )
        try:
            result = response.json()
        except ValueError:  # created all the same: the body only echoes the status
            return {}
        return result if isinstance(result, dict) else {}

    def _authorized(self, method: str, path: str, body: dict[str, Any] | None = None) -> Response:
        for attempt in (1, 2):
            token = self.auth.token() if self.auth else self.token
            response = self.request(method, path, body, authorization=f"Bearer {token}")
            if response.status_code == 401 and self.auth and attempt == 1:
                self.auth.forget(token)  # revoked or expired early: one fresh installation token
                continue
            return response
        raise AssertionError("unreachable")  # pragma: no cover

    def request(self, method: str, path: str, body: dict[str, Any] | None, *, authorization: str) -> Response:
        import requests

        try:
            return self.session.request(
                method,
                self.base + path,
                json=body,
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


def _raise_for(
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


class AppAuth:
    """GitHub App: an RS256 JWT buys an installation token, reused until shortly before it expires."""

    def __init__(self, app: App, github: GitHub) -> None:
        self.app = app
        self.github = github
        self._lock = threading.Lock()
        self._token: str | None = None
        self._refresh_at = 0.0

    def token(self) -> str:
        with self._lock:
            if self._token is None or time.time() >= self._refresh_at:
                self._token, self._refresh_at = self._installation_token()
            return self._token

    def forget(self, token: str) -> None:
        with self._lock:
            if self._token == token:
                self._token = None

    def jwt(self, now: float | None = None) -> str:
        import jwt

        issued = int(now or time.time()) - 60  # GitHub's advice: allow for clock drift
        claims = {"iat": issued, "exp": issued + 600, "iss": self.app.app_id.strip()}
        try:
            return jwt.encode(claims, private_key_pem(self.app.private_key), algorithm="RS256")
        except Exception as err:  # a malformed key: nothing a retry can fix
            reason = type(err).__name__
            raise ConfigError(f"GITHUB_APP_PRIVATE_KEY is not a usable RSA private key ({reason})") from None

    def _installation_token(self) -> tuple[str, float]:
        installation = self.app.installation_id.strip()
        path = f"/app/installations/{installation}/access_tokens"
        response = self.github.request("POST", path, None, authorization=f"Bearer {self.jwt()}")
        _raise_for(
            response,
            "getting an installation token",
            config={404: f"installation {installation} not found for this app"},
        )
        data = response.json()
        token, expires = data.get("token"), _parse_expiry(data.get("expires_at"))
        if not isinstance(token, str) or not token:
            raise TransientError("GitHub returned no installation token")
        now = time.time()
        lifetime = max(0.0, expires - now)
        return token, expires - min(300.0, lifetime / 2)  # refresh 5 minutes early (or halfway)


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


# -- repositories ----------------------------------------------------------------------------


def parse_repository(url: str) -> tuple[str, str] | None:
    """(host, "owner/repo") from the clone URL forms Buildkite shows; None if it is none of them.

    git@github.com:o/r.git, https://github.com/o/r(.git), ssh://git@host[:port]/o/r.git,
    git://host/o/r.git, and the same on a GitHub Enterprise host.
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
