"""The jira library, made to answer in the handler's error kinds, with bounded retries of its own."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Any, TypeVar

from buildkite_events import TransientError
from buildkite_events.http import raise_for

if TYPE_CHECKING:
    from jira import JIRA

T = TypeVar("T")


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
