"""Where functions-framework answers before our code runs, and how we step in.

A Pub/Sub push whose message has attributes but no data is valid Pub/Sub (publishers may
send attributes only; the push body then has no ``message.data``). functions-framework
converts a raw push into a CloudEvent only when ``message.data`` is there
(``event_conversion._is_raw_pubsub_payload``); otherwise both conversions fail and it
aborts with 400 before the function is called. Pub/Sub takes the 400 as a failure and
redelivers the message until it dead-letters. We register a 400 handler on the app that
hands such a push to the function's entry point, which acks it as invalid with a logged
reason like any other message that can never succeed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import flask
from werkzeug.exceptions import HTTPException

_ENTRIES = "buildkite_events.entries"


def accept_pushes_without_data(entry: Callable[[Any], None]) -> None:
    """Route pushes without data to ``entry`` on the app that is loading it (no-op outside one)."""
    if not flask.has_app_context():  # imported directly (tests, tools): no app to hook into
        return
    app = flask.current_app
    entries = app.extensions.setdefault(_ENTRIES, {})
    if not entries:
        app.register_error_handler(400, _bad_request)
    entries[getattr(entry, "__name__", "")] = entry


def _bad_request(error: HTTPException) -> Any:
    app = flask.current_app
    entry = app.extensions.get(_ENTRIES, {}).get(app.name)  # functions-framework names the app after its target
    body = flask.request.get_json(force=True, silent=True) if flask.request.method == "POST" else None
    message = body.get("message") if isinstance(body, dict) else None
    if entry is None or not isinstance(message, dict) or message.get("data") not in (None, ""):
        return error
    entry(body)  # parses, finds no data, logs the outcome "invalid" and returns: an ack
    return "OK", 200
