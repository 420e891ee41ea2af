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
import math
import re
from collections.abc import Mapping
from typing import Any

from .errors import InvalidEvent
from .event import BuildkiteEvent
from .message import encode_data
from .timeutil import parse_time

MAX_EVENT_TYPE_LENGTH = 128
MAX_JSON_DEPTH = 128  # Buildkite bodies nest under 10 deep; the recursive parser must never get near its limit


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


def load_json(text: str) -> Any:
    """``json.loads`` for untrusted text, with explicit limits that hold on every Python version.

    Refused with a ``ValueError`` saying why: nesting deeper than ``MAX_JSON_DEPTH`` (checked
    before the recursive parser sees it), ``NaN``/``Infinity`` and numbers that overflow a
    float (``1e999``: strict JSON readers cannot take them back), and integers past Python's
    digit limit.
    """
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _too_deep(text):
        raise ValueError(f"nested deeper than {MAX_JSON_DEPTH} levels")
    try:
        return _DECODER.decode(text)
    except RecursionError:  # unreachable through _too_deep; kept as the last line of defence
        raise ValueError("nested too deeply") from None


_STRING = re.compile(r'"[^"\\]*(?:\\.[^"\\]*)*"')
_BRACKET = re.compile(r"[\[\]{}]")


def _too_deep(text: str) -> bool:
    """Whether brackets outside strings nest past ``MAX_JSON_DEPTH`` (stops at the first level too many)."""
    depth = 0
    for match in _BRACKET.finditer(_STRING.sub("", text)):
        if match.group() in "[{":
            depth += 1
            if depth > MAX_JSON_DEPTH:
                return True
        else:
            depth -= 1
    return False


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a JSON number")


def _finite(literal: str) -> float:
    value = float(literal)
    if not math.isfinite(value):
        raise ValueError(f"the number {literal[:20]} is out of range")
    return value


_DECODER = json.JSONDecoder(parse_constant=_no_constant, parse_float=_finite)  # json.loads(**options) makes one a call


def _json_object(raw: bytes | bytearray, what: str) -> dict[str, Any]:
    try:
        text = bytes(raw).decode("utf-8")
    except UnicodeDecodeError as err:
        raise InvalidEvent(f"{what} is not valid UTF-8 (byte {err.start})") from None
    try:
        value = load_json(text)
    except json.JSONDecodeError as err:
        raise InvalidEvent(f"{what} is not JSON: {err.msg} at line {err.lineno} column {err.colno}") from None
    except ValueError as err:  # too deep, a non-finite number, an integer past Python's digit limit
        raise InvalidEvent(f"{what} is JSON we cannot take: {_first_line(err)}") from None
    if not isinstance(value, dict):
        raise InvalidEvent(f"{what} is JSON but not an object (got {type(value).__name__})")
    if _SURROGATE_ESCAPE.search(text):  # valid JSON, invalid UTF-8: nothing downstream could encode it
        value = dict(_valid_text(value))
    return value


def _first_line(err: Exception) -> str:
    return (str(err).splitlines() or [""])[0][:120]


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
    except (RecursionError, ValueError):  # a dict handed over directly, nested past what json.dumps can do
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
