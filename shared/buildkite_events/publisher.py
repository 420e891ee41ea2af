"""Publish one message through Pub/Sub's REST API.

The ingress publishes one message per webhook and must start fast: the gRPC client
library costs ~0.6 s of imports on every cold start, the REST call needs only the
standard library (plus google-auth for a token, outside the emulator). One keep-alive
connection per thread; bounded retries on 429/5xx and connection errors.
"""

from __future__ import annotations

import base64
import http.client
import json
import os
import threading
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from .errors import ConfigError, TransientError

DEFAULT_ENDPOINT = "https://pubsub.googleapis.com"
_RETRYABLE = {408, 429, 500, 502, 503, 504}
_SCOPE = "https://www.googleapis.com/auth/pubsub"


class Publisher:
    def __init__(self, project: str, topic: str, *, timeout: float = 10.0, attempts: int = 3) -> None:
        emulator = os.environ.get("PUBSUB_EMULATOR_HOST")
        self.endpoint = f"http://{emulator}" if emulator else DEFAULT_ENDPOINT
        self.topic_path = f"projects/{project}/topics/{topic}"
        self.timeout = timeout
        self.attempts = attempts
        self._credentials: Any = None
        self._needs_auth = not emulator
        self._local = threading.local()

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        """Return the message id once Pub/Sub has stored the message."""
        message: dict[str, Any] = {"data": base64.b64encode(data).decode("ascii")}
        if attributes:
            message["attributes"] = dict(attributes)
        body = json.dumps({"messages": [message]}).encode()
        delay = 0.2
        for attempt in range(1, self.attempts + 1):
            try:
                status, payload = self._post(f"/v1/{self.topic_path}:publish", body)
            except (OSError, http.client.HTTPException) as err:
                self._reset()
                failure: Exception = TransientError(f"Pub/Sub unreachable: {type(err).__name__}")
            else:
                if status == 200:
                    return str(json.loads(payload)["messageIds"][0])
                reason = _error_reason(payload)
                if status in (401, 403, 404):
                    raise ConfigError(f"Pub/Sub refused publishing to {self.topic_path}: HTTP {status} {reason}")
                failure = TransientError(f"Pub/Sub answered HTTP {status} {reason}")
                if status not in _RETRYABLE:
                    raise failure
            if attempt == self.attempts:
                raise failure
            time.sleep(delay)
            delay *= 3
        raise AssertionError("unreachable")

    def _post(self, path: str, body: bytes) -> tuple[int, bytes]:
        headers = {"Content-Type": "application/json"}
        if self._needs_auth:
            headers["Authorization"] = f"Bearer {self._token()}"
        conn = self._connection()
        conn.request("POST", path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read()

    def _connection(self) -> http.client.HTTPConnection:
        conn = getattr(self._local, "conn", None)
        if conn is None:
            parts = urlsplit(self.endpoint)
            cls = http.client.HTTPSConnection if parts.scheme == "https" else http.client.HTTPConnection
            conn = cls(parts.netloc, timeout=self.timeout)
            self._local.conn = conn
        return conn

    def _reset(self) -> None:
        conn = getattr(self._local, "conn", None)
        if conn is not None:
            conn.close()
            self._local.conn = None

    def _token(self) -> str:
        import google.auth  # production only; the emulator needs no credentials
        import google.auth.transport.requests

        if self._credentials is None:
            self._credentials, _ = google.auth.default(scopes=[_SCOPE])
        if not self._credentials.valid:
            self._credentials.refresh(google.auth.transport.requests.Request())
        return str(self._credentials.token)


def _error_reason(payload: bytes) -> str:
    try:
        return str(json.loads(payload)["error"]["message"])[:200]
    except (ValueError, KeyError, TypeError):
        return payload[:200].decode("utf-8", "replace")
