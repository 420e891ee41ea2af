"""``pubsub_handler``: the ack/nack contract, in one decorator.

    @functions_framework.cloud_event
    @pubsub_handler(Config)
    def archive_build_data(event: BuildkiteEvent, config: Config) -> str | None: ...

For every delivery it parses the event, applies the function's own manifest filter (the
Pub/Sub emulator and Eventarc triggers do not filter), loads the config once per
instance, claims the event when the manifest declares ``state: [idempotency]`` (after the
function's own ``before_claim`` check, if it has one), runs the handler with bounded
retries, and logs one ``outcome`` line. The claim, the handler, their retries and every
Firestore call share one time budget (``RETRY_BUDGET_SECONDS``).
Returning normally acks (2xx); raising ``Nack`` answers 500 so Pub/Sub redelivers and, in
the end, dead-letters.

- ``Skip`` (the handler has nothing to do for this event) → "skipped", info, ack.
- ``InvalidEvent`` (from parsing or the handler) → warning, ack.
- ``TransientError`` → tenacity retries within the budget, then nack.
- ``ConfigError`` and anything unexpected → error, nack: the message waits in the dead-letter queue.
"""

from __future__ import annotations

import inspect
import logging
import math
import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import wraps
from pathlib import Path
from typing import Any, Generic, NamedTuple, TypeVar

from flask import has_request_context, request  # functions-framework has loaded Flask already
from werkzeug.exceptions import InternalServerError

from . import tracing
from .budget import budget, remaining
from .config import load_config, secret_values
from .errors import ACKED_OUTCOMES, ConfigError, InvalidEvent, Skip, TransientError
from .event import BuildkiteEvent
from .filters import Filter, parse_filter
from .framework import accept_pushes_without_data
from .log import configure_logging, log, log_context, redact, register_secrets
from .manifest import MANIFEST_NAME, Manifest, load_manifest
from .message import message_attributes
from .parse import parse_delivery

C = TypeVar("C")
Handler = Callable[[BuildkiteEvent, C], "str | None"]
Check = Callable[[BuildkiteEvent, C], object]  # what it returns is not used

MAX_ATTEMPTS = 4
_DEAD_LETTERED = " (the message waits in the dead-letter queue; fix and replay)"
FIRST_BACKOFF_SECONDS = 0.5
_LEVELS = {
    "done": logging.INFO,
    "skipped": logging.INFO,
    "duplicate": logging.INFO,
    "filtered": logging.INFO,
    "invalid": logging.WARNING,
}


class Nack(InternalServerError):
    """Answer 500 without a traceback: Pub/Sub will redeliver the message."""


class Retries(NamedTuple):
    """How long and how often a delivery may retry, read once per instance like the config.

    ``budget``: RETRY_BUDGET_SECONDS, by default half the function's timeout and at most 30 s:
    what the claim, the handler and their retries may spend before the delivery gives up (nack).
    ``attempts``: RETRY_MAX_ATTEMPTS, calls of the handler per delivery (default 4).
    """

    budget: float
    attempts: int

    @classmethod
    def from_env(cls, timeout_seconds: int) -> Retries:
        budget = os.environ.get("RETRY_BUDGET_SECONDS", "").strip()
        attempts = os.environ.get("RETRY_MAX_ATTEMPTS", "").strip()
        try:
            retries = cls(
                float(budget) if budget else min(30.0, timeout_seconds / 2),
                int(attempts) if attempts else MAX_ATTEMPTS,
            )
        except ValueError:
            retries = cls(math.nan, 0)
        if not (0 <= retries.budget < timeout_seconds and retries.attempts >= 1):
            raise ConfigError(
                f"RETRY_BUDGET_SECONDS must be a number from 0 to under the timeout ({timeout_seconds} s) and"
                " RETRY_MAX_ATTEMPTS a whole number of at least 1"
            )
        return retries


@dataclass
class _Instance(Generic[C]):
    """What one function instance computes once and reuses for every delivery."""

    manifest_path: Path
    config_class: type[C] | None
    before_claim: Check[C] | None = None
    _manifest: Manifest | None = None
    _filter: Filter | None = None
    _config: C | None = None
    _retries: Retries | None = None
    _store: Any = field(default=None, repr=False)
    project: str | None = field(default_factory=lambda: os.environ.get("GOOGLE_CLOUD_PROJECT"))

    @property
    def manifest(self) -> Manifest:
        if self._manifest is None:
            self._manifest = load_manifest(self.manifest_path)
            self._filter = parse_filter(self._manifest.filter)
        return self._manifest

    def accepts(self, attributes: dict[str, str] | Any) -> bool:
        self.manifest  # noqa: B018 - loads the filter
        assert self._filter is not None
        return self._filter.matches(attributes)

    def config(self) -> C | None:
        if self.config_class is None:
            return None
        if self._config is None:
            self._config = load_config(self.config_class)
            register_secrets(secret_values(self._config))
        return self._config

    def retries(self) -> Retries:
        if self._retries is None:
            self._retries = Retries.from_env(self.manifest.timeout_seconds)
        return self._retries

    def reset(self) -> None:
        """Forget what was computed (tests use it to act as a fresh instance)."""
        self._manifest, self._filter, self._config, self._retries, self._store = None, None, None, None, None

    def store(self) -> Any:
        if self._store is None:
            from .idempotency import IdempotencyStore  # Firestore only where it is used

            self._store = IdempotencyStore(scope=self.manifest.name)
        return self._store


def pubsub_handler(
    config: type[C] | None = None, *, manifest: Path | None = None, before_claim: Check[C] | None = None
) -> Callable[[Handler[C]], Callable[[Any], None]]:
    """Wrap ``handler(event, config)`` with the ack/nack contract (see the module doc).

    The manifest is the ``function.yaml`` beside the handler's file unless given.
    ``before_claim(event, config)`` runs before the event is claimed and may raise ``Skip`` or
    ``InvalidEvent``: an event the function turns away there costs no Firestore call.
    """

    def decorate(handler: Handler[C]) -> Callable[[Any], None]:
        path = manifest or Path(inspect.getfile(handler)).with_name(MANIFEST_NAME)
        instance: _Instance[C] = _Instance(path, config, before_claim)

        @wraps(handler)
        def entry(delivery: Any) -> None:
            configure_logging()
            started = time.perf_counter()
            fields = {"function": instance.manifest.name}
            detail: str | None
            event: BuildkiteEvent | None = None
            try:
                event = parse_delivery(delivery)
            except InvalidEvent as err:
                outcome, detail = "invalid", str(err)
            # The event's trace when the message carries one (our ingress, Google's clients), else the push request's.
            parent = tracing.from_attributes(event.attributes) if event else None
            if parent is None and has_request_context():
                parent = tracing.from_headers(request.headers)
            with tracing.start(fields["function"], parent, kind="consumer", project=instance.project) as span:
                if event is not None:
                    fields.update(event.log_fields())
                    span.set("buildkite.event_key", event.key_hash)
                    span.set("buildkite.event_type", event.event_type)
                    span.set("messaging.message.id", event.message_id)
                    with log_context(**fields):  # lines the handler itself logs carry the same identifiers
                        outcome, detail = _handle(instance, handler, event)
                line = f"{outcome}: {detail}" if detail else outcome
                elapsed_ms = round((time.perf_counter() - started) * 1000, 1)
                log(_LEVELS.get(outcome, logging.ERROR), line, outcome=outcome, duration_ms=elapsed_ms, **fields)
                span.set("buildkite.outcome", outcome)
                if outcome not in ACKED_OUTCOMES:
                    span.fail(line)
            if outcome not in ACKED_OUTCOMES:
                raise Nack(description=redact(line)[:500])

        entry.instance = instance  # type: ignore[attr-defined]
        accept_pushes_without_data(entry)  # functions-framework would answer 400 before calling us
        return entry

    return decorate


def _handle(instance: _Instance[C], handler: Handler[C], event: BuildkiteEvent) -> tuple[str, str | None]:
    attributes = event.attributes or message_attributes(event)  # a raw body has none: derive them
    if not instance.accepts(attributes):
        return "filtered", f"{event.event_type} does not match this function's filter"
    try:
        retries = instance.retries()
    except ConfigError as err:
        return "config_error", f"{err}{_DEAD_LETTERED}"
    with budget(retries.budget):  # one budget for the claim, the handler, their retries and the release
        return _run(instance, handler, event, retries)


def _run(
    instance: _Instance[C], handler: Handler[C], event: BuildkiteEvent, retries: Retries
) -> tuple[str, str | None]:
    claim = None
    try:
        config = instance.config()
        if instance.before_claim is not None:
            instance.before_claim(event, config)  # type: ignore[arg-type]
        if instance.manifest.idempotency:
            with tracing.span("claim"):
                claim = _with_retries(lambda: instance.store().claim(event.key), retries)
            if claim.state == "done":
                return "duplicate", "already handled this event"
        with tracing.span(getattr(handler, "__name__", "handler")):  # the integration call, retries included
            result = _with_retries(lambda: handler(event, config), retries)  # type: ignore[arg-type]
    except Skip as err:  # nothing happened: a replay after a config change may act
        _release(instance, claim)
        return "skipped", str(err)
    except InvalidEvent as err:
        _release(instance, claim, complete=True)
        return "invalid", str(err)
    except ConfigError as err:
        _release(instance, claim)
        return "config_error", f"{err}{_DEAD_LETTERED}"
    except TransientError as err:
        _release(instance, claim)
        return "retry", f"{err} (gave up for now; Pub/Sub will redeliver)"
    except Exception as err:  # a bug or an unforeseen API answer: keep the message
        _release(instance, claim)
        return "error", f"unexpected {type(err).__name__}: {redact(str(err))[:1000]}"
    # The side effect happened: ack even if recording it fails (a nack would repeat it).
    _release(instance, claim, complete=True)
    return "done", result


def _release(instance: _Instance[Any], claim: Any, *, complete: bool = False) -> None:
    """After a failed attempt: free the claim so a redelivery can run (or mark a hopeless one done)."""
    if claim is None:
        return
    try:
        (instance.store().complete if complete else instance.store().release)(claim)
    except Exception as err:  # the lease will expire on its own
        log(logging.WARNING, f"could not release idempotency claim: {type(err).__name__}")


def _with_retries(call: Callable[[], Any], retries: Retries) -> Any:
    """Call once; on ``TransientError``, retry with tenacity within what the budget has left."""
    try:
        return call()
    except TransientError as first:
        left = remaining() or 0.0
        pause = first.retry_after if first.retry_after is not None else FIRST_BACKOFF_SECONDS
        if pause >= left:
            raise
        log(logging.INFO, f"transient failure, retrying in {pause:g}s: {first}")
        time.sleep(pause)
    return _retrying(retries.attempts - 1)(call)


def _retrying(attempts: int) -> Callable[[Callable[[], Any]], Any]:
    from tenacity import (
        RetryCallState,
        Retrying,
        retry_if_exception_type,
        stop_after_attempt,
        stop_any,
        wait_exponential_jitter,
    )
    from tenacity.stop import stop_base

    deadline = time.monotonic() + (remaining() or 0.0)
    backoff = wait_exponential_jitter(multiplier=0.5, max=8, jitter=0.5)

    def hint(state: RetryCallState) -> float:
        err = state.outcome.exception() if state.outcome else None
        return getattr(err, "retry_after", None) or 0.0

    def wait(state: RetryCallState) -> float:
        return max(0.0, min(max(backoff(state), hint(state)), deadline - time.monotonic()))

    class OutOfBudget(stop_base):
        """Stop when the next wait (or the server's Retry-After) would pass the deadline."""

        def __call__(self, state: RetryCallState) -> bool:
            return time.monotonic() + hint(state) >= deadline

    def before_sleep(state: RetryCallState) -> None:
        err = state.outcome.exception() if state.outcome else None
        log(logging.INFO, f"transient failure, retrying: {err}", attempt=state.attempt_number + 1)

    retrying = Retrying(
        retry=retry_if_exception_type(TransientError),
        stop=stop_any(stop_after_attempt(max(attempts, 1)), OutOfBudget()),
        wait=wait,
        before_sleep=before_sleep,
        reraise=True,
    )
    return lambda call: retrying(call)
