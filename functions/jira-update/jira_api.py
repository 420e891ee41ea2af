"""The jira library, made to answer in the handler's error kinds, with bounded retries of its own;
and our comments: posted once with a marker property, found again by property or text."""

from __future__ import annotations

import json
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from buildkite_events import InvalidEvent, TransientError
from buildkite_events.http import raise_for
from buildkite_events.log import log

if TYPE_CHECKING:
    from jira import JIRA

T = TypeVar("T")

PROPERTY_KEY = "buildkite-fanout"  # comment property: {"marker": <build_marker>}
PAGE_SIZE = 100
MAX_COMMENT_PAGES = 100  # 10,000 comments: far beyond any issue a build should comment on


def connect(server: str, user: str, token: str, max_retries: int, timeout: float) -> JIRA:
    """A client; ``get_server_info=False``: building it makes no request."""
    from jira import JIRA

    auth: dict[str, Any] = (
        {"basic_auth": (user, token)} if user else {"token_auth": token}
    )  # Cloud: email + API token; Data Center: a personal access token (bearer)
    client = JIRA(
        server=server.rstrip("/"),
        get_server_info=False,
        max_retries=max_retries,
        timeout=(min(5.0, timeout), timeout),
        **auth,
    )
    # The library sleeps up to 2x Retry-After (60 s by default) between its retries: keep each
    # wait short, and leave longer waits to Pub/Sub's backoff.
    client._session.max_retry_delay = 5
    return client


def call(function: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run one jira-library call; its failures become the handler's error kinds: 404 and other
    refusals of this one request are ``InvalidEvent`` (that issue is skipped), 401/403
    ``ConfigError`` (``status`` says which), 408/409/429/5xx and no answer ``TransientError``."""
    import requests
    from jira.exceptions import JIRAError

    try:
        return function(*args, **kwargs)
    except JIRAError as err:
        status, text = err.status_code, (err.text or "")[:300]
        if status is None:
            raise TransientError(f"Jira did not answer: {text}") from None
        response = getattr(err, "response", None)
        raise_for(
            status,
            "Jira",
            headers=response.headers if response is not None else None,
            detail=f"({text})" if text else "",
            transient={409},
            config={401: "check JIRA_USER and JIRA_TOKEN", 403: "these credentials may not do this"},
            invalid={404: "no such issue, or not one these credentials can see", range(400, 500): "refused"},
        )
        raise  # pragma: no cover - raise_for raised for every status JIRAError carries
    except requests.RequestException as err:
        raise TransientError(f"could not reach Jira: {type(err).__name__}") from None


def post_comment(jira: JIRA, key: str, body: str, marker: str) -> None:
    """One POST, sent once, carrying the marker as a comment property.

    The jira library re-sends a POST after a dropped connection; if the first one
    had reached Jira, that would comment twice. Here a failure goes back to the handler,
    whose retry looks for the marker again before commenting.
    """
    import requests
    from jira.resilientsession import raise_on_error

    payload = {"body": body, "properties": [{"key": PROPERTY_KEY, "value": {"marker": marker}}]}
    session = jira._session
    url = jira._get_url(f"issue/{key}/comment")
    raise_on_error(requests.Session.request(session, "POST", url, data=json.dumps(payload), timeout=session.timeout))


def has_marker(jira: JIRA, key: str, marker: str) -> bool:
    """Search the issue's comments, newest first, page by page, for ``marker``: as our comment
    property, then as text (comments from before properties; Data Center keeps text verbatim)."""
    start = 0
    for _ in range(MAX_COMMENT_PAGES):
        params = {"startAt": start, "maxResults": PAGE_SIZE, "orderBy": "-created"}
        # _get_json keeps the page's "total" that jira.comments() drops.
        page = call(jira._get_json, f"issue/{key}/comment", params=params)
        comments = [c for c in (page.get("comments") or []) if isinstance(c, dict)] if isinstance(page, dict) else []
        if _has_property(jira, comments, marker) or any(marker in _text(c.get("body")) for c in comments):
            return True
        start += len(comments)
        total = page.get("total") if isinstance(page, dict) else None
        if not comments or (isinstance(total, int) and start >= total):
            return False
    log(logging.WARNING, f"{key} has over {start} comments; stopped looking for an earlier one from this build")
    return False


_without_comment_list: set[str] = set()  # servers that have no POST comment/list (Jira Data Center)


def _has_property(jira: JIRA, comments: list[dict[str, Any]], marker: str) -> bool:
    """Whether one of ``comments`` carries our property for ``marker`` (Jira Cloud: comment/list?expand=properties)."""
    from jira.utils import json_loads

    ids, server = [int(c["id"]) for c in comments if str(c.get("id", "")).isdigit()], str(jira.server_url)
    if not ids or server in _without_comment_list:
        return False
    url = jira._get_url("comment/list")  # a read: the library may retry it freely
    try:
        found = call(lambda: json_loads(jira._session.post(url, params={"expand": "properties"}, json={"ids": ids})))
    except InvalidEvent as err:  # 404 or another refusal: a server without comment/list
        _without_comment_list.add(server)
        log(logging.INFO, f"Jira at {server} cannot list comment properties ({err}); matching the text marker only")
        return False
    values = [c for c in (found.get("values") or []) if isinstance(c, dict)] if isinstance(found, dict) else []
    ours = [
        p.get("value")
        for c in values
        for p in c.get("properties") or []
        if isinstance(p, dict) and p.get("key") == PROPERTY_KEY
    ]
    return any(isinstance(value, dict) and value.get("marker") == marker for value in ours)


def _text(body: Any) -> str:
    """A body's text without backslash escapes (a renderer may add or drop them); a document-format
    body as JSON (the marker is in one of its text nodes)."""
    return (body if isinstance(body, str) else json.dumps(body)).replace("\\", "")
