"""Publish one message through Pub/Sub's REST API, retrying until a deadline.

The ingress publishes one message per webhook and must start fast: the gRPC client
library costs ~0.6 s of imports on every cold start, the REST call needs only the
standard library (plus google-auth for a token, outside the emulator). One keep-alive
connection per thread.

Buildkite does not retry a webhook, so ``publish`` keeps trying (backoff 0.2 s doubling
to 2 s, jittered) until ``deadline_seconds`` have passed, and each attempt's timeouts are
bounded by what is left. It returns only once Pub/Sub answered with a message id.

Duplicates: an attempt whose request was sent but whose answer never came may still have
been stored, and the next attempt stores the event again. Attempts are therefore few and
long: each may wait for its answer up to half the time left (at least
``MIN_ATTEMPT_SECONDS``), so a slow Pub/Sub gets time to answer rather than a second
copy. When a copy does happen it carries the same data, hence the same ``event_key``,
and consumers dedupe on that.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import random
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, TransientError

DEFAULT_ENDPOINT = "https://pubsub.googleapis.com"
DEFAULT_DEADLINE_SECONDS = 20.0
MIN_ATTEMPT_SECONDS = 2.0  # an attempt never waits less for its answer (unless less is left)
CONNECT_SECONDS = 5.0  # opening a connection: nothing can have been stored yet, so fail fast
FIRST_BACKOFF_SECONDS = 0.2
MAX_BACKOFF_SECONDS = 2.0
MIN_LAST_TRY_SECONDS = 0.5  # not worth starting an attempt with less than this left
_RETRYABLE = {408, 429, 500, 502, 503, 504}
_SCOPE = "https://www.googleapis.com/auth/pubsub"


class _Retry(TransientError):
    """This attempt failed in a way another attempt may not."""


class Publisher:
    def __init__(self, project: str, topic: str, *, deadline_seconds: float = DEFAULT_DEADLINE_SECONDS) -> None:
        emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
        self.endpoint = f"http://{emulator}" if emulator else DEFAULT_ENDPOINT
        self.topic_path = f"projects/{project}/topics/{topic}"
        self.deadline_seconds = deadline_seconds
        self._credentials: Any = None
        self._auth_transport: Any = None
        self._needs_auth = not emulator
        self._local = threading.local()

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Return the message id once Pub/Sub has stored the message.

        Raises ``TransientError`` when the deadline passed without success, ``ConfigError``
        at once when Pub/Sub or Google's auth refuse us (retrying cannot help).
        """
        message: dict[str, Any] = {"data": base64.b64encode(data).decode("ascii")}
        if attributes:
            message["attributes"] = dict(attributes)
        body = json.dumps({"messages": [message]}).encode()
        started = time.monotonic()
        give_up = started + self.deadline_seconds
        backoff = FIRST_BACKOFF_SECONDS
        attempt = 0
        while True:
            attempt += 1
            left = give_up - time.monotonic()
            try:
                return self._attempt(body, timeout=min(left, max(left / 2, MIN_ATTEMPT_SECONDS)))
            except _Retry as err:
                failure = err
            pause = backoff * random.uniform(0.5, 1.0)  # noqa: S311 - jitter, not security
            backoff = min(backoff * 2, MAX_BACKOFF_SECONDS)
            if give_up - time.monotonic() - pause < MIN_LAST_TRY_SECONDS:
                took = time.monotonic() - started
                raise TransientError(f"{failure} (gave up after {attempt} attempts in {took:.1f}s)") from None
            time.sleep(pause)

    def _attempt(self, body: bytes, *, timeout: float) -> str:
        """One POST; ``_Retry`` for what another attempt may fix."""
        headers = {"Content-Type": "application/json"}
        if self._needs_auth:
            headers["Authorization"] = f"Bearer {self._token(timeout)}"
        try:
            conn = self._connection(timeout)
            conn.request("POST", f"/v1/{self.topic_path}:publish", body=body, headers=headers)
            response = conn.getresponse()
            status, payload = response.status, response.read()
        except (OSError, http.client.HTTPException) as err:
            self._reset()
            raise _Retry(f"Pub/Sub unreachable: {type(err).__name__}") from None
        if status == 200:
            try:
                return str(json.loads(payload)["messageIds"][0])
            except (ValueError, KeyError, IndexError, TypeError):  # a proxy's page, not Pub/Sub's answer
                raise _Retry(f"Pub/Sub answered 200 without a message id: {_excerpt(payload)}") from None
        reason = _error_reason(payload)
        if status in (401, 403, 404):
            raise ConfigError(f"Pub/Sub refused publishing to {self.topic_path}: HTTP {status} {reason}")
        if status in _RETRYABLE:
            raise _Retry(f"Pub/Sub answered HTTP {status} {reason}")
        raise TransientError(f"Pub/Sub answered HTTP {status} {reason}")

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        conn: http.client.HTTPConnection | None = getattr(self._local, "conn", None)
        if conn is None:
            parts = urlsplit(self.endpoint)
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(parts.netloc, timeout=min(timeout, CONNECT_SECONDS))
            conn.connect()
            self._local.conn = conn
        if conn.sock is not None:
            conn.sock.settimeout(timeout)  # waiting for the answer: this attempt's share of the deadline
        return conn

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _token(self, timeout: float) -> str:
        """An access token (production only; the emulator needs none), refreshed within ``timeout``."""
        import google.auth
        import google.auth.transport.requests
        from google.auth import exceptions

        try:
            if self._credentials is None:
                self._credentials, _ = google.auth.default(scopes=[_SCOPE])
            if not self._credentials.valid:
                if self._auth_transport is None:
                    self._auth_transport = google.auth.transport.requests.Request()
                self._credentials.refresh(_Bounded(self._auth_transport, timeout))
        except exceptions.DefaultCredentialsError as err:
            raise ConfigError(f"no usable Google credentials: {type(err).__name__}: {_first_line(err)}") from None
        except exceptions.RefreshError as err:
            message = f"could not refresh the Google access token: {_first_line(err)}"
            raise (_Retry(message) if err.retryable else ConfigError(message)) from None
        except (exceptions.GoogleAuthError, OSError) as err:  # transport errors, timeouts
            raise _Retry(f"could not get a Google access token: {type(err).__name__}") from None
        return str(self._credentials.token)


class _Bounded:
    """A google-auth transport whose requests never wait longer than ``limit`` seconds."""

    def __init__(self, transport: Any, limit: float) -> None:
        self.transport, self.limit = transport, max(limit, 0.1)

    def __call__(self, url: str, method: str = "GET", body: Any = None, headers: Any = None, **kwargs: Any) -> Any:
        timeout = kwargs.pop("timeout", None)
        kwargs["timeout"] = min(timeout, self.limit) if isinstance(timeout, int | float) else self.limit
        return self.transport(url, method=method, body=body, headers=headers, **kwargs)


def _first_line(err: Exception) -> str:
    return (str(err).strip().splitlines() or [""])[0][:200]


def _excerpt(payload: bytes) -> str:
    return repr(payload[:80].decode("utf-8", "replace"))


def _error_reason(payload: bytes) -> str:
    try:
        return str(json.loads(payload)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return payload[:200].decode("utf-8", "replace")
