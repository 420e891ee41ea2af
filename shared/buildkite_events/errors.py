"""The ways a delivery can end other than "done", and what Pub/Sub should do about each.

- ``Skip``: this function has nothing to do for the event (a state it does not notify, a
  muted pipeline) → log why and ack.
- ``InvalidEvent``: the message can never succeed → log the reason and ack.
- ``TransientError``: worth trying again → bounded in-process retries, then nack.
- ``ConfigError``: configuration or credentials are wrong → nack straight away, so
  the message waits in the dead-letter queue until an operator fixes it and replays.
"""

from __future__ import annotations

ACKED_OUTCOMES = frozenset({"done", "skipped", "duplicate", "filtered", "invalid"})
"""Logged outcomes that answer 2xx (Pub/Sub acks); every other outcome nacks."""


class FanoutError(Exception):
    """Base class. ``str(err)`` must be safe to log: never put a secret in it.

    ``status`` is the HTTP status behind the error, when an API answered one.
    """

    def __init__(self, message: str = "", *, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Skip(FanoutError):
    """Nothing to do for this event, by this function's own rules: ``str(err)`` says why."""


class InvalidEvent(FanoutError):
    """The delivery is malformed or not for this function; retrying cannot help."""


class TransientError(FanoutError):
    """A temporary failure (HTTP 429/5xx, timeout, connection reset, lease held)."""

    def __init__(self, message: str, *, retry_after: float | None = None, status: int | None = None) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class ConfigError(FanoutError):
    """Missing or invalid configuration, or credentials an API rejected."""
