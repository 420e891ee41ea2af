"""The Slack Web API call: chat.postMessage with bounded rate-limit waits, and Slack's error
codes as the handler's error kinds, each with what an operator should do about it."""

from __future__ import annotations

import re
import time
from functools import cache
from http.client import HTTPException
from typing import TYPE_CHECKING, Any, NoReturn

from buildkite_events import ConfigError, TransientError
from buildkite_events.http import raise_for, retry_after

if TYPE_CHECKING:
    from slack_sdk import WebClient
    from slack_sdk.errors import SlackApiError
    from slack_sdk.http_retry import RetryHandler

_CHANNEL = re.compile(r"^(#[^\s#,;=@<>|&A-Z]{1,80}|[CGD][A-Z0-9]{6,20})$")
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


def check_channel(channel: str, variable: str) -> None:
    """A channel name Slack accepts (#name, lower case) or a channel ID."""
    if not _CHANNEL.match(channel):
        raise ValueError(
            f"{variable}: {channel[:90]!r} is not a Slack channel: use #name (lower case, up to 80 characters) "
            "or a channel ID such as C0123456789"
        )


class SlackRejected(Exception):
    """Slack refused the message itself (invalid_blocks, msg_too_long...): a bug here, kept in the DLQ."""


def post_message(
    message: dict[str, Any], *, token: str, api_url: str, timeout: float, max_wait: float
) -> dict[str, Any]:
    """chat.postMessage; Slack's answers become the handler's error kinds."""
    from slack_sdk.errors import SlackApiError

    client = _client(token, api_url, timeout, max_wait)
    try:
        response = client.chat_postMessage(**message)
    except SlackApiError as err:
        _raise(err, message["channel"], api_url)
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
