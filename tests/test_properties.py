"""Property tests: whatever arrives, parsing answers an event or InvalidEvent; messages stay within limits."""

from __future__ import annotations

import base64
import json
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildkite_events import BuildkiteEvent, InvalidEvent, parse_delivery
from buildkite_events.message import MAX_ATTRIBUTE_BYTES, to_message, truncate_utf8
from buildkite_events.signature import AuthenticationFailed, sign, verify_signature
from tests.support import envelope, off_the_wire, payload, payload_names

# Deterministic, bounded runs: the same examples every time, a few seconds in all.
FAST = settings(
    max_examples=100,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
# For the examples that build whole messages (each one parses, encodes and re-parses a body).
FEWER = settings(FAST, max_examples=60)

# Text including lone surrogates (valid in JSON escapes, invalid in UTF-8).
TEXT = st.text(st.characters(exclude_categories=()), max_size=40)
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**30), max_value=10**30)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(TEXT, children, max_size=4),
    max_leaves=25,
)
FUTURE_EVENTS = ["build.annotated", "job.promised_exit_status", "cluster_token.registration_blocked", "future.thing"]
EVENT_NAMES = st.sampled_from([*sorted({payload(n)["event"] for n in payload_names()}), *FUTURE_EVENTS])
EVENT_TYPES = EVENT_NAMES | st.text(st.characters(exclude_categories=()), min_size=1, max_size=128).filter(
    lambda s: bool(s.strip())
)
FIXTURE_BODIES = st.sampled_from(payload_names()).map(payload)


def _touch(event: BuildkiteEvent) -> None:
    build, job = event.build, event.job
    _ = (event.kind, event.organization, event.pipeline_slug, event.occurred_at, event.key, event.key_hash)
    _ = (event.agent, event.pipeline, event.log_fields())
    if build:
        _ = (build.effective_state, build.message_title, build.short_commit, build.duration_seconds)
        _ = (build.wait_seconds, build.is_finished)
    if job:
        _ = (job.wait_seconds, job.run_seconds, job.queue)


def _event_or_invalid(delivery: Any) -> BuildkiteEvent | None:
    try:
        event = parse_delivery(delivery)
    except InvalidEvent as err:
        assert str(err)
        return None
    assert isinstance(event, BuildkiteEvent)
    assert event.event_type and event.event_type == event.event_type.strip()
    _touch(event)
    return event


def _check_attributes(attributes: dict[str, str]) -> None:
    for key, value in attributes.items():
        assert isinstance(value, str) and value, key
        assert len(value.encode("utf-8")) <= MAX_ATTRIBUTE_BYTES, key  # strict UTF-8: no surrogates left
    assert attributes["origin"] == "buildkite-webhook"


# --- parse_delivery never raises anything but InvalidEvent ------------------------------------


@FAST
@given(st.binary(max_size=300))
def test_arbitrary_bytes(raw: bytes) -> None:
    _event_or_invalid(raw)
    _event_or_invalid({"message": {"data": base64.b64encode(raw).decode(), "messageId": "1"}})
    _event_or_invalid({"message": {"data": raw, "attributes": {"event_type": "build.finished"}}})


@FAST
@given(st.text(st.characters(exclude_categories=()), max_size=200))
def test_arbitrary_text(text: str) -> None:
    _event_or_invalid(text)
    _event_or_invalid({"message": {"data": text}})


@FAST
@given(JSON)
def test_arbitrary_json(value: Any) -> None:
    raw = json.dumps(value).encode()
    _event_or_invalid(raw)
    _event_or_invalid({"message": {"data": base64.b64encode(raw).decode()}})
    _event_or_invalid({"message": {"data": base64.b64encode(raw).decode(), "attributes": {"event_type": "ping"}}})
    if isinstance(value, dict):
        _event_or_invalid(value)


@FEWER
@given(
    EVENT_TYPES,
    st.dictionaries(st.sampled_from(["build", "job", "agent", "pipeline", "organization", "cluster_token"]), JSON),
)
def test_arbitrary_objects_in_buildkite_places(event_type: str, parts: dict[str, Any]) -> None:
    body = {"event": event_type, **parts}
    event = _event_or_invalid(body)
    assert event is not None
    data, attributes = to_message(body, event_type)
    _check_attributes(attributes)
    _event_or_invalid(envelope(data, attributes))


KNOWN_FIELDS = [
    "id",
    "number",
    "state",
    "blocked",
    "branch",
    "commit",
    "message",
    "source",
    "url",
    "web_url",
    "author",
    "creator",
    "pull_request",
    "rebuilt_from",
    "started_at",
    "finished_at",
    "scheduled_at",
    "name",
    "label",
    "type",
    "exit_status",
    "agent_query_rules",
    "meta_data",
    "retry_source",
    "slug",
    "provider",
    "connected_at",
]


@FEWER
@given(
    FIXTURE_BODIES,
    st.sampled_from(["build", "job", "agent", "pipeline"]),
    st.dictionaries(st.sampled_from(KNOWN_FIELDS), JSON, min_size=1, max_size=6),
)
def test_fixture_fields_replaced_by_arbitrary_json(body: dict[str, Any], part: str, fields: dict[str, Any]) -> None:
    inner = body.get(part)
    body[part] = {**inner, **fields} if isinstance(inner, dict) else fields
    event = _event_or_invalid(body)
    assert event is not None and event.event_type == body["event"]
    data, attributes = to_message(body, body["event"])
    _check_attributes(attributes)
    again = _event_or_invalid(envelope(data, attributes))
    assert again is not None and again.key == event.key


# --- to_message -------------------------------------------------------------------------------

BODY_KEYS = TEXT.filter(lambda k: k not in {"event_type", "raw_payload", "event"})


@FEWER
@given(EVENT_TYPES, st.dictionaries(BODY_KEYS, JSON, max_size=6))
def test_to_message_on_arbitrary_bodies(event_type: str, extra: dict[str, Any]) -> None:
    body = {"event": event_type, **extra}
    data, attributes = to_message(body, event_type)
    _check_attributes(attributes)
    assert truncate_utf8(event_type) == attributes["event_type"]
    decoded = json.loads(data.decode("utf-8"))  # strict UTF-8 on the wire
    assert decoded["event_type"] == event_type
    for key, value in body.items():
        if key not in ("build", "pipeline"):
            assert decoded[key] == value
    event = parse_delivery(envelope(data, attributes))
    assert event.event_type == off_the_wire(event_type.strip())
    assert event.data == off_the_wire(decoded)
    assert json.loads(event.payload) == decoded


@FAST
@given(FIXTURE_BODIES, TEXT, st.text(st.characters(exclude_categories=()), min_size=300, max_size=2000))
def test_to_message_fixture_with_long_or_broken_strings(body: dict[str, Any], short: str, long: str) -> None:
    if isinstance(body.get("build"), dict):
        body["build"].update(branch=long * 3, state=short, source=long)
    if isinstance(body.get("pipeline"), dict):
        body["pipeline"]["slug"] = long * 2
    data, attributes = to_message(body, body["event"])
    _check_attributes(attributes)
    event = parse_delivery(envelope(data, attributes))
    if isinstance(body.get("build"), dict):
        assert event.build is not None
        assert event.data["build"]["branch"] == off_the_wire(long * 3)  # data is never truncated


@FAST
@given(st.text(st.characters(exclude_categories=()), max_size=400), st.integers(min_value=0, max_value=1100))
def test_truncate_utf8(value: str, limit: int) -> None:
    cut = truncate_utf8(value, limit)
    encoded = cut.encode("utf-8")  # strict: always valid UTF-8
    assert len(encoded) <= limit
    whole = value.encode("utf-8", "replace")
    assert whole.startswith(encoded)
    if len(whole) > limit:
        rest = whole[len(encoded) :].decode("utf-8")
        assert len(encoded) + len(rest[0].encode("utf-8")) > limit  # nothing more would have fitted
    else:
        assert encoded == whole


# --- signatures -------------------------------------------------------------------------------


@FAST
@given(
    st.binary(max_size=500),
    st.text(st.characters(exclude_categories=("Cs",)), min_size=1, max_size=64),
    st.integers(min_value=0, max_value=10**11),
    st.binary(min_size=1, max_size=8),
)
def test_sign_then_verify(body: bytes, token: str, timestamp: int, tweak: bytes) -> None:
    header = sign(body, token, timestamp)
    verify_signature(body, header, token, tolerance_seconds=0, now=timestamp)
    try:
        verify_signature(body + tweak, header, token, tolerance_seconds=0, now=timestamp)
    except AuthenticationFailed:
        pass
    else:
        raise AssertionError("a changed body verified")
