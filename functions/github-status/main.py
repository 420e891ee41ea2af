"""github-status: Buildkite build states as GitHub commit statuses that never go backwards.

One status per build event on ``{owner}/{repo}@{sha}`` under one context per pipeline
(``buildkite/<pipeline slug>`` by default). Deliveries arrive out of order, so every
status first goes through a small ledger in Firestore (one document per repository,
commit and context): a status is posted only if it is newer than what the ledger holds
(a later build, or a later state of the same build), and after posting the ledger is
read again so that a slower, older post that landed last is repaired at once.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import threading
import time
import uuid
from collections.abc import Iterator, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from functools import cache
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

import functions_framework

from buildkite_events import BuildkiteEvent, ConfigError, InvalidEvent, Skip, TransientError, env, pubsub_handler
from buildkite_events.http import raise_for, retry_after
from buildkite_events.idempotency import DEFAULT_COLLECTION
from buildkite_events.timeutil import format_duration

if TYPE_CHECKING:
    from requests import Response

STATES = ("error", "failure", "pending", "success")
DESCRIPTION_LIMIT = 140  # GitHub answers 422 beyond this
USER_AGENT = "buildkite-fanout-github-status"
API_VERSION = "2022-11-28"

# How far along a build is: a status never replaces a higher rank of the same build.
_RANK = {"creating": 0, "waiting": 0, "scheduled": 0, "running": 1, "blocked": 2, "failing": 3, "canceling": 3}
_TERMINAL = {"passed": "success", "failed": "failure", "canceled": "error", "skipped": "error", "not_run": "error"}
_PENDING = {"creating", "waiting", "scheduled", "running"}
_GITHUB_PROVIDERS = {"github", "github_enterprise"}
_OPEN_PROVIDERS = {"", "private", "unknown"}  # generic git: decide by the repository's host
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_SHA = re.compile(r"^[0-9a-fA-F]{40}$")
_SCP_LIKE = re.compile(r"^(?:[^@/\s]+@)?(?P<host>[^:/\s]+):(?P<path>[^\s]+)$")  # git@github.com:o/r.git
_REJECTED = "it rejected the credentials (GITHUB_TOKEN, or the App's id and private key)"
# A token or App installation that cannot see a private repository gets 404, not 403.
_SEE_REPO = (
    "give the token access to it (fine-grained: Commit statuses read and write on that repository; "
    "classic: the repo:status scope, repo for a private one), or install the GitHub App on it"
)


@dataclass(frozen=True)
class Config:
    api_url: str = env("GITHUB_API_URL", default="https://api.github.com")
    token: str = env("GITHUB_TOKEN", default="", secret=True)
    app_id: str = env("GITHUB_APP_ID", default="")
    app_private_key: str = env("GITHUB_APP_PRIVATE_KEY", default="", secret=True)
    installation_id: str = env("GITHUB_APP_INSTALLATION_ID", default="")
    context: str = env("GITHUB_STATUS_CONTEXT", default="buildkite/{pipeline}")
    blocked_state: str = env("GITHUB_BLOCKED_STATE", default="pending")
    timeout_seconds: float = env("GITHUB_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        if not self.api_url.startswith(("https://", "http://")):
            raise ValueError("GITHUB_API_URL must be an http(s) URL, e.g. https://api.github.com")
        if self.blocked_state not in STATES:
            raise ValueError(f"GITHUB_BLOCKED_STATE must be one of {', '.join(STATES)}")
        app = {
            "GITHUB_APP_ID": self.app_id,
            "GITHUB_APP_INSTALLATION_ID": self.installation_id,
            "GITHUB_APP_PRIVATE_KEY": self.app_private_key,
        }
        if any(app.values()):
            missing = [name for name, value in app.items() if not value.strip()]
            if missing:
                raise ValueError(f"GitHub App authentication also needs {', '.join(missing)}")
            if not self.installation_id.strip().isdigit():
                raise ValueError("GITHUB_APP_INSTALLATION_ID must be a number")
        elif not self.token.strip():
            raise ValueError(
                "set GITHUB_TOKEN, or GITHUB_APP_ID, GITHUB_APP_INSTALLATION_ID and GITHUB_APP_PRIVATE_KEY"
            )
        try:
            self.context.format(pipeline="p", organization="o")
        except (KeyError, IndexError, ValueError):
            raise ValueError("GITHUB_STATUS_CONTEXT may only use {pipeline} and {organization}") from None

    @property
    def uses_app(self) -> bool:
        return bool(self.app_id)

    @property
    def host(self) -> str:
        """The web host whose repositories this API serves (github.com, or the GHES host)."""
        host = (urlsplit(self.api_url).hostname or "").lower()
        return "github.com" if host == "api.github.com" else host


@dataclass(frozen=True)
class Status:
    """One commit status, and where it stands among the statuses of its build."""

    repo: str
    sha: str
    context: str
    state: str
    description: str
    target_url: str | None
    build: int
    rank: int
    at: float  # the event's own time (seconds), to order two events of equal rank

    @property
    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"state": self.state, "description": self.description, "context": self.context}
        if self.target_url:
            body["target_url"] = self.target_url
        return body

    @property
    def where(self) -> str:
        return f"{self.repo}@{self.sha[:7]} ({self.context})"


@functions_framework.cloud_event
@pubsub_handler(Config)
def update_github_status(event: BuildkiteEvent, config: Config) -> str:
    return publish(plan_status(event, config), _github(config), _ledger())


def publish(status: Status, github: GitHub, ledger: Ledger) -> str:
    """Post ``status`` unless the ledger holds a newer one; then make sure the newest is on top."""
    decision, held, version = ledger.reserve(status)
    if decision == "already":
        raise Skip(f"already set {held.state} on {held.where}: {held.description}")
    if decision == "superseded":
        raise Skip(
            f"kept {held.state} of build #{held.build} on {held.where}: "
            f"{status.state} ({status.description}) would be a step back"
        )
    github.create_status(held)
    note, posted = "", held
    for _ in range(5):
        newer = ledger.confirm(posted, version)
        if newer is None:
            return f"set {status.state} on {status.where}: {status.description}{note}"
        # A newer status was reserved while ours was in flight, and ours may have landed
        # after it: post the newer one again so that it is the one on top.
        posted, version = newer
        github.create_status(posted)
        note = f"; re-posted the newer {posted.state} of build #{posted.build} on top"
    raise TransientError(f"statuses for {status.where} kept changing; will check again")


# -- from a Buildkite event to a commit status ---------------------------------------------


def plan_status(event: BuildkiteEvent, config: Config) -> Status:
    """The status this event asks for; ``Skip`` says why it asks for none."""
    build = event.build
    if build is None or build.number is None:
        raise InvalidEvent(f"{event.event_type} carries no build number")
    try:
        repo = repository_of(event, config)
    except NotOnGitHub as why:
        raise Skip(f"no status: {why}") from None
    commit = (build.commit or "").strip()
    if not _SHA.match(commit):
        raise Skip(f"no status: commit {commit[:50]!r} is not a full 40-character SHA (a UI or API build?)")
    mapped = github_state(build.effective_state, config.blocked_state)
    if mapped is None:
        raise Skip(f"no status for build state {build.effective_state!r}")
    state, rank = mapped
    occurred = event.occurred_at
    return Status(
        repo=repo,
        sha=commit.lower(),
        context=status_context(event, config),
        state=state,
        description=describe(build.number, build.effective_state or "", build.duration_seconds),
        target_url=build.web_url,
        build=build.number,
        rank=rank,
        at=occurred.timestamp() if occurred else 0.0,
    )


def github_state(state: str | None, blocked_state: str = "pending") -> tuple[str, int] | None:
    """(GitHub state, rank) for a Buildkite build state; None for a state we do not report."""
    if state in _TERMINAL:
        return _TERMINAL[state], 4
    if state == "blocked":
        return blocked_state, _RANK["blocked"]
    if state == "failing":
        return "failure", _RANK["failing"]  # as Buildkite's own GitHub integration does
    if state == "canceling":
        return "error", _RANK["canceling"]
    if state in _PENDING:
        return "pending", _RANK[state]
    return None


def describe(number: int, state: str, duration: float | None) -> str:
    """ "Build #2042 failed in 5m10s": short, and never over GitHub's 140 characters."""
    took = format_duration(duration)
    words = {
        "scheduled": "is scheduled",
        "creating": "is scheduled",
        "waiting": "is waiting",
        "running": "is running",
        "failing": "is failing",
        "blocked": "is blocked, waiting to be unblocked",
        "canceling": "is being canceled",
        "canceled": "was canceled",
        "skipped": "was skipped",
        "not_run": "did not run",
        "passed": f"passed in {took}" if took else "passed",
        "failed": f"failed in {took}" if took else "failed",
    }
    text = f"Build #{number} {words.get(state, state)}"
    return text if len(text) <= DESCRIPTION_LIMIT else text[: DESCRIPTION_LIMIT - 1] + "…"


def status_context(event: BuildkiteEvent, config: Config) -> str:
    return config.context.format(pipeline=event.pipeline_slug or "pipeline", organization=event.organization or "")


class NotOnGitHub(Exception):
    """The build's repository is not one this function can set statuses on (acked, no request)."""


def repository_of(event: BuildkiteEvent, config: Config) -> str:
    """``owner/repo`` on this GitHub; ``NotOnGitHub`` says why the build is not on it."""
    pipeline = event.pipeline
    provider = (pipeline.provider or "").lower() if pipeline else ""
    url = (pipeline.repository if pipeline else None) or ""
    if provider in _GITHUB_PROVIDERS:
        from_settings = (pipeline.provider_repository if pipeline else None) or ""
        if _owner_repo(from_settings.strip("/").split("/")):
            return from_settings.strip("/")
        parsed = parse_repository(url)
        if parsed:
            return parsed[1]
        raise NotOnGitHub(f"the {provider} pipeline's repository {url[:200]!r} is not an owner/repo I can read")
    if provider not in _OPEN_PROVIDERS:
        raise NotOnGitHub(f"the pipeline's provider is {provider}, not GitHub")
    parsed = parse_repository(url)
    if parsed and parsed[0] in {"github.com", config.host}:
        return parsed[1]
    raise NotOnGitHub(f"repository {url[:200]!r} is not on {config.host}" if url else "the pipeline has no repository")


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
    repo = _owner_repo(segments)
    return (host, repo) if host and repo else None


def _owner_repo(segments: list[str]) -> str | None:
    if len(segments) != 2 or not all(_NAME.match(s) and s not in {".", ".."} for s in segments):
        return None
    return "/".join(segments)


# -- GitHub -------------------------------------------------------------------------------


class GitHub:
    """The two calls we need, with GitHub's error answers mapped onto ack/nack."""

    def __init__(self, config: Config) -> None:
        import requests

        self.config = config
        self.base = config.api_url.rstrip("/")
        self.session = requests.Session()
        self.session.headers.update(
            {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": API_VERSION, "User-Agent": USER_AGENT}
        )
        self.auth = AppAuth(config, self) if config.uses_app else None
        self._timeout = (min(5.0, config.timeout_seconds), config.timeout_seconds)

    def create_status(self, status: Status) -> dict[str, Any]:
        path = f"/repos/{status.repo}/statuses/{status.sha}"
        response = self._authorized("POST", path, status.body)
        _raise_for(
            response,
            f"creating a status on {status.where}",
            invalid={422: "an unknown commit, or 1,000 statuses on this context already"},
            config={404: f"these credentials cannot see {status.repo}: {_SEE_REPO}"},
        )
        try:
            result = response.json()
        except ValueError:  # created all the same: the body only echoes the status
            return {}
        return result if isinstance(result, dict) else {}

    def _authorized(self, method: str, path: str, body: dict[str, Any] | None = None) -> Response:
        for attempt in (1, 2):
            token = self.auth.token() if self.auth else self.config.token.strip()
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

    def __init__(self, config: Config, github: GitHub) -> None:
        self.config = config
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
        claims = {"iat": issued, "exp": issued + 600, "iss": self.config.app_id.strip()}
        try:
            return jwt.encode(claims, private_key_pem(self.config.app_private_key), algorithm="RS256")
        except Exception as err:  # a malformed key: nothing a retry can fix
            reason = type(err).__name__
            raise ConfigError(f"GITHUB_APP_PRIVATE_KEY is not a usable RSA private key ({reason})") from None

    def _installation_token(self) -> tuple[str, float]:
        path = f"/app/installations/{self.config.installation_id.strip()}/access_tokens"
        response = self.github.request("POST", path, None, authorization=f"Bearer {self.jwt()}")
        _raise_for(
            response,
            "getting an installation token",
            config={404: f"installation {self.config.installation_id} not found for this app"},
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


@cache
def _github(config: Config) -> GitHub:
    return GitHub(config)


# -- the ledger: what was last set per repository, commit and context ---------------------


class Ledger:
    """Firestore documents ``github-status:<hash>`` in the shared idempotency collection.

    Each holds the newest status reserved for one (repository, commit, context), its
    ``version`` and the version last confirmed on GitHub. Reservation and confirmation
    run in transactions, so racing deliveries agree on which status is newest.
    """

    def __init__(self, client: Any = None, collection: str = DEFAULT_COLLECTION, ttl_days: int = 30) -> None:
        self._client = client
        self.collection = collection
        self.ttl = timedelta(days=ttl_days)
        self._lock = threading.Lock()

    @property
    def client(self) -> Any:
        if self._client is None:
            with self._lock, _firestore_errors("connect"):
                if self._client is None:
                    from google.cloud import firestore

                    self._client = firestore.Client()
        return self._client

    def ref(self, status: Status) -> Any:
        key = f"{status.repo.lower()}|{status.sha}|{status.context.lower()}"  # GitHub: context is case-insensitive
        doc_id = "github-status:" + hashlib.sha256(key.encode()).hexdigest()[:40]
        return self.client.collection(self.collection).document(doc_id)

    def reserve(self, status: Status) -> tuple[str, Status, str]:
        """("post", status, version), ("already", status, version) or ("superseded", newer, version)."""
        from google.cloud import firestore

        ref = self.ref(status)

        @firestore.transactional
        def run(txn: Any) -> tuple[str, Status, str]:
            snap = ref.get(transaction=txn)
            current = snap.to_dict() if snap.exists else None
            if current:
                held = _status_from(current)
                version = str(current.get("version"))
                if _same(held, status):
                    if current.get("posted") == version:
                        return "already", held, version
                    return "post", held, version  # reserved before but not confirmed: post again
                if not _newer(status, held):
                    return "superseded", held, version
            version = uuid.uuid4().hex
            txn.set(ref, self._document(status, version))
            return "post", status, version

        with _firestore_errors("reserve"):
            result: tuple[str, Status, str] = run(self.client.transaction())
        return result

    def confirm(self, posted: Status, version: str) -> tuple[Status, str] | None:
        """Record ``version`` as on GitHub; if a newer status was reserved meanwhile, return it."""
        from google.cloud import firestore

        ref = self.ref(posted)

        @firestore.transactional
        def run(txn: Any) -> tuple[Status, str] | None:
            snap = ref.get(transaction=txn)
            current = snap.to_dict() if snap.exists else None
            if not current or current.get("version") == version:
                txn.set(ref, {**(current or self._document(posted, version)), "posted": version})
                return None
            return _status_from(current), str(current["version"])

        with _firestore_errors("confirm"):
            result: tuple[Status, str] | None = run(self.client.transaction())
        return result

    def _document(self, status: Status, version: str) -> dict[str, Any]:
        return {
            **asdict(status),
            "scope": "github-status",
            "version": version,
            "posted": None,
            "expire_at": datetime.now(UTC) + self.ttl,
        }


def _status_from(doc: dict[str, Any]) -> Status:
    return Status(
        repo=str(doc["repo"]),
        sha=str(doc["sha"]),
        context=str(doc["context"]),
        state=str(doc["state"]),
        description=str(doc.get("description") or ""),
        target_url=doc.get("target_url"),
        build=int(doc["build"]),
        rank=int(doc["rank"]),
        at=float(doc.get("at") or 0.0),
    )


def _same(a: Status, b: Status) -> bool:
    return (a.build, a.rank, a.state, a.description) == (b.build, b.rank, b.state, b.description)


def _newer(candidate: Status, held: Status) -> bool:
    """A later build always wins; within a build, a later stage; within a stage, a later event."""
    return (candidate.build, candidate.rank, candidate.at) > (held.build, held.rank, held.at)


@contextlib.contextmanager
def _firestore_errors(action: str) -> Iterator[None]:
    from google.api_core import exceptions as gexc
    from google.auth.exceptions import DefaultCredentialsError

    try:
        yield
    except (gexc.PermissionDenied, gexc.Unauthenticated, gexc.NotFound, gexc.FailedPrecondition) as err:
        raise ConfigError(f"Firestore {action} of the status ledger failed: {type(err).__name__}") from err
    except DefaultCredentialsError:
        raise ConfigError(f"Firestore {action} of the status ledger: no Google credentials") from None
    except (gexc.GoogleAPICallError, gexc.RetryError, ValueError) as err:
        raise TransientError(f"Firestore {action} of the status ledger failed: {type(err).__name__}") from err


@cache
def _ledger() -> Ledger:
    return Ledger()
