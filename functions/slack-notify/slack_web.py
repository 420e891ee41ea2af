"""The Slack Web API calls (chat.postMessage, chat.update, users.lookupByEmail,
conversations.history) with bounded rate-limit waits, and Slack's error codes as the
handler's error kinds, each with what an operator should do about it."""

from __future__ import annotations

import re
import time
from collections.abc import Callable
from dataclasses import dataclass
from functools import cache
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, NoReturn

from buildkite_events import ConfigError, InvalidEvent, TransientError
from buildkite_events.http import raise_for, retry_after

if TYPE_CHECKING:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    from slack_sdk.http_retry import RetryHandler

_CHANNEL = re.compile(r"^(#[^\s#,;=@<>|&A-Z]{1,80}|[CGD][A-Z0-9]{6,20})$")
_CHANNEL_ID = re.compile(r"^[CGD][A-Z0-9]{6,20}$")
_USER = re.compile(r"^[UW][A-Z0-9]{2,20}$")
RATE_LIMIT_RETRIES = 2  # 429s the client waits out in process (within SLACK_RATE_LIMIT_MAX_WAIT_SECONDS)

# Slack error codes that only an operator can fix, and what to tell them.
_TOKEN_FIX = "store the app's Bot User OAuth Token (xoxb-…) in the slack-notify-slack-token secret (SLACK_TOKEN)"  # noqa: S105
_ROUTE_FIX = "or send these builds elsewhere with SLACK_CHANNEL / SLACK_ROUTES"
_FIXES = {
    "invalid_auth": f"SLACK_TOKEN is not a valid token: {_TOKEN_FIX}",
    "not_authed": f"no token reached Slack: {_TOKEN_FIX}",
    "account_inactive": f"the token's user or app is deactivated: reinstall the app and {_TOKEN_FIX}",
    "token_revoked": f"the token was revoked: reinstall the app and {_TOKEN_FIX}",
    "token_expired": f"the token expired: {_TOKEN_FIX}",
    "missing_scope": "the token lacks the {needed} scope: add it under OAuth & Permissions and reinstall the app",
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


def is_channel_id(channel: str) -> bool:
    return bool(_CHANNEL_ID.match(channel))


def is_user_id(user: str) -> bool:
    return bool(_USER.match(user))


def check_channel(channel: str, variable: str) -> None:
    """A channel name Slack accepts (#name, lower case) or a channel ID."""
    if not _CHANNEL.match(channel):
        raise ValueError(
            f"{variable}: {channel[:90]!r} is not a Slack channel: use #name (lower case, up to 80 characters) "
            "or a channel ID such as C0123456789"
        )


class SlackRejected(Exception):
    """Slack refused the message itself (invalid_blocks, msg_too_long...): a bug here, kept in the DLQ."""


class MessageGone(InvalidEvent):
    """The build's message can no longer be updated (deleted, or not ours): acked, not posted again."""


class NotFound(Exception):
    """users.lookupByEmail found no active user with that email."""


_GONE = frozenset({"message_not_found", "cant_update_message", "edit_window_closed"})
_ACTIONS = {
    "chat.postMessage": "post to {channel}",
    "chat.update": "update the build's message in {channel}",
    "users.lookupByEmail": "look up a user by email",
    "conversations.history": "read the history of {channel}",
}


@dataclass(frozen=True)
class Slack:
    """The Web API calls slack-notify makes (one client per token and URL, per instance)."""

    token: str
    api_url: str
    timeout: float
    max_wait: float

    def post(self, message: dict[str, Any]) -> dict[str, Any]:
        """chat.postMessage; Slack's answer (``channel`` is the channel's ID, ``ts`` the message's)."""
        return self._call("chat.postMessage", message["channel"], lambda c: c.chat_postMessage(**message))

    def update(self, channel: str, ts: str, message: dict[str, Any]) -> dict[str, Any]:
        """chat.update of the message at ``ts`` in ``channel`` (an ID); ``MessageGone`` when it cannot be."""
        content = {k: v for k, v in message.items() if k not in ("channel", "unfurl_links", "unfurl_media")}
        return self._call("chat.update", channel, lambda c: c.chat_update(channel=channel, ts=ts, **content))

    def lookup(self, email: str) -> str | None:
        """users.lookupByEmail: the person's user ID; None when no active user has that email."""
        try:
            data = self._call("users.lookupByEmail", "", lambda c: c.users_lookupByEmail(email=email))
        except NotFound:
            return None
        user = data.get("user")
        found = user.get("id") if isinstance(user, dict) else None
        return found if isinstance(found, str) and is_user_id(found) else None

    def history(self, channel: str, oldest: float) -> list[dict[str, Any]]:
        """conversations.history of ``channel`` (an ID) since ``oldest`` (epoch seconds), with metadata."""

        def call(client: WebClient) -> Any:
            return client.conversations_history(
                channel=channel, oldest=f"{oldest:.6f}", limit=200, include_all_metadata=True
            )

        messages = self._call("conversations.history", channel, call).get("messages")
        return [m for m in messages if isinstance(m, dict)] if isinstance(messages, list) else []

    def _call(self, method: str, channel: str, call: Callable[[WebClient], Any]) -> dict[str, Any]:
        from slack_sdk.errors import SlackApiError

        try:
            response = call(_client(self.token, self.api_url, self.timeout, self.max_wait))
        except SlackApiError as err:
            _raise(err, method, channel, self.api_url)
        except (OSError, HTTPException) as err:  # URLError, timeouts, resets: urllib under slack-sdk
            reason = getattr(err, "reason", None) or err
            raise TransientError(f"Slack unreachable: {type(err).__name__}: {str(reason)[:200]}") from None
        return response.data if isinstance(response.data, dict) else {}


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


def _raise(err: SlackApiError, method: str, channel: str, api_url: str) -> NoReturn:
    """Slack's refusal as the handler's error kinds: its error codes first, then the HTTP status."""
    response = err.response
    status = int(response.status_code)
    data = response.data if isinstance(response.data, dict) else {}
    code = str(data.get("error") or f"HTTP {status}")[:100]
    if method == "users.lookupByEmail" and code == "users_not_found":
        raise NotFound(code)
    if method == "chat.update" and code in _GONE:
        raise MessageGone(f"the build's message in {channel} can no longer be updated: {code}")
    if code in _FIXES:
        needed = str(data.get("needed") or "")[:100]
        fix = _FIXES[code].format(channel=channel, needed=needed or "required")
        action = _ACTIONS[method].format(channel=channel)
        raise ConfigError(f"Slack refused to {action}: {code}: {fix}" + (f" (needed: {needed})" if needed else ""))
    transient = code in _SLACK_TRANSIENT
    if transient and status < 300:  # Slack may also say so with 200 and "ok": false
        raise TransientError(f"Slack {method} failed ({code})")
    if transient or status != 400:  # a 400 (or 200) with another code refuses the message itself
        raise_for(
            status,
            f"Slack {method}",
            headers=response.headers,
            detail=f"({code})",
            transient={status} if transient else (),
            fix=f"is SLACK_API_URL={api_url} Slack's Web API?",
        )
    details = "; ".join(str(item) for item in data.get("errors") or [])[:500]
    raise SlackRejected(f"Slack rejected the message ({method}): {code}" + (f" ({details})" if details else ""))
