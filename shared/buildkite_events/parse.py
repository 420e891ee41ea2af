"""One call turns any delivery into a ``BuildkiteEvent``.

Accepted: a CloudEvent (``google.cloud.pubsub.topic.v1.messagePublished``, as
functions-framework hands it over for Eventarc triggers and raw push bodies alike), a
Pub/Sub push envelope ``{"message": {...}, "subscription": ...}``, a bare Pub/Sub message
``{"data": ..., "attributes": ...}``, or a raw Buildkite webhook body (dict, str or bytes).
Message data may be our own format or mcncl/buildkite-pubsub's.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidEvent
from .event import BuildkiteEvent
from .message import encode_data
from .timeutil import parse_time

MAX_EVENT_TYPE_LENGTH = 128


def parse_delivery(delivery: Any) -> BuildkiteEvent:
    """Return the event inside ``delivery`` or raise ``InvalidEvent`` with a reason."""
    received = b""  # a raw body's bytes, kept as they came
    if isinstance(delivery, str):
        delivery = delivery.encode("utf-8", "surrogatepass")
    if isinstance(delivery, bytes | bytearray):
        received = bytes(delivery)
        delivery = _json_object(received, "request body")
    elif not isinstance(delivery, Mapping) and hasattr(delivery, "get_attributes") and hasattr(delivery, "data"):
        delivery = _cloud_event_envelope(delivery)
    if not isinstance(delivery, Mapping):
        raise InvalidEvent(f"unsupported delivery of type {type(delivery).__name__}")

    message: Mapping[str, Any] | None = None
    if isinstance(delivery.get("message"), dict):  # push envelope / CloudEvent data
        message = delivery["message"]
    elif "data" in delivery and ("attributes" in delivery or "messageId" in delivery or "message_id" in delivery):
        message = delivery  # a bare PubsubMessage
    if message is None:
        return _event_from_body(dict(delivery), payload=received, attributes={}, message_id=None, publish_time=None)

    attributes = _attributes(message.get("attributes"))
    payload = _decode_data(message.get("data"))
    body = _json_object(payload, "message data")
    message_id = message.get("messageId") or message.get("message_id")
    return _event_from_body(
        body,
        payload=payload,
        attributes=attributes,
        message_id=str(message_id) if message_id is not None else None,
        publish_time=parse_time(message.get("publishTime") or message.get("publish_time")),
    )


def _cloud_event_envelope(event: Any) -> Any:
    """A CloudEvent's data is the push envelope; fall back to its id/time for the message."""
    data = event.data
    if isinstance(data, bytes | bytearray | str):
        raw = data.encode("utf-8", "surrogatepass") if isinstance(data, str) else data
        data = _json_object(raw, "CloudEvent data")
    if not isinstance(data, Mapping) or not isinstance(data.get("message"), Mapping):
        raise InvalidEvent("CloudEvent carries no Pub/Sub message")
    message = dict(data["message"])
    attrs = event.get_attributes()
    message.setdefault("messageId", attrs.get("id"))
    message.setdefault("publishTime", attrs.get("time"))
    return {**data, "message": message}


def _decode_data(data: Any) -> bytes:
    if data is None or data == "":
        raise InvalidEvent("Pub/Sub message has no data")
    if isinstance(data, bytes | bytearray):
        return bytes(data)
    if not isinstance(data, str):
        raise InvalidEvent(f"Pub/Sub message data is a {type(data).__name__}, not base64 text")
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError):
        try:  # some senders use the URL-safe alphabet
            return base64.b64decode(data, altchars=b"-_", validate=True)
        except (binascii.Error, ValueError):
            raise InvalidEvent("Pub/Sub message data is not valid base64") from None


def _json_object(raw: bytes | bytearray, what: str) -> dict[str, Any]:
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidEvent(f"{what} is not valid UTF-8 (byte {err.start})") from None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as err:
        raise InvalidEvent(f"{what} is not JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except (RecursionError, ValueError):  # absurd nesting, or integers past Python's digit limit
        raise InvalidEvent(f"{what} is JSON too deeply nested or with numbers too large to read") from None
    if not isinstance(value, dict):
        raise InvalidEvent(f"{what} is JSON but not an object (got {type(value).__name__})")
    if _SURROGATE_ESCAPE.search(text):  # valid JSON, invalid UTF-8: nothing downstream could encode it
        try:
            value = dict(_valid_text(value))
        except RecursionError:
            raise InvalidEvent(f"{what} is JSON too deeply nested to read") from None
    return value


_SURROGATE_ESCAPE = re.compile(r"\\u[dD][89a-fA-F]")


def _valid_text(value: Any) -> Any:
    """Lone surrogates → U+FFFD (pairs stay the characters they encode); ``payload`` keeps the bytes."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {_valid_text(k): _valid_text(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_valid_text(v) for v in value]
    return value


def _attributes(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        return {}
    return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in value.items()}


def _event_from_body(
    body: dict[str, Any],
    *,
    payload: bytes,
    attributes: dict[str, str],
    message_id: str | None,
    publish_time: Any,
) -> BuildkiteEvent:
    fmt = "buildkite"
    if isinstance(body.get("raw_payload"), dict) and "event_type" in body:
        body, fmt = _from_mcncl(body), "mcncl"
    event_type = body.get("event_type") or body.get("event") or attributes.get("event_type")
    if not isinstance(event_type, str) or not event_type.strip():
        raise InvalidEvent("missing event_type (neither event_type nor event is a non-empty string)")
    if len(event_type) > MAX_EVENT_TYPE_LENGTH:
        raise InvalidEvent(
            f"event_type is {len(event_type)} characters long; at most {MAX_EVENT_TYPE_LENGTH} are expected"
        )
    return BuildkiteEvent(
        event_type=event_type.strip(),
        data=body,
        payload=payload or _encode(body),
        attributes=attributes,
        message_id=message_id,
        publish_time=publish_time,
        format=fmt,
    )


def _encode(body: dict[str, Any]) -> bytes:
    try:
        return encode_data(body)
    except (RecursionError, ValueError):  # nesting json.loads allowed but json.dumps cannot redo
        raise InvalidEvent("event body is nested too deeply to handle") from None


def _from_mcncl(message: dict[str, Any]) -> dict[str, Any]:
    """mcncl/buildkite-pubsub: rebuild a Buildkite-shaped body from ``raw_payload`` plus its summary.

    Its ``raw_payload`` is re-encoded from a typed struct (it lost job, agent, blocked, author,
    pull_request, ...) and its summary writes null times as Go's zero time. We keep every key
    it sent; summary values fill what ``raw_payload`` lacks, zero times become null.
    """
    raw = message["raw_payload"]
    body: dict[str, Any] = {**raw, "event_type": message["event_type"]}
    for part in ("build", "pipeline", "sender"):
        merged = dict(raw.get(part) or {}) if isinstance(raw.get(part), Mapping) else {}
        summary = message.get(part)
        if isinstance(summary, Mapping):
            for key, value in summary.items():
                if isinstance(value, str) and value.startswith("0001-01-01T00:00:00"):
                    value = None
                if merged.get(key) in (None, "") or (part == "build" and key in ("pipeline", "organization")):
                    merged[key] = value
        for key, value in list(merged.items()):
            if isinstance(value, str) and value.startswith("0001-01-01T00:00:00"):
                merged[key] = None
        body[part] = merged
    body["raw_payload"] = raw  # keep what it sent, verbatim
    return body
