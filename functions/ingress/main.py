"""ingress: verify a Buildkite webhook and publish it to the `buildkite-events` topic."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import flask
import functions_framework

from buildkite_events import tracing
from buildkite_events.config import env, load_config
from buildkite_events.errors import ConfigError, FanoutError
from buildkite_events.event import BuildkiteEvent
from buildkite_events.log import configure_logging, log, log_context, redact, register_secrets
from buildkite_events.message import to_message
from buildkite_events.parse import load_json
from buildkite_events.publisher import Publisher
from buildkite_events.signature import Authenticated, AuthenticationFailed, authenticate

ANSWER_MARGIN_SECONDS = 5  # of the function timeout, kept after the publish deadline to answer


@dataclass(frozen=True)
class Config:
    project: str = env("GOOGLE_CLOUD_PROJECT")
    token: str = env("BUILDKITE_WEBHOOK_TOKEN", secret=True)
    previous_token: str = env("BUILDKITE_WEBHOOK_TOKEN_PREVIOUS", default="", secret=True)
    topic: str = env("PUBSUB_TOPIC", default="buildkite-events")
    require_signature: bool = env("BUILDKITE_REQUIRE_SIGNATURE", default=False)
    tolerance_seconds: int = env("SIGNATURE_TOLERANCE_SECONDS", default=300)
    max_body_bytes: int = env("MAX_BODY_BYTES", default=1024 * 1024)
    publish_deadline_seconds: float = env("PUBLISH_DEADLINE_SECONDS", default=20.0)

    def __post_init__(self) -> None:
        if self.tolerance_seconds <= 0:
            raise ValueError("SIGNATURE_TOLERANCE_SECONDS must be a positive number of seconds")
        if self.max_body_bytes <= 0:
            raise ValueError("MAX_BODY_BYTES must be a positive number of bytes")
        timeout = _timeout_seconds()
        if not 0 < self.publish_deadline_seconds <= timeout - ANSWER_MARGIN_SECONDS:
            raise ValueError(
                f"PUBLISH_DEADLINE_SECONDS must be more than 0 and end {ANSWER_MARGIN_SECONDS} s before "
                f"the function's {timeout} s timeout (function.yaml), so at most {timeout - ANSWER_MARGIN_SECONDS}"
            )


def _timeout_seconds() -> int:
    """The function's timeout, from the manifest deployed beside this file."""
    from buildkite_events.manifest import MANIFEST_NAME, load_manifest

    return load_manifest(Path(__file__).with_name(MANIFEST_NAME)).timeout_seconds


@cache
def _setup() -> tuple[Config, Publisher]:
    """Once per instance: config (validated) and a publisher."""
    configure_logging()
    config = load_config(Config)
    register_secrets([config.token, config.previous_token])
    return config, Publisher(config.project, config.topic, deadline_seconds=config.publish_deadline_seconds)


@functions_framework.http
def receive_webhook(request: flask.Request) -> flask.Response:
    # The caller's trace (on Cloud Run, the request's), or a new one: the event's trace from here on.
    with log_context(function="ingress"), tracing.start("ingress", tracing.from_headers(request.headers)) as span:
        try:
            config, publisher = _setup()
        except ConfigError as err:
            log(logging.ERROR, f"ingress misconfigured: {err}", outcome="config_error")
            response = _answer(503, "the webhook receiver is not configured")
        else:
            response = _receive(request, config, publisher)
        span.set("http.response.status_code", response.status_code)
        if response.status_code >= 500:
            span.fail(f"answered {response.status_code}")
        return response


def _receive(request: flask.Request, config: Config, publisher: Publisher) -> flask.Response:
    if request.method != "POST":
        return _answer(405, "only POST is accepted", headers={"Allow": "POST"})
    if (request.content_length or 0) > config.max_body_bytes:
        return _answer(413, f"body larger than {config.max_body_bytes} bytes")
    body = request.stream.read(config.max_body_bytes + 1)  # never trust Content-Length alone
    if len(body) > config.max_body_bytes:
        return _answer(413, f"body larger than {config.max_body_bytes} bytes")

    with tracing.span("verify") as verify:
        try:
            auth = authenticate(
                body,
                token_header=request.headers.get("X-Buildkite-Token"),
                signature_header=request.headers.get("X-Buildkite-Signature"),
                token=config.token,
                previous_token=config.previous_token or None,
                require_signature=config.require_signature,
                tolerance_seconds=config.tolerance_seconds,
            )
        except AuthenticationFailed as err:
            verify.fail(str(err))
            log(logging.WARNING, f"rejected webhook: {err}", outcome="unauthorized")
            return _answer(401, "invalid or missing Buildkite token or signature")
        verify.set("buildkite.auth", f"{auth.method} ({auth.token})")

    try:
        payload = load_json(body.decode("utf-8"))
    except UnicodeDecodeError:
        return _answer(400, "body is not valid UTF-8")
    except json.JSONDecodeError as err:
        return _answer(400, f"body is not valid JSON: {err.msg} at line {err.lineno} column {err.colno}")
    except ValueError as err:  # too deep, NaN, 1e999, an integer past Python's digit limit
        return _answer(400, f"body is JSON we do not accept: {str(err)[:100]}")
    if not isinstance(payload, dict):
        return _answer(400, "body must be a JSON object")
    event_type = payload.get("event")
    if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > 128:
        return _answer(400, "body has no valid 'event' field")
    header_event = request.headers.get("X-Buildkite-Event")
    if header_event is not None and header_event != event_type:
        return _answer(400, "X-Buildkite-Event header and body 'event' disagree")

    event_key = BuildkiteEvent(event_type=event_type, data=payload).key_hash  # the key every function logs
    with log_context(event_key=event_key):
        return _publish(publisher, payload, event_type, event_key, auth)


def _publish(
    publisher: Publisher, payload: dict[str, Any], event_type: str, event_key: str, auth: Authenticated
) -> flask.Response:
    with tracing.span("publish", kind="producer") as span:
        # As with Google's Pub/Sub clients, the publish span is the parent the message carries.
        data, attributes = to_message(payload, event_type, traceparent=span.context.traceparent)
        for key, value in {"event_key": event_key, "event_type": event_type, **_ids(attributes)}.items():
            span.set(f"buildkite.{key}", value)
        try:
            message_id = publisher.publish(data, attributes)
        except Exception as err:  # whatever failed, Buildkite gets the documented answer
            unexpected = f"unexpected {type(err).__name__}: {redact(str(err))}"
            reason = str(err) if isinstance(err, FanoutError) else unexpected
            span.fail(reason)
            log(logging.ERROR, f"publish failed: {reason[:500]}", outcome="publish_failed", event_type=event_type)
            return _answer(503, "could not queue the event; it was not accepted")
        span.set("messaging.message.id", message_id)
    fields = {"auth": auth.method, "auth_token": auth.token, "message_id": message_id, **_ids(attributes)}
    log(logging.INFO, "published", outcome="published", event_type=event_type, **fields)
    return _answer(200, None, message_id=message_id)


def _ids(attributes: dict[str, str]) -> dict[str, str]:
    return {k: attributes[k] for k in ("organization", "pipeline", "build_number") if k in attributes}


def _answer(status: int, error: str | None, headers: dict[str, str] | None = None, **fields: str) -> flask.Response:
    body = {"error": error, **fields} if error else fields
    return flask.Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)
