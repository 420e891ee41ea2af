"""slack-notify: one Block Kit message in Slack for each finished build in a state you care about.

The subscription delivers every ``build.finished``; ``SLACK_NOTIFY_STATES`` picks the states
that post (default ``failed``) and ``SLACK_ROUTES`` the channel for each pipeline and branch
(default ``SLACK_CHANNEL``). Every string taken from the event is cleaned, escaped and cut
to Block Kit's limits, so a commit message can neither mention ``@channel`` nor hide a link.
"""

from __future__ import annotations

import fnmatch
import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, NoReturn

import functions_framework

from buildkite_events import BuildkiteEvent, ConfigError, InvalidEvent, TransientError, env, pubsub_handler
from buildkite_events.http import raise_for, retry_after
from buildkite_events.text import check_url as _check_url
from buildkite_events.text import clean, clusters, notified_build, units
from buildkite_events.text import notify_states as _notify_states
from buildkite_events.text import safe_url as _safe_url
from buildkite_events.timeutil import format_duration

if TYPE_CHECKING:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    from slack_sdk.http_retry import RetryHandler

DEFAULT_API_URL = "https://slack.com/api/"
MUTED = "-"  # a SLACK_ROUTES channel that means "do not post"

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks). Lengths are counted
# here in UTF-16 code units, never fewer than the characters Slack counts.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
URL_LIMIT = 3000
MAX_BLOCKS = 50
FALLBACK_LIMIT = 3000  # Slack cuts `text` at 40,000; a notification needs far less
VALUE_LIMIT = 300  # one field of the grid: readable, far below FIELD_LIMIT
RATE_LIMIT_RETRIES = 2  # 429s the client waits out in process (within SLACK_RATE_LIMIT_MAX_WAIT_SECONDS)

_LOOK = {
    "failed": ("🔴", "failed"),
    "passed": ("✅", "passed"),
    "blocked": ("⏸️", "is blocked"),
    "canceled": ("⛔", "was canceled"),
    "skipped": ("⏭️", "was skipped"),
    "not_run": ("⚪", "was not run"),
}

# Slack error codes that only an operator can fix, and what to tell them.
_TOKEN_FIX = "store the app's Bot User OAuth Token (xoxb-…) in the slack-notify-slack-token secret (SLACK_TOKEN)"  # noqa: S105
_ROUTE_FIX = "or send these builds elsewhere with SLACK_CHANNEL / SLACK_ROUTES"
_FIXES = {
    "invalid_auth": f"SLACK_TOKEN is not a valid token: {_TOKEN_FIX}",
    "not_authed": f"no token reached Slack: {_TOKEN_FIX}",
    "account_inactive": f"the token's user or app is deactivated: reinstall the app and {_TOKEN_FIX}",
    "token_revoked": f"the token was revoked: reinstall the app and {_TOKEN_FIX}",
    "token_expired": f"the token expired: {_TOKEN_FIX}",
    "missing_scope": "the token lacks the chat:write scope: add it under OAuth & Permissions and reinstall the app",
    "not_in_channel": "the app is not a member of {channel}: invite it there (/invite @<app name>), " + _ROUTE_FIX,
    "channel_not_found": (
        "this token sees no channel {channel}: correct SLACK_CHANNEL / SLACK_ROUTES "
        "(a private channel needs its ID, e.g. C0123456789, and the app invited)"
    ),
    "is_archived": "{channel} is archived: unarchive it, " + _ROUTE_FIX,
    "restricted_action": "workspace settings do not let the app post in {channel}: ask an admin, " + _ROUTE_FIX,
    "restricted_action_read_only_channel": "{channel} is read-only for the app: " + _ROUTE_FIX,
    "restricted_action_thread_only_channel": "{channel} only allows thread replies: " + _ROUTE_FIX,
    "team_access_not_granted": "the token has no access to the workspace of {channel}: grant it, " + _ROUTE_FIX,
    "ekm_access_denied": "the workspace's key management denies the app: ask a workspace admin",
    "access_denied": "Slack denied the app access to {channel}: ask a workspace admin, " + _ROUTE_FIX,
    "no_permission": "the token may not post to {channel}: ask a workspace admin, " + _ROUTE_FIX,
}
_SLACK_TRANSIENT = frozenset({"ratelimited", "internal_error", "fatal_error", "service_unavailable", "request_timeout"})


class SlackRejected(Exception):
    """Slack refused the message itself (invalid_blocks, msg_too_long...): a bug here, kept in the DLQ."""


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Route:
    """``pipeline-glob[@branch-glob]=channel`` from SLACK_ROUTES; ``channel`` None mutes."""

    pipeline: str
    branch: str | None
    channel: str | None

    def matches(self, pipeline: str | None, branch: str | None) -> bool:
        if not fnmatch.fnmatchcase(pipeline or "", self.pipeline):
            return False
        return self.branch is None or (branch is not None and fnmatch.fnmatchcase(branch, self.branch))


@dataclass(frozen=True)
class Config:
    token: str = env("SLACK_TOKEN", secret=True, help="bot token (xoxb-...) with chat:write")
    channel: str = env("SLACK_CHANNEL", default="#builds", help="channel name or ID when no route matches")
    states: tuple[str, ...] = env("SLACK_NOTIFY_STATES", default=("failed",), help="build states that post")
    routes: str = env("SLACK_ROUTES", default="", help="pipeline-glob[@branch-glob]=channel;...")
    api_url: str = env("SLACK_API_URL", default=DEFAULT_API_URL)
    timeout_seconds: float = env("SLACK_TIMEOUT_SECONDS", default=10.0)
    rate_limit_wait_seconds: float = env("SLACK_RATE_LIMIT_MAX_WAIT_SECONDS", default=5.0)

    def __post_init__(self) -> None:
        # A secret stored with `echo` ends in a newline, which urllib would refuse in a header.
        object.__setattr__(self, "token", self.token.strip())
        if not self.token:
            raise ValueError("SLACK_TOKEN is empty")
        check_channel(self.channel, "SLACK_CHANNEL")
        notify_states(self.states)
        parse_routes(self.routes)
        check_url(self.api_url, "SLACK_API_URL")
        if not 0 < self.timeout_seconds <= 60:
            raise ValueError("SLACK_TIMEOUT_SECONDS must be more than 0 and at most 60")
        if not 0 <= self.rate_limit_wait_seconds <= 30:
            raise ValueError("SLACK_RATE_LIMIT_MAX_WAIT_SECONDS must be between 0 and 30")

    def channel_for(self, pipeline: str | None, branch: str | None) -> str | None:
        """The first matching route's channel (None: muted), else SLACK_CHANNEL."""
        for route in parse_routes(self.routes):
            if route.matches(pipeline, branch):
                return route.channel
        return self.channel


_CHANNEL = re.compile(r"^(#[^\s#,;=@<>|&A-Z]{1,80}|[CGD][A-Z0-9]{6,20})$")


def check_channel(channel: str, variable: str) -> None:
    if not _CHANNEL.match(channel):
        raise ValueError(
            f"{variable}: {channel[:90]!r} is not a Slack channel: use #name (lower case, up to 80 characters) "
            "or a channel ID such as C0123456789"
        )


@cache
def parse_routes(text: str) -> tuple[Route, ...]:
    """``SLACK_ROUTES``: entries ``pipeline-glob[@branch-glob]=channel`` separated by ``;`` or newlines.

    Globs are shell-style (``*``, ``?``, ``[...]``) and case-sensitive; the pipeline glob
    matches the pipeline slug, the branch glob the build's branch. The first match wins.
    A channel of ``-`` mutes the builds it matches.
    """
    routes: list[Route] = []
    for number, raw in enumerate(re.split(r"[;\n]", text), start=1):
        entry = raw.strip()
        if not entry:
            continue
        pattern, equals, channel = entry.rpartition("=")
        pipeline, at, branch = pattern.strip().partition("@")
        pipeline, branch, channel = pipeline.strip(), branch.strip(), channel.strip()
        if not equals or not pipeline or (at and not branch) or not channel:
            raise ValueError(
                f"SLACK_ROUTES entry {number} ({entry[:100]!r}) is not pipeline-glob[@branch-glob]=#channel "
                "(for example deploy-*@main=#deploys; separate entries with ;)"
            )
        if channel != MUTED:
            check_channel(channel, f"SLACK_ROUTES entry {number}")
        routes.append(Route(pipeline, branch if at else None, None if channel == MUTED else channel))
    return tuple(routes)


# --- the function --------------------------------------------------------------------------


@functions_framework.cloud_event
@pubsub_handler(Config)
def notify_slack(event: BuildkiteEvent, config: Config) -> str:
    build = notified_build(event, notify_states(config.states))
    if isinstance(build, str):
        return build  # why not
    channel = config.channel_for(event.pipeline_slug, build.branch)
    if channel is None:
        where = f"{_short(event.pipeline_slug or '?', 80)}@{_short(build.branch or '?', 80)}"
        return f"skipped: {where} muted by SLACK_ROUTES"
    posted = post_message(config, slack_message(event, channel))
    return f"posted to {channel} (channel {posted.get('channel')}, ts {posted.get('ts')})"


def post_message(config: Config, message: dict[str, Any]) -> dict[str, Any]:
    """chat.postMessage; Slack's answers become the handler's error kinds."""
    from slack_sdk.errors import SlackApiError

    client = _client(config.token, config.api_url, config.timeout_seconds, config.rate_limit_wait_seconds)
    try:
        response = client.chat_postMessage(**message)
    except SlackApiError as err:
        _raise(err, message["channel"], config.api_url)
    except (OSError, HTTPException) as err:  # URLError, timeouts, resets: urllib under slack-sdk
        reason = getattr(err, "reason", None) or err
        raise TransientError(f"Slack unreachable: {type(err).__name__}: {str(reason)[:200]}") from None
    data = response.data if isinstance(response.data, dict) else {}
    return data


@cache
def _client(token: str, api_url: str, timeout: float, max_wait: float) -> WebClient:
    from slack_sdk import WebClient  # keep the import off the cold-start path

    base_url = api_url if api_url.endswith("/") else api_url + "/"
    client = WebClient(token=token, base_url=base_url, retry_handlers=[_rate_limit_handler(max_wait)])
    client.timeout = timeout  # type: ignore[assignment] # urllib takes float seconds; the stub says int
    return client


def _rate_limit_handler(max_wait: float) -> RetryHandler:
    """slack-sdk's RateLimitErrorRetryHandler, bounded: in-process waits add up to ``max_wait`` at most.

    A longer Retry-After is not waited out here: the 429 surfaces as ``TransientError`` with
    ``retry_after``, and the shared handler retries within its budget or nacks at once.
    """
    from slack_sdk.http_retry.builtin_handlers import RateLimitErrorRetryHandler

    if TYPE_CHECKING:
        from slack_sdk.http_retry import HttpRequest, HttpResponse, RetryState

    class BoundedRateLimitHandler(RateLimitErrorRetryHandler):
        def _can_retry(
            self,
            *,
            state: RetryState,
            request: HttpRequest,
            response: HttpResponse | None = None,
            error: Exception | None = None,
        ) -> bool:
            if response is None or response.status_code != 429:
                return False
            waited = float((state.custom_values or {}).get("waited", 0.0))
            return waited + (retry_after(response.headers) or 1.0) <= max_wait

        def prepare_for_next_attempt(
            self,
            *,
            state: RetryState,
            request: HttpRequest,
            response: HttpResponse | None = None,
            error: Exception | None = None,
        ) -> None:
            wait = retry_after(response.headers if response is not None else {}) or 1.0
            state.custom_values = state.custom_values or {}
            state.custom_values["waited"] = float(state.custom_values.get("waited", 0.0)) + wait
            state.next_attempt_requested = True
            time.sleep(wait)
            state.increment_current_attempt()

    return BoundedRateLimitHandler(max_retry_count=RATE_LIMIT_RETRIES)


def _raise(err: SlackApiError, channel: str, api_url: str) -> NoReturn:
    """Slack's refusal as the handler's error kinds: its error codes first, then the HTTP status."""
    response = err.response
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or f"HTTP {status}")[:100]
    if code in _FIXES:
        fix = _FIXES[code].format(channel=channel)
        needed = f" (needed: {data['needed']})" if code == "missing_scope" and data.get("needed") else ""
        raise ConfigError(f"Slack refused to post to {channel}: {code}: {fix}{needed}")
    transient = code in _SLACK_TRANSIENT
    if transient and status < 300:  # Slack may also say so with 200 and "ok": false
        raise TransientError(f"Slack chat.postMessage failed ({code})")
    if transient or status != 400:  # a 400 (or 200) with another code refuses the message itself
        raise_for(
            status,
            "Slack chat.postMessage",
            headers=response.headers,
            detail=f"({code})",
            transient={status} if transient else (),
            fix=f"is SLACK_API_URL={api_url} Slack's Web API?",
        )
    details = "; ".join(str(item) for item in data.get("errors") or [])[:500]
    raise SlackRejected(f"Slack rejected the message: {code}" + (f" ({details})" if details else ""))


# --- the message ---------------------------------------------------------------------------


def slack_message(event: BuildkiteEvent, channel: str) -> dict[str, Any]:
    """chat.postMessage arguments: Block Kit blocks plus a plain ``text`` fallback."""
    build = event.build
    if build is None:
        raise InvalidEvent("no build to describe")
    state = build.effective_state or "unknown"
    icon, verb = _LOOK.get(state, ("ℹ️", clean(state)[:40] or "finished"))
    pipeline = event.pipeline
    name = clean(pipeline.name if pipeline and pipeline.name else event.pipeline_slug) or "unknown pipeline"
    number = f"#{build.number}" if build.number is not None else "(no number)"
    build_url = safe_url(build.web_url)
    title = clean(build.message_title)
    branch = clean(build.branch)

    suffix = escape(f" {number} {verb}")
    header = f"{icon} " + fit(name, HEADER_LIMIT - units(f"{icon} {suffix}")) + suffix
    fields = [
        ("Pipeline", link(safe_url(pipeline.web_url if pipeline else None), name)),
        ("Build", link(build_url, number)),
        ("Branch", fit(branch, VALUE_LIMIT) if branch else None),
        ("Commit", fit(clean(build.short_commit), VALUE_LIMIT) or None),
        *_people(build.author.display if build.author else None, build.creator.display if build.creator else None),
        ("Duration", format_duration(build.duration_seconds)),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "fields": [_mrkdwn(f"*{label}*\n{value}") for label, value in fields if value][:10],
        },
    ]
    if title:
        blocks.append({"type": "section", "text": _mrkdwn(fit(title, SECTION_LIMIT))})
    if build_url:
        button = {"type": "plain_text", "text": "View Build", "emoji": False}
        blocks.append(
            {"type": "actions", "elements": [{"type": "button", "text": button, "url": build_url, "action_id": "view"}]}
        )
    context = _context(event)
    if context:
        blocks.append({"type": "context", "elements": [_mrkdwn(fit(context, VALUE_LIMIT))]})

    fallback = f"{icon} {name} {number} {verb}" + (f" on {branch}" if branch else "") + (f": {title}" if title else "")
    return {
        "channel": channel,
        "text": fit(fallback, FALLBACK_LIMIT),
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": False,
        "link_names": False,
        "parse": "none",
    }


def _people(author: str | None, creator: str | None) -> list[tuple[str, str | None]]:
    author, creator = clean(author), clean(creator)
    rows: list[tuple[str, str | None]] = [("Author", fit(author or creator, VALUE_LIMIT) or None)]
    if author and creator and author != creator:
        rows.append(("Triggered by", fit(creator, VALUE_LIMIT)))
    return rows


def _context(event: BuildkiteEvent) -> str:
    build = event.build
    parts = [clean(event.organization)]
    if build and build.pull_request:
        parts.append(f"pull request #{clean(build.pull_request.id)}")
    if build and build.source:
        parts.append(f"via {clean(build.source)}")
    if build and build.finished_at:
        parts.append(f"finished {build.finished_at:%Y-%m-%d %H:%M} UTC")
    return " · ".join(part for part in parts if part)


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: no auto-linking of URLs, channel names or mentions in what we did not mark up.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def _short(text: str, limit: int) -> str:
    return clean(text)[:limit]


# --- text: clean, escape, cut --------------------------------------------------------------


def escape(text: str) -> str:
    """Slack's three control characters (https://docs.slack.dev/messaging/formatting-message-text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def fit(text: str, limit: int, *, escaper: Callable[[str], str] = escape, ellipsis: str = "…") -> str:
    """``escaper(text)``, cut to ``limit`` units between characters: never inside an escape
    entity, a surrogate pair, or a character and its combining marks, emoji modifiers and
    zero-width-joined parts."""
    whole = escaper(text)
    if units(whole) <= limit:
        return whole
    budget, used, pieces = limit - units(ellipsis), 0, []
    for cluster in clusters(text):
        piece = escaper(cluster)
        size = units(piece)
        if used + size > budget:
            break
        pieces.append(piece)
        used += size
    return "".join(pieces).rstrip() + ellipsis


def link(url: str | None, text: str) -> str:
    """``<url|text>`` with ``text`` escaped and cut; the bare text when there is no URL."""
    label = fit(text, VALUE_LIMIT)
    if not url or units(escape(url)) + units(label) > FIELD_LIMIT - 100:  # a field holds 2,000: keep the words
        return label
    return f"<{escape(url)}|{label}>"


def safe_url(value: str | None) -> str | None:
    return _safe_url(value, URL_LIMIT)


def notify_states(values: tuple[str, ...], variable: str = "SLACK_NOTIFY_STATES") -> frozenset[str]:
    return _notify_states(values, variable)


def check_url(url: str, variable: str) -> None:
    _check_url(url, variable)
