"""The Teams Workflows webhook: one POST, and what its answers mean for the message.

The trigger ("When a Teams webhook request is received") answers 202 Accepted before the
workflow runs; what happens after that (the "Post card" step) this function cannot see.
"""

from __future__ import annotations

import re
from functools import cache
from typing import TYPE_CHECKING

from buildkite_events import TransientError
from buildkite_events.http import raise_for

if TYPE_CHECKING:
    import requests

SECRET = "the teams-notify-teams-webhook-url secret (TEAMS_WEBHOOK_URL)"  # noqa: S105 - a name, not a value
_SIGNATURE_FIX = (
    "the URL's signature is wrong or the workflow is turned off; copy the trigger's HTTP POST URL into "
    f"{SECRET} and turn the workflow on"
)
_FIXES: dict[int | range, str] = {
    range(300, 400): f"a redirect: {SECRET} must be the trigger's own URL",
    401: _SIGNATURE_FIX,
    403: _SIGNATURE_FIX,
    404: (
        "no workflow answers at TEAMS_WEBHOOK_URL: it was deleted or the URL is wrong; create a "
        f"'Post to a channel when a webhook request is received' workflow and store its URL in {SECRET}"
    ),
    400: (
        "the workflow rejected the message: if its trigger has a request body JSON schema, "
        "remove it or make it accept an Adaptive Card message"
    ),
}


def post_card(url: str, body: bytes, timeout: float) -> str:
    """POST the message to the workflow trigger; its answers become the handler's error kinds.
    ``url`` is a secret (its ``sig=`` is the credential): no message repeats it."""
    import requests

    try:
        response = _session().post(
            url,
            data=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=(min(5.0, timeout), timeout),
            allow_redirects=False,
        )
    except requests.Timeout:
        raise TransientError(f"the Teams webhook did not answer within {timeout:g}s") from None
    except requests.RequestException as err:  # connection refused or reset, DNS, TLS
        raise TransientError(f"the Teams webhook is unreachable ({type(err).__name__})") from None
    status = response.status_code
    raise_for(
        status,
        "the Teams webhook",
        headers=response.headers,
        detail=_error_code(response),
        fix=f"check {SECRET}",
        config=_FIXES,
    )
    run = response.headers.get("x-ms-workflow-run-id")
    reason = response.reason or "Accepted"
    return f"posted card to Teams ({status} {reason}, run {run[:60]})" if run else f"posted card to Teams ({status})"


@cache
def _session() -> requests.Session:
    import requests

    return requests.Session()


def _error_code(response: requests.Response) -> str:
    """Power Automate's ``{"error": {"code": ...}}`` (never its message: that may echo the URL)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return re.sub(r"[^A-Za-z0-9_.-]", "", str(code))[:80] if code else ""
