"""The time a delivery has left. ``pubsub_handler`` sets it for each delivery; whatever calls
out (Firestore, retries) bounds itself by it, so the outcome is logged and the message nacked
well inside the function's timeout, whatever a dependency does."""

from __future__ import annotations

import contextlib
import contextvars
import time
from collections.abc import Iterator

_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar("buildkite_fanout_deadline", default=None)


@contextlib.contextmanager
def budget(seconds: float) -> Iterator[None]:
    """Give the code inside ``seconds`` from now (a monotonic deadline, per context)."""
    token = _deadline.set(time.monotonic() + max(0.0, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


def remaining() -> float | None:
    """Seconds left (0 or less once spent), or None outside any budget."""
    deadline = _deadline.get()
    return None if deadline is None else deadline - time.monotonic()
