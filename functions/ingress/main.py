"""ingress: verify a Buildkite webhook and publish it to the `buildkite-events` topic."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import cache

import flask
import functions_framework

from buildkite_events.config import env, load_config
from buildkite_events.errors import ConfigError, TransientError
from buildkite_events.log import configure_logging, log, log_context, register_secrets, trace_field
from buildkite_events.message import to_message
from buildkite_events.publisher import Publisher
from buildkite_events.signature import AuthenticationFailed, authenticate


@dataclass(frozen=True)
class Config:
    project: str = env("GOOGLE_CLOUD_PROJECT")
    token: str = env("BUILDKITE_WEBHOOK_TOKEN", secret=True)
    topic: str = env("PUBSUB_TOPIC", default="buildkite-events")
    require_signature: bool = env("BUILDKITE_REQUIRE_SIGNATURE", default=False)
    tolerance_seconds: int = env("SIGNATURE_TOLERANCE_SECONDS", default=300)
    max_body_bytes: int = env("MAX_BODY_BYTES", default=1024 * 1024)


@cache
def _setup() -> tuple[Config, Publisher]:
    """Once per instance: config (validated) and a publisher."""
    configure_logging()
    config = load_config(Config)
    register_secrets([config.token])
    return config, Publisher(config.project, config.topic)


@functions_framework.http
def receive_webhook(request: flask.Request) -> flask.Response:
    try:
        config, publisher = _setup()
    except ConfigError as err:
        log(logging.ERROR, f"ingress misconfigured: {err}", outcome="config_error")
        return _answer(503, "the webhook receiver is not configured")
    with log_context(function="ingress", **trace_field(request.headers, config.project)):
        return _receive(request, config, publisher)


def _receive(request: flask.Request, config: Config, publisher: Publisher) -> flask.Response:
    if request.method != "POST":
        return _answer(405, "only POST is accepted", headers={"Allow": "POST"})
    if (request.content_length or 0) > config.max_body_bytes:
        return _answer(413, f"body larger than {config.max_body_bytes} bytes")
    body = request.stream.read(config.max_body_bytes + 1)  # never trust Content-Length alone
    if len(body) > config.max_body_bytes:
        return _answer(413, f"body larger than {config.max_body_bytes} bytes")

    try:
        method = authenticate(
            body,
            token_header=request.headers.get("X-Buildkite-Token"),
            signature_header=request.headers.get("X-Buildkite-Signature"),
            token=config.token,
            require_signature=config.require_signature,
            tolerance_seconds=config.tolerance_seconds,
        )
    except AuthenticationFailed as err:
        log(logging.WARNING, f"rejected webhook: {err}", outcome="unauthorized")
        return _answer(401, "invalid or missing Buildkite token or signature")

    try:
        payload = json.loads(body.decode("utf-8"), parse_constant=_no_constants)
    except UnicodeDecodeError:
        return _answer(400, "body is not valid UTF-8")
    except (ValueError, RecursionError):
        return _answer(400, "body is not valid JSON")
    if not isinstance(payload, dict):
        return _answer(400, "body must be a JSON object")
    event_type = payload.get("event")
    if not isinstance(event_type, str) or not event_type.strip() or len(event_type) > 128:
        return _answer(400, "body has no valid 'event' field")
    header_event = request.headers.get("X-Buildkite-Event")
    if header_event is not None and header_event != event_type:
        return _answer(400, "X-Buildkite-Event header and body 'event' disagree")

    data, attributes = to_message(payload, event_type)
    try:
        message_id = publisher.publish(data, attributes)
    except (TransientError, ConfigError) as err:
        log(logging.ERROR, f"publish failed: {err}", outcome="publish_failed", event_type=event_type)
        return _answer(503, "could not queue the event; Buildkite may retry")
    log(
        logging.INFO,
        "published",
        outcome="published",
        event_type=event_type,
        auth=method,
        message_id=message_id,
        **_ids(attributes),
    )
    return _answer(200, None, message_id=message_id)


def _no_constants(name: str) -> None:
    raise ValueError(f"{name} is not JSON")  # Python accepts NaN/Infinity; JSON (and consumers) do not


def _ids(attributes: dict[str, str]) -> dict[str, str]:
    return {k: attributes[k] for k in ("organization", "pipeline", "build_number") if k in attributes}


def _answer(status: int, error: str | None, headers: dict[str, str] | None = None, **fields: str) -> flask.Response:
    body = {"error": error, **fields} if error else fields
    return flask.Response(json.dumps(body), status=status, mimetype="application/json", headers=headers)
