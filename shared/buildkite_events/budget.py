"""The time a delivery has left. ``pubsub_handler`` sets it for each delivery; whatever calls
out (Firestore, retries) bounds itself by it, so the outcome is logged and the message nacked
well inside the function's timeout, whatever a dependency does."""

from __future__ import annotations

import contextvars
import time

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("buildkite_fanout_deadline", default=None)


class budget:
    """``with budget(seconds):`` gives the code inside ``seconds`` from now (a monotonic deadline,
    per context). A class rather than @contextmanager: it runs for every delivery."""

    __slots__ = ("seconds", "token")

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def __enter__(self) -> None:
        self.token = _deadline.set(time.monotonic() + max(0.0, self.seconds))

    def __exit__(self, *exc: object) -> None:
        _deadline.reset(self.token)


def remaining() -> float | None:
    """Seconds left (0 or less once spent), or None outside any budget."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()
