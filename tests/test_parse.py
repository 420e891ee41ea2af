"""parse_delivery: every way a Buildkite event can arrive, and every way it can be broken."""

from __future__ import annotations

import base64
import json
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from buildkite_events import BuildkiteEvent, InvalidEvent, parse_delivery
from buildkite_events.message import to_message
from buildkite_events.parse import MAX_JSON_DEPTH, load_json
from tests.support import cloud_event, envelope, mcncl, payload, payload_bytes, payload_names

ALL = payload_names()


def _b64(raw: bytes) -> str:
    return base64.b64encode(raw).decode()


def _push(raw: bytes, attributes: dict[str, str] | None = None, **message: Any) -> dict[str, Any]:
    """A push body around arbitrary data bytes (no message conversion)."""
    return {"message": {"data": _b64(raw), "attributes": attributes or {}, "messageId": "42", **message}}


def _iso(value: str | None) -> datetime | None:
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)


def _deliveries(name: str) -> Iterator[tuple[str, Any]]:
    body = payload(name)
    push = envelope(body)
    yield "push", push
    yield "cloud_event", cloud_event(push)
    yield "dict", body
    yield "bytes", payload_bytes(name)
    yield "str", payload_bytes(name).decode("utf-8")
    yield "bytearray", bytearray(payload_bytes(name))
    yield "bare_message", dict(push["message"])


def _touch(event: BuildkiteEvent) -> None:
    """Every accessor a function may call: none of them may raise."""
    build, job, agent, pipeline = event.build, event.job, event.agent, event.pipeline
    _ = (event.kind, event.organization, event.pipeline_slug, event.occurred_at, event.key, event.key_hash)
    _ = event.log_fields()
    if build:
        _ = (build.is_blocked, build.is_finished, build.effective_state, build.message_title, build.short_commit)
        _ = (build.wait_seconds, build.duration_seconds)
        _ = build.author.display if build.author else None
    if job:
        _ = (job.wait_seconds, job.run_seconds)
    _ = (agent, pipeline)


# --- every fixture, every way it can arrive -----------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_every_delivery_form_gives_the_same_event(name: str) -> None:
    body = payload(name)
    seen: dict[str, tuple[str, str, str]] = {}
    for form, delivery in _deliveries(name):
        event = parse_delivery(delivery)
        assert isinstance(event, BuildkiteEvent), form
        assert event.event_type == body["event"], form
        assert event.format == "buildkite", form
        seen[form] = (event.event_type, event.key, event.kind)
        _touch(event)
    assert len(set(seen.values())) == 1, seen


@pytest.mark.parametrize("name", ALL)
def test_raw_bodies_keep_the_body_untouched(name: str) -> None:
    body = payload(name)
    for delivery in (body, payload_bytes(name), payload_bytes(name).decode()):
        event = parse_delivery(delivery)
        assert event.data == body
        assert event.message_id is None and event.publish_time is None
        assert event.attributes == {}
        assert json.loads(event.payload) == body
    assert body == payload(name)  # the caller's dict was not mutated


@pytest.mark.parametrize("name", ALL)
def test_push_envelope_carries_message_metadata(name: str) -> None:
    body = payload(name)
    push = envelope(body, message_id="m-77", publish_time="2025-06-12T03:40:00.250Z")
    event = parse_delivery(push)
    assert event.message_id == "m-77"
    assert event.publish_time == datetime(2025, 6, 12, 3, 40, 0, 250000, tzinfo=UTC)
    assert event.payload == base64.b64decode(push["message"]["data"])
    assert event.attributes == push["message"]["attributes"]
    assert event.attributes["event_type"] == body["event"]
    for key, value in body.items():  # the body survives inside the message
        if key != "build":
            assert event.data[key] == value
    assert event.data["event_type"] == body["event"]


@pytest.mark.parametrize("name", ALL)
def test_cloud_event_falls_back_to_its_own_id_and_time(name: str) -> None:
    push = envelope(payload(name))
    del push["message"]["messageId"]
    del push["message"]["publishTime"]
    from cloudevents.http import CloudEvent

    ce = CloudEvent(
        {
            "id": "ce-id-9",
            "source": "//pubsub.googleapis.com/projects/p/topics/t",
            "type": "google.cloud.pubsub.topic.v1.messagePublished",
            "specversion": "1.0",
            "time": "2025-06-12T05:00:00Z",
        },
        push,
    )
    event = parse_delivery(ce)
    assert event.message_id == "ce-id-9"
    assert event.publish_time == datetime(2025, 6, 12, 5, 0, tzinfo=UTC)
    assert event.event_type == payload(name)["event"]


def test_cloud_event_with_json_text_or_bytes_data() -> None:
    from cloudevents.http import CloudEvent

    push = envelope(payload("build.finished.failed"))
    attrs = {"id": "1", "source": "s", "type": "t", "specversion": "1.0"}
    for data in (json.dumps(push), json.dumps(push).encode()):
        ce = CloudEvent(attrs, None)
        ce.data = data
        assert parse_delivery(ce).event_type == "build.finished"


@pytest.mark.parametrize("data", [None, {}, {"subscription": "s"}, {"message": "x"}, b"not json", "[]", 5])
def test_cloud_event_without_a_pubsub_message_is_invalid(data: Any) -> None:
    from cloudevents.http import CloudEvent

    ce = CloudEvent({"id": "1", "source": "s", "type": "t", "specversion": "1.0"}, None)
    ce.data = data
    with pytest.raises(InvalidEvent) as err:
        parse_delivery(ce)
    assert str(err.value)


def test_cloud_event_text_data_with_lone_surrogate_is_invalid_not_a_crash() -> None:
    from cloudevents.http import CloudEvent

    ce = CloudEvent({"id": "1", "source": "s", "type": "t", "specversion": "1.0"}, None)
    ce.data = '{"message": {"data": "\ud800"}}'
    with pytest.raises(InvalidEvent):
        parse_delivery(ce)


def test_bare_pubsub_message_with_snake_case_fields() -> None:
    raw = payload_bytes("ping")
    event = parse_delivery({"data": _b64(raw), "message_id": 7, "publish_time": "2025-06-12T03:40:00Z"})
    assert event.event_type == "ping"
    assert event.message_id == "7"
    assert event.publish_time == datetime(2025, 6, 12, 3, 40, tzinfo=UTC)


def test_data_as_raw_bytes_in_the_message() -> None:
    event = parse_delivery({"message": {"data": payload_bytes("ping")}})
    assert event.event_type == "ping"
    assert event.payload == payload_bytes("ping")


def test_url_safe_base64_is_accepted() -> None:
    raw = json.dumps({"event": "ping", "x": "\u00ff\u00fe>>>???~~~"}, ensure_ascii=False).encode()
    standard = base64.b64encode(raw).decode()
    assert "+" in standard or "/" in standard  # otherwise this test proves nothing
    urlsafe = base64.urlsafe_b64encode(raw).decode()
    assert parse_delivery({"message": {"data": urlsafe}}).data == json.loads(raw)


def test_event_type_falls_back_to_the_attribute() -> None:
    body = payload("build.finished.passed")
    del body["event"]
    event = parse_delivery(_push(json.dumps(body).encode(), {"event_type": "build.finished"}))
    assert event.event_type == "build.finished"
    assert event.build is not None and event.build.number == body["build"]["number"]


def test_event_type_in_data_wins_over_event_and_attribute() -> None:
    body = {"event_type": "build.finished", "event": "build.running"}
    event = parse_delivery(_push(json.dumps(body).encode(), {"event_type": "ping"}))
    assert event.event_type == "build.finished"


def test_event_type_is_trimmed() -> None:
    assert parse_delivery({"event": "  build.finished\n"}).event_type == "build.finished"


def test_non_string_attribute_values_become_text() -> None:
    push = _push(payload_bytes("ping"), {"n": 5, "b": True, "s": "x"})  # type: ignore[dict-item]
    assert parse_delivery(push).attributes == {"n": "5", "b": "true", "s": "x"}


# --- mcncl/buildkite-pubsub messages ---------------------------------------------------------


def _mcncl_events(name: str) -> Iterator[BuildkiteEvent]:
    """The same mcncl message as a push, as a CloudEvent and as raw data (no publish time)."""
    data, attributes = mcncl(name)
    push = envelope(data, attributes)
    yield parse_delivery(push)
    yield parse_delivery(cloud_event(push))
    yield parse_delivery(data)


def test_mcncl_build_message() -> None:
    webhook = payload("build.finished.failed")
    data, attributes = mcncl("build.finished.failed")
    keys = set()
    for event in _mcncl_events("build.finished.failed"):
        assert event.format == "mcncl"
        assert event.event_type == "build.finished"
        assert event.pipeline_slug == webhook["pipeline"]["slug"]
        assert event.organization == "my-great-org"
        build = event.build
        assert build is not None
        assert build.id == webhook["build"]["id"]
        assert build.number == webhook["build"]["number"]
        assert build.state == "failed" == build.effective_state
        assert build.branch == webhook["build"]["branch"]
        assert build.commit == webhook["build"]["commit"]
        for stamp in ("created_at", "scheduled_at", "started_at", "finished_at"):
            assert getattr(build, stamp) == _iso(webhook["build"][stamp]), stamp
        assert build.message == webhook["build"]["message"]  # from raw_payload
        assert event.data["raw_payload"] == json.loads(data)["raw_payload"]  # kept verbatim
        assert event.data["build"]["pipeline"] == "my-pipeline"
        keys.add(event.key)
        _touch(event)
    assert len(keys) == 1
    # mcncl's "pipeline" attribute is the display name; the parsed event still knows the slug.
    assert attributes["pipeline"] == webhook["pipeline"]["name"] != webhook["pipeline"]["slug"]


def test_mcncl_agent_message_has_no_build() -> None:
    keys = set()
    for event in _mcncl_events("agent.connected"):
        assert event.format == "mcncl"
        assert event.event_type == "agent.connected"
        assert event.kind == "agent"
        assert event.build is None  # zeroed build, zero times
        assert event.pipeline is None
        assert event.pipeline_slug is None
        assert event.organization is None
        assert event.agent is None  # mcncl drops the agent
        # nothing but the publish time says when: the envelope's, or none for raw data
        assert event.occurred_at == event.publish_time
        keys.add(event.key)
        _touch(event)
    assert len(keys) == 1
    push = envelope(*mcncl("agent.connected"), publish_time="2025-06-12T02:58:04.000Z")
    assert parse_delivery(push).occurred_at == datetime(2025, 6, 12, 2, 58, 4, tzinfo=UTC)


def test_mcncl_zero_times_become_null_and_slug_comes_from_build_pipeline() -> None:
    zero = "0001-01-01T00:00:00Z"
    message = {
        "event_type": "build.running",
        "build": {
            "id": "b-1",
            "number": 12,
            "state": "running",
            "started_at": "2025-06-12T03:31:07.655Z",
            "finished_at": zero,
            "created_at": zero,
            "pipeline": "deploy-svc",
            "organization": "acme",
        },
        "pipeline": {"id": "", "name": "Deploy Service", "description": "", "repository": ""},
        "sender": {"id": "u", "name": "n"},
        "raw_payload": {"event": "build.running", "build": {"id": "b-1", "number": 12, "finished_at": zero}},
    }
    event = parse_delivery(_push(json.dumps(message).encode()))
    assert event.format == "mcncl"
    build = event.build
    assert build is not None
    assert build.finished_at is None and build.created_at is None
    assert build.started_at == datetime(2025, 6, 12, 3, 31, 7, 655000, tzinfo=UTC)
    assert event.pipeline_slug == "deploy-svc"
    assert event.organization == "acme"
    assert event.data["build"]["finished_at"] is None
    assert not build.is_finished


def test_mcncl_with_non_object_parts_does_not_crash() -> None:
    message = {"event_type": "build.finished", "build": None, "pipeline": [], "sender": "x", "raw_payload": {}}
    event = parse_delivery(json.dumps(message))
    assert event.format == "mcncl"
    assert event.build is None
    _touch(event)


# --- null-safety -----------------------------------------------------------------------------

HOSTILE_VALUES: list[Any] = [
    None,
    "",
    " ",
    0,
    -1,
    1.5,
    10**30,
    True,
    False,
    "123",
    "-7",
    "not a number",
    [],
    [1, "a", None],
    ["queue=x", 5, None, {"k": "v"}],
    {},
    {"a": None},
    {"id": None, "name": {"x": []}},
    "x" * 5000,
    "\ud800 lone surrogate",
    "2025-06-12 03:31:02 UTC",
    "2025-13-45T99:99:99Z",
    "0001-01-01T00:00:00Z",
    float("inf"),
]

OBJECTS = ("build", "job", "agent", "pipeline")

# Field-by-field sweeps: one fixture per object shape (the other fixtures share these shapes).
SWEEPS: list[tuple[str, tuple[str, ...]]] = [
    ("build.finished.failed", ("build",)),
    ("build.finished.failed", ("pipeline",)),
    ("job.finished.failed", ("job",)),
    ("job.finished.failed", ("job", "agent")),
    ("job.activated", ("job",)),
    ("agent.connected", ("agent",)),
    ("ping", ("organization",)),
]


def _replace(body: dict[str, Any], path: tuple[str, ...], value: Any, *, delete: bool = False) -> dict[str, Any]:
    """A copy of ``body`` with ``body[path]`` set (or deleted); copies only along the path."""
    top = dict(body)
    node = top
    for key in path[:-1]:
        node[key] = dict(node[key])
        node = node[key]
    if delete:
        del node[path[-1]]
    else:
        node[path[-1]] = value
    return top


def _lookup(body: dict[str, Any], path: tuple[str, ...]) -> Any:
    node: Any = body
    for key in path:
        node = node[key]
    return node


def _field_mutations(body: dict[str, Any], path: tuple[str, ...]) -> Iterator[tuple[str, dict[str, Any]]]:
    inner = _lookup(body, path)
    where = ".".join(path)
    for value in (None, [], [inner], "a string", 42, {}):
        yield f"{where}={value!r:.20}", _replace(body, path, value)
    yield f"{where} missing", _replace(body, path, None, delete=True)
    for field, current in inner.items():
        yield f"{where}.{field} missing", _replace(body, (*path, field), None, delete=True)
        for value in HOSTILE_VALUES:
            yield f"{where}.{field}={value!r:.20}", _replace(body, (*path, field), value)
        if isinstance(current, dict):
            for key in current:
                yield f"{where}.{field}.{key} nested", _replace(body, (*path, field, key), {"nested": [None]})


def _finite(value: Any) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except ValueError:
        return False
    return True


def _check_body(body: dict[str, Any]) -> None:
    event = parse_delivery(body)
    _touch(event)
    data, attributes = to_message(body, body["event"])
    assert all(len(v.encode("utf-8")) <= 1024 for v in attributes.values())
    if not _finite(body):  # the ingress refuses such a body (400); published by anyone else, it is not JSON
        with pytest.raises(InvalidEvent, match="Infinity is not a JSON number"):
            parse_delivery(envelope(data, attributes))
        return
    again = parse_delivery(envelope(data, attributes))
    _touch(again)
    assert again.event_type == body["event"]


def _sweep(mutations: Iterator[tuple[str, dict[str, Any]]]) -> tuple[int, list[str]]:
    failures: list[str] = []
    count = 0
    for label, body in mutations:
        count += 1
        try:
            _check_body(body)
        except Exception as err:  # collect them all, report at once
            failures.append(f"{label}: {type(err).__name__}: {err}"[:300])
    return count, failures


@pytest.mark.parametrize(("name", "path"), SWEEPS, ids=[f"{n}:{'.'.join(p)}" for n, p in SWEEPS])
def test_every_field_null_missing_or_wrongly_typed_never_crashes(name: str, path: tuple[str, ...]) -> None:
    body = payload(name)
    count, failures = _sweep(_field_mutations(body, path))
    assert count > 50
    assert not failures, "\n".join(failures[:20])
    assert body == payload(name)


def _object_mutations(body: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    for key in (*OBJECTS, "organization", "sender"):
        if isinstance(body.get(key), dict):
            yield f"{key} missing", _replace(body, (key,), None, delete=True)
            for value in (None, [], [body[key]], "a string", 42, {}, {"id": None}):
                yield f"{key}={value!r:.20}", _replace(body, (key,), value)


@pytest.mark.parametrize("name", ALL)
def test_every_object_null_missing_or_wrongly_typed_never_crashes(name: str) -> None:
    count, failures = _sweep(_object_mutations(payload(name)))
    assert count >= 8
    assert not failures, "\n".join(failures[:20])


def test_number_as_string_and_float_are_coerced() -> None:
    body = payload("build.finished.passed")
    expected = body["build"]["number"]
    for value in (str(expected), f" {expected} ", float(expected)):
        body["build"]["number"] = value
        build = parse_delivery(body).build
        assert build is not None and build.number == expected, value
    for value in ("12.5", "abc", True, [expected], {"n": expected}, 12.5, "9" * 40):
        body["build"]["number"] = value
        build = parse_delivery(body).build
        assert build is not None and build.number is None, value


@pytest.mark.parametrize("value", ["--1", "\u00b2", "1\u00b2", "-\u2075"])
def test_number_strings_that_look_numeric_do_not_crash(value: str) -> None:
    body = payload("build.finished.passed")
    body["build"]["number"] = value
    event = parse_delivery(body)
    assert event.build is not None
    assert event.build.number is None


@pytest.mark.parametrize("value", ["0001-01-01T00:00:00+01:00", "9999-12-31T23:59:59-01:00"])
def test_times_at_the_edge_of_the_calendar_do_not_crash(value: str) -> None:
    body = payload("build.finished.passed")
    body["build"]["finished_at"] = value
    event = parse_delivery(body)
    assert event.build is not None
    _ = event.key
    assert event.build.finished_at is None or event.build.finished_at.tzinfo is not None


def test_publish_time_at_the_edge_of_the_calendar_is_not_a_crash() -> None:
    push = envelope(payload("ping"), publish_time="0001-01-01T00:00:00+01:00")
    event = parse_delivery(push)
    assert event.publish_time is None


@pytest.mark.parametrize(
    ("author", "name", "email"),
    [
        (None, None, None),
        ({}, None, None),
        ({"name": "Keith", "email": "k@example.com"}, "Keith", "k@example.com"),
        ({"name": "Keith", "email": "k@example.com", "date": "2025-06-12T03:30:41Z"}, "Keith", "k@example.com"),
        ({"name": None, "email": "k@example.com"}, None, "k@example.com"),
        ("k@example.com", None, "k@example.com"),
        ("", None, None),
        (42, None, None),
        (["k@example.com"], None, None),
    ],
)
def test_author_null_object_or_string(author: Any, name: str | None, email: str | None) -> None:
    body = payload("build.finished.passed")
    body["build"]["author"] = author
    build = parse_delivery(body).build
    assert build is not None
    if name is None and email is None:
        assert build.author is None
    else:
        assert build.author is not None
        assert (build.author.name, build.author.email) == (name, email)
        assert build.author.display == (name or email)


@pytest.mark.parametrize(
    ("pull_request", "expected"),
    [
        (None, None),
        ({}, None),
        ([], None),
        ("123", None),
        ({"id": None, "base": "main"}, None),
        (
            {"id": "123", "base": "main", "repository": "git@github.com:org/fork.git"},
            ("123", "main", "git@github.com:org/fork.git"),
        ),
        ({"id": 123, "base": "main", "repository": None}, ("123", "main", None)),
    ],
)
def test_pull_request_null_empty_or_populated(pull_request: Any, expected: tuple[Any, ...] | None) -> None:
    body = payload("build.finished.passed")
    body["build"]["pull_request"] = pull_request
    build = parse_delivery(body).build
    assert build is not None
    if expected is None:
        assert build.pull_request is None
    else:
        pr = build.pull_request
        assert pr is not None
        assert (pr.id, pr.base, pr.repository) == expected


# --- hostile deliveries -----------------------------------------------------------------------


def _invalid(delivery: Any, *words: str) -> str:
    with pytest.raises(InvalidEvent) as err:
        parse_delivery(delivery)
    reason = str(err.value)
    assert reason and reason.isprintable()
    for word in words:
        assert word.lower() in reason.lower(), reason
    return reason


@pytest.mark.parametrize(
    ("data", "words"),
    [
        ("%%%not base64%%%", ()),
        ("@@@@", ()),
        (_b64(b"\xff\xfe\x00garbage"), ("utf-8",)),
        (_b64(b"{not json"), ("json",)),
        (_b64(b""), ()),
        (_b64(b"[1, 2, 3]"), ("object", "list")),
        (_b64(b'"build.finished"'), ("object", "str")),
        (_b64(b"42"), ("object", "int")),
        (_b64(b"null"), ("object",)),
        (_b64(b"true"), ("object",)),
        (_b64(b"{}"), ("event_type",)),
        (_b64(b'{"event": ""}'), ("event_type",)),
        (_b64(b'{"event": "   "}'), ("event_type",)),
        (_b64(b'{"event": 42}'), ("event_type",)),
        (_b64(b'{"event": ["build.finished"]}'), ("event_type",)),
        (_b64(b'{"event": {"name": "build.finished"}}'), ("event_type",)),
        (_b64(b'{"event": true}'), ("event_type",)),
        (_b64(b'{"event": null}'), ("event_type",)),
        (_b64(b'{"event": "' + b"x" * 129 + b'"}'), ("event_type", "128")),
        (_b64(b"[" * 100_000), ()),
        (_b64(b'{"a":' * 100_000 + b"1" + b"}" * 100_000), ()),
        (_b64(b'{"event": "ping", "n": ' + b"9" * 5000 + b"}"), ()),
        ("", ("data",)),
        (None, ("data",)),
        (12, ("data",)),
        (["eyJ9"], ("data",)),
    ],
)
def test_hostile_message_data_is_invalid_with_a_reason(data: Any, words: tuple[str, ...]) -> None:
    attributes = {"event_type": "" if "event_type" in words else "x"}
    _invalid({"message": {"data": data, "attributes": attributes}}, *words)


@pytest.mark.parametrize("data", ["@@@@", "!!!!!!!!", "data: not valid!"])
def test_data_that_is_not_base64_is_reported_as_such(data: str) -> None:
    _invalid({"message": {"data": data}}, "base64")


def test_message_with_attributes_but_no_data() -> None:
    _invalid({"message": {"attributes": {"event_type": "build.finished"}, "messageId": "1"}}, "data")
    _invalid({"message": {"attributes": {"event_type": "build.finished"}, "data": None}}, "data")


@pytest.mark.parametrize(
    "delivery",
    [None, 42, 4.2, [], [payload("ping")], set(), object(), b"", b"   ", "", "[]", b"\xff", "null", '"ping"'],
)
def test_unsupported_or_empty_deliveries_are_invalid(delivery: Any) -> None:
    _invalid(delivery)


def test_deeply_nested_json_at_every_depth_is_an_event_or_invalid() -> None:
    """Around the interpreter's recursion limit, parsing must either work completely or say why not."""
    limit = sys.getrecursionlimit()
    crashes: list[str] = []
    refused = 0
    for depth in range(max(1, limit - 150), limit + 20):
        refused_here = 0
        for opener, closer in (("[", "]"), ('{"a":', "}")):
            inner = opener * depth + ("1" if opener != "[" else "") + closer * depth
            raw = ('{"event":"deep.event","a":' + inner + "}").encode()
            for form, delivery in (("bytes", raw), ("push", _push(raw))):
                try:
                    event = parse_delivery(delivery)
                    _ = event.key
                except InvalidEvent:
                    refused_here += 1
                except RecursionError as err:
                    crashes.append(f"{form} depth {depth} {opener}: {err}")
        refused = refused + 1 if refused_here == 4 else 0
        if refused >= 3:  # well past the limit: every form is refused
            break
    assert not crashes, crashes[:4]


def test_huge_integers_inside_known_fields() -> None:
    body = payload("build.finished.passed")
    body["build"]["number"] = 10**200
    body["job"] = {"id": "j", "exit_status": -(10**50), "retries_count": 10**4000}
    event = parse_delivery(body)
    assert event.build is not None and event.build.number == 10**200
    _touch(event)
    _, attributes = to_message(body, "build.finished")
    assert len(attributes["build_number"]) <= 1024


def test_lone_surrogates_become_replacement_characters_off_the_wire() -> None:
    """Valid JSON but not UTF-8: nothing downstream (logs, Firestore, APIs) could encode them."""
    body = payload("build.finished.failed")
    body["build"]["branch"] = "feature/\ud83d-broken"
    body["build"]["message"] = "fix \udcff"
    direct = parse_delivery(body)  # a Python dict never went through JSON: kept as given
    assert direct.build is not None and direct.build.branch == "feature/\ud83d-broken"
    data, attributes = to_message(body, "build.finished")
    data.decode("utf-8")  # valid UTF-8 on the wire
    attributes["branch"].encode("utf-8")
    keys = set()
    for delivery in (envelope(data, attributes), data, data.decode()):
        event = parse_delivery(delivery)
        assert event.build is not None
        assert event.build.branch == "feature/\ufffd-broken"
        assert event.build.message == "fix \ufffd"
        assert event.payload == data or isinstance(delivery, dict)
        keys.add(event.key)
        event.key_hash.encode("utf-8")
    assert len(keys) == 1


def test_lone_surrogate_escapes_in_raw_json() -> None:
    raw = b'{"event": "ping", "x": "\\ud800", "y": "\\udfff\\ud800", "pair": "\\ud83d\\ude00"}'
    event = parse_delivery(raw)
    assert (event.data["x"], event.data["y"], event.data["pair"]) == ("\ufffd", "\ufffd\ufffd", "😀")
    assert event.payload == raw
    _ = event.key_hash


def test_str_with_raw_lone_surrogate_is_invalid_not_a_crash() -> None:
    _invalid('{"event": "ping", "x": "\ud800"}', "utf-8")


def test_event_type_length_limit() -> None:
    assert parse_delivery({"event": "e" * 128}).event_type == "e" * 128
    _invalid({"event": "e" * 129}, "event_type")
    _invalid({"event": "e" * 100_000}, "event_type")


@pytest.mark.parametrize(
    ("event_type", "kind"),
    [
        ("build.annotated", "build"),
        ("job.promised_exit_status", "job"),
        ("agent.blocked", "agent"),
        ("cluster_token.registration_blocked", "cluster_token"),
        ("ping", "ping"),
        ("pipeline.created", "other"),
        ("pipeline_schedule.failed", "other"),
        ("buildx.finished", "other"),
        ("something-new", "other"),
        ("ünïcødé.event", "other"),
        ("\ud800.x", "other"),
    ],
)
def test_unknown_and_future_events_are_kept(event_type: str, kind: str) -> None:
    body = {"event": event_type, "sender": {"id": "s", "name": "n"}, "thing": {"id": "t-1", "url": 5}}
    off_the_wire = event_type.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    for delivery, expected in ((body, event_type), (envelope(body), off_the_wire)):
        event = parse_delivery(delivery)
        assert event.event_type == expected
        assert event.kind == kind
        _touch(event)


def test_cluster_token_event() -> None:
    body = {
        "event": "cluster_token.registration_blocked",
        "blocked_ip": "203.0.113.9",
        "cluster_token": {
            "id": "tok-1",
            "url": "https://api.buildkite.com/v2/organizations/acme-inc/clusters/c/tokens/tok-1",
        },
        "sender": {"id": "s", "name": "n"},
    }
    event = parse_delivery(envelope(body))
    assert event.kind == "cluster_token"
    assert event.organization == "acme-inc"
    assert event.build is None
    assert event.key == parse_delivery(body).key


def test_a_top_level_message_string_is_a_body_not_an_envelope() -> None:
    event = parse_delivery({"event": "build.finished", "message": "hello", "data": "x"})
    assert event.event_type == "build.finished"
    assert event.data["message"] == "hello"


# --- explicit JSON limits: the same on every Python version ----------------------------------


def _deep(depth: int) -> str:
    """A body nested ``depth`` levels (the outer object counts as one)."""
    return '{"event":"deep.event","a":' + "[" * (depth - 1) + "]" * (depth - 1) + "}"


def test_nesting_is_bounded_explicitly_not_by_the_recursion_limit() -> None:
    assert load_json(_deep(MAX_JSON_DEPTH))["event"] == "deep.event"
    for depth in (MAX_JSON_DEPTH + 1, 976, 5000, 200_000):
        with pytest.raises(ValueError, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            load_json(_deep(depth))
        with pytest.raises(InvalidEvent, match=f"deeper than {MAX_JSON_DEPTH} levels"):
            parse_delivery(_push(_deep(depth).encode()))


def test_the_depth_limit_holds_whatever_the_recursion_limit() -> None:
    """Raised or lowered, the interpreter's limit changes nothing: deep input never reaches the parser."""
    original = sys.getrecursionlimit()
    for limit in (400, 20_000):
        sys.setrecursionlimit(limit)
        try:
            with pytest.raises(InvalidEvent, match="deeper than"):
                parse_delivery(_push(_deep(MAX_JSON_DEPTH + 1).encode()))
            assert parse_delivery(_push(_deep(MAX_JSON_DEPTH).encode())).event_type == "deep.event"
        finally:
            sys.setrecursionlimit(original)


def test_brackets_inside_strings_are_not_nesting() -> None:
    text = json.dumps({"event": "ping", "message": "[" * 5000 + "{" * 5000, 'k"[': ['"]]]'] * 300})
    assert load_json(text)["message"].startswith("[[[")


@pytest.mark.parametrize("number", ["1e999", "-1e999", "1E+400", "NaN", "Infinity", "-Infinity"])
def test_numbers_json_cannot_carry_are_refused(number: str) -> None:
    with pytest.raises(ValueError):
        load_json('{"event":"ping","n":' + number + "}")
    with pytest.raises(InvalidEvent, match="JSON we cannot take"):
        parse_delivery(_push(('{"event":"ping","n":' + number + "}").encode()))


def test_large_but_finite_numbers_are_kept() -> None:
    assert load_json('{"n": 1.7976931348623157e308, "m": 5e-324, "i": ' + "9" * 400 + "}")["i"] == int("9" * 400)
