"""HTTP answers as the three error kinds, and the one ``Retry-After`` parser.

An integration states only its special cases; the rest follows the contract in errors.py::

    raise_for(
        response.status_code,
        "GitHub (creating a status on o/r)",
        headers=response.headers,
        invalid={422: "unknown commit, or 1,000 statuses on this context already"},
        config={404: "the token cannot see o/r: grant it access, or install the App there"},
    )

- 2xx returns.
- 408, 425, 429 and 5xx are ``TransientError``, carrying the server's ``Retry-After``.
- Anything else (a redirect, 401, 403, any other 4xx) is ``ConfigError``: a wrong URL,
  credentials or permissions, or a request only a person can fix. The message waits in the
  dead-letter queue rather than being dropped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Collection, Mapping
from datetime import UTC
from email.utils import parsedate_to_datetime
from typing import Any

from .errors import ConfigError, InvalidEvent, TransientError

__all__ = ["MAX_RETRY_AFTER", "TRANSIENT_STATUSES", "raise_for", "retry_after"]

MAX_RETRY_AFTER = 3600.0
"""A longer wait is cut to this: more than an hour never changes what the handler does."""

TRANSIENT_STATUSES = frozenset({408, 425, 429})
"""Besides every 5xx."""

Special = Mapping[int | range, str]


def retry_after(headers: Mapping[str, Any] | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header, or None when there is none worth using.

    The header may be in any case, a string or a one-item list (slack-sdk), in seconds or an
    HTTP-date. Negative, NaN, infinite or unparseable values are ignored; a date in the past
    means 0; anything over ``MAX_RETRY_AFTER`` is cut to it.
    """
    value = _header(headers, "retry-after")
    if value is None:
        return None
    text = str(value[0] if isinstance(value, list | tuple) and value else value).strip()
    seconds: float | None
    try:
        seconds = float(text)
    except ValueError:
        seconds = _seconds_until(text, time.time() if now is None else now)
    if seconds is None or not math.isfinite(seconds) or seconds < 0:
        return None
    return min(seconds, MAX_RETRY_AFTER)


def raise_for(
    status: int,
    what: str,
    *,
    headers: Mapping[str, Any] | None = None,
    detail: str = "",
    fix: str = "",
    invalid: Special | None = None,
    config: Special | None = None,
    transient: Collection[int] = (),
) -> None:
    """Return for a 2xx answer; otherwise raise the error kind it means.

    ``what`` names the call ("the Teams webhook"); ``detail`` is safe text from the answer (an
    error code, never a body that may echo a secret). In this order: transient answers (5xx,
    408, 425, 429, and the statuses in ``transient``) raise ``TransientError``; ``config`` maps
    statuses (or ranges of them) to a fix (``ConfigError``); ``invalid`` maps them to why the
    event can never succeed (``InvalidEvent``, acked); any other refusal is a ``ConfigError``
    ending in ``fix``.
    """
    if 200 <= status < 300:
        return
    answered = f"{what} answered {status}" + (f" {detail}" if detail else "")
    if status >= 500 or status in TRANSIENT_STATUSES or status in transient:
        wait = retry_after(headers)
        hint = f" (Retry-After {wait:g}s)" if wait is not None else ""
        raise TransientError(answered + hint, retry_after=wait, status=status)
    reason = _lookup(config, status)
    if reason is not None:
        raise ConfigError(f"{answered}: {reason}", status=status)
    reason = _lookup(invalid, status)
    if reason is not None:
        raise InvalidEvent(f"{answered}: {reason}", status=status)
    raise ConfigError(f"{answered}: {fix}" if fix else answered, status=status)


def json_object(response: Any) -> dict[str, Any]:
    """A response's JSON body when it is an object; ``{}`` for anything else (an HTML error page
    from a proxy, a list, no body), so that reading a field of an odd answer never raises."""
    try:
        value = response.json()
    except ValueError:
        return {}
    return value if isinstance(value, dict) else {}


def _lookup(special: Special | None, status: int) -> str | None:
    for key, reason in (special or {}).items():
        if status == key or (isinstance(key, range) and status in key):
            return reason
    return None


def _header(headers: Mapping[str, Any] | None, name: str) -> Any:
    for key, value in (headers or {}).items():
        if str(key).lower() == name:
            return value
    return None


def _seconds_until(text: str, now: float) -> float | None:
    try:
        when = parsedate_to_datetime(text)
    except (TypeError, ValueError, IndexError, OverflowError):
        return None
    if when.tzinfo is None:  # "-0000": no zone given; HTTP dates are GMT
        when = when.replace(tzinfo=UTC)
    return max(0.0, when.timestamp() - now)
