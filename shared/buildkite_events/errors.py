"""The three ways a delivery can fail, and what Pub/Sub should do about each.

- ``InvalidEvent``: the message can never succeed → log the reason and ack.
- ``TransientError``: worth trying again → bounded in-process retries, then nack.
- ``ConfigError``: configuration or credentials are wrong → nack straight away, so
  the message waits in the dead-letter queue until an operator fixes it and replays.
"""

from __future__ import annotations

ACKED_OUTCOMES = frozenset({"done", "duplicate", "filtered", "invalid"})
"""Logged outcomes that answer 2xx (Pub/Sub acks); every other outcome nacks."""


class FanoutError(Exception):
    """Base class. ``str(err)`` must be safe to log: never put a secret in it."""


class InvalidEvent(FanoutError):
    """The delivery is malformed or not for this function; retrying cannot help."""


class TransientError(FanoutError):
    """A temporary failure (HTTP 429/5xx, timeout, connection reset, lease held)."""

    def __init__(self, message: str, *, retry_after: float | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after


class ConfigError(FanoutError):
    """Missing or invalid configuration, or credentials an API rejected."""
