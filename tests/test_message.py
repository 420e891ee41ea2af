"""to_message: the data the seed's handlers read and the attributes subscription filters match."""

from __future__ import annotations

import base64
import json
import re
from datetime import datetime
from typing import Any

import pytest

from buildkite_events import BuildkiteEvent, parse_delivery
from buildkite_events.filters import matches
from buildkite_events.message import (
    MAX_ATTRIBUTE_BYTES,
    ORIGIN,
    build_message_data,
    encode_data,
    message_attributes,
    to_message,
    truncate_utf8,
)
from tests.support import envelope, payload, payload_names

ALL = payload_names()
WITH_BUILD = [n for n in ALL if "build" in payload(n)]
FINISHED = [n for n in WITH_BUILD if payload(n)["build"]["finished_at"]]


def _org(body: dict[str, Any]) -> str | None:
    if isinstance(body.get("organization"), dict):
        return str(body["organization"]["slug"])
    for key in ("pipeline", "build", "agent"):
        url = (body.get(key) or {}).get("url") or ""
        if "/organizations/" in url:
            return str(url.split("/organizations/", 1)[1].split("/", 1)[0])
    return None


def _decoded(name: str) -> tuple[dict[str, Any], dict[str, str]]:
    body = payload(name)
    data, attributes = to_message(body, body["event"])
    return json.loads(data.decode("utf-8")), attributes


def _expected_attributes(body: dict[str, Any]) -> dict[str, str]:
    """The GUIDE's attribute list, computed from the fixture alone."""
    event_type = body["event"]
    expected: dict[str, Any] = {"event_type": event_type, "origin": "buildkite-webhook"}
    expected["organization"] = _org(body)
    expected["pipeline"] = (body.get("pipeline") or {}).get("slug")
    build = body.get("build")
    if build:
        expected.update(
            branch=build["branch"],
            build_state=build["state"],
            build_number=str(build["number"]),
            source=build["source"],
        )
        if event_type.startswith("build."):
            expected["blocked"] = "true" if (build["blocked"] is True or build["state"] == "blocked") else "false"
    job = body.get("job")
    if job and event_type.startswith("job."):
        expected.update(job_state=job["state"], job_type=job["type"])
    return {k: v for k, v in expected.items() if v not in (None, "")}


# --- data -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_data_is_the_body_plus_what_the_handlers_read(name: str) -> None:
    body = payload(name)
    data, _ = _decoded(name)
    assert data["event_type"] == body["event"]
    assert set(data) == set(body) | {"event_type"}
    for key, value in body.items():
        if key != "build":
            assert data[key] == value, key
    if "build" in body:
        assert set(data["build"]) == set(body["build"]) | {"pipeline", "organization"}
        for key, value in body["build"].items():
            assert data["build"][key] == value, key
        assert data["build"]["pipeline"] == body["pipeline"]["slug"]
        assert data["build"]["organization"] == _org(body)
    assert body == payload(name)  # the caller's body is not modified


@pytest.mark.parametrize("name", ALL)
def test_data_is_compact_utf8_json(name: str) -> None:
    body = payload(name)
    data, _ = to_message(body, body["event"])
    text = data.decode("utf-8")
    assert json.dumps(json.loads(text), ensure_ascii=False, separators=(",", ":")) == text


def _seed_event(data: bytes) -> dict[str, Any]:
    """What the seed's handlers receive: a background-function event with base64 ``data``."""
    return {"data": base64.b64encode(data).decode()}


def _seed_notify_slack(event: dict[str, Any]) -> str | None:
    pubsub_message = base64.b64decode(event["data"]).decode("utf-8")
    buildkite_event = json.loads(pubsub_message)
    if buildkite_event["event_type"] != "build.finished":
        return None
    build = buildkite_event["build"]
    if build["state"] != "failed":
        return None
    return f"*Build Failed*\nPipeline: {build['pipeline']}\nBuild: #{build['number']} {build['web_url']}"


def _seed_notify_teams(event: dict[str, Any]) -> dict[str, Any]:
    buildkite_event = json.loads(base64.b64decode(event["data"]).decode("utf-8"))
    build = buildkite_event["build"]
    return {
        "title": f"Build {build['state']} - {build['pipeline']}",
        "facts": [build["pipeline"], f"#{build['number']}", build["state"]],
        "uri": build["web_url"],
    }


def _seed_update_github_status(event: dict[str, Any]) -> dict[str, Any] | None:
    buildkite_event = json.loads(base64.b64decode(event["data"]).decode("utf-8"))
    build = buildkite_event["build"]
    if "github" not in build.get("source", {}):
        return None
    return {"description": f"Buildkite build #{build['number']} {build['state']}", "target_url": build["web_url"]}


def _seed_update_jira_tickets(event: dict[str, Any]) -> tuple[set[str], str]:
    buildkite_event = json.loads(base64.b64decode(event["data"]).decode("utf-8"))
    build = buildkite_event["build"]
    tickets = set(re.compile(r"[A-Z]+-\d+").findall(build["message"]))
    return tickets, f"Build #{build['number']} {build['state']}\n{build['web_url']}"


def _seed_store_build_metrics(event: dict[str, Any]) -> dict[str, Any]:
    buildkite_event = json.loads(base64.b64decode(event["data"]).decode("utf-8"))
    build = buildkite_event["build"]
    duration = None
    if build.get("started_at") and build.get("finished_at"):
        started = datetime.fromisoformat(build["started_at"].replace("Z", "+00:00"))
        finished = datetime.fromisoformat(build["finished_at"].replace("Z", "+00:00"))
        duration = (finished - started).total_seconds()
    return {
        "build_id": build["id"],
        "pipeline": build["pipeline"],
        "state": build["state"],
        "duration_seconds": duration,
        "timestamp": build["finished_at"],
        "branch": build.get("branch"),
        "commit": build.get("commit"),
    }


def _seed_archive_build_data(event: dict[str, Any]) -> tuple[str, dict[str, Any], str]:
    buildkite_event = json.loads(base64.b64decode(event["data"]).decode("utf-8"))
    timestamp = datetime.fromisoformat(buildkite_event["build"]["finished_at"].replace("Z", "+00:00"))
    path = (
        f"{timestamp.year:04d}/{timestamp.month:02d}/{timestamp.day:02d}/"
        f"{buildkite_event['build']['pipeline']}/{buildkite_event['build']['number']}.json"
    )
    metadata = {
        "pipeline": buildkite_event["build"]["pipeline"],
        "state": buildkite_event["build"]["state"],
        "event_type": buildkite_event["event_type"],
    }
    return path, metadata, json.dumps(buildkite_event)


@pytest.mark.parametrize("name", WITH_BUILD)
def test_seed_handlers_work_unchanged(name: str) -> None:
    body = payload(name)
    raw = body["build"]
    slug = body["pipeline"]["slug"]
    data, _ = to_message(body, body["event"])
    event = _seed_event(data)

    slack = _seed_notify_slack(event)
    if body["event"] == "build.finished" and raw["state"] == "failed":
        assert slack == f"*Build Failed*\nPipeline: {slug}\nBuild: #{raw['number']} {raw['web_url']}"
    else:
        assert slack is None

    teams = _seed_notify_teams(event)
    assert teams["title"] == f"Build {raw['state']} - {slug}"
    assert teams["facts"] == [slug, f"#{raw['number']}", raw["state"]]
    assert teams["uri"] == raw["web_url"]

    github = _seed_update_github_status(event)
    if "github" in raw["source"]:
        assert github == {
            "description": f"Buildkite build #{raw['number']} {raw['state']}",
            "target_url": raw["web_url"],
        }
    else:
        assert github is None  # the seed's check on a string source: skipped, not a crash

    tickets, comment = _seed_update_jira_tickets(event)
    assert tickets == set(re.findall(r"[A-Z]+-\d+", raw["message"]))
    assert comment.endswith(raw["web_url"])

    row = _seed_store_build_metrics(event)
    assert row["build_id"] == raw["id"] and row["pipeline"] == slug and row["state"] == raw["state"]
    assert row["branch"] == raw["branch"] and row["commit"] == raw["commit"]
    assert row["timestamp"] == raw["finished_at"]
    if raw["started_at"] and raw["finished_at"]:
        assert row["duration_seconds"] is not None and row["duration_seconds"] > 0
    else:
        assert row["duration_seconds"] is None


@pytest.mark.parametrize("name", FINISHED)
def test_seed_archive_handler_on_finished_builds(name: str) -> None:
    body = payload(name)
    data, _ = to_message(body, body["event"])
    path, metadata, stored = _seed_archive_build_data(_seed_event(data))
    finished = body["build"]["finished_at"]
    day = finished[:10].replace("-", "/")
    assert path == f"{day}/{body['pipeline']['slug']}/{body['build']['number']}.json"
    assert metadata == {
        "pipeline": body["pipeline"]["slug"],
        "state": body["build"]["state"],
        "event_type": body["event"],
    }
    assert json.loads(stored)["build"]["id"] == body["build"]["id"]


def test_seed_jira_handler_finds_the_ticket() -> None:
    data, _ = to_message(payload("build.finished.passed.jira-key"), "build.finished")
    tickets, _ = _seed_update_jira_tickets(_seed_event(data))
    assert "PROJ-123" in tickets


# --- attributes -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_attributes_are_exactly_the_guides(name: str) -> None:
    body = payload(name)
    _, attributes = to_message(body, body["event"])
    assert attributes == _expected_attributes(body)
    assert attributes["origin"] == ORIGIN == "buildkite-webhook"
    assert all(isinstance(v, str) and v for v in attributes.values())


@pytest.mark.parametrize("name", ALL)
def test_attributes_recomputed_from_the_message_are_the_same(name: str) -> None:
    body = payload(name)
    data, attributes = to_message(body, body["event"])
    assert message_attributes(parse_delivery(envelope(data, attributes))) == attributes


@pytest.mark.parametrize("name", ALL)
def test_blocked_only_for_build_events_and_job_attributes_only_for_job_events(name: str) -> None:
    body = payload(name)
    _, attributes = to_message(body, body["event"])
    assert ("blocked" in attributes) is body["event"].startswith("build.")
    assert ("job_state" in attributes) is body["event"].startswith("job.")
    assert ("job_type" in attributes) is body["event"].startswith("job.")
    if "build" not in body:
        assert not {"branch", "build_state", "build_number", "source", "blocked"} & set(attributes)


def test_job_in_a_build_event_adds_no_job_attributes() -> None:
    body = payload("build.finished.failed")
    body["job"] = payload("job.finished.failed")["job"]
    _, attributes = to_message(body, "build.finished")
    assert "job_state" not in attributes and "job_type" not in attributes


def test_empty_values_are_omitted() -> None:
    body = payload("build.finished.passed")
    body["build"].update(branch="", source=None)
    del body["pipeline"]
    body["build"]["url"] = body["build"]["web_url"] = None
    _, attributes = to_message(body, "build.finished")
    assert not {"branch", "source", "pipeline", "organization"} & set(attributes)
    assert attributes["build_state"] == "passed"


def test_state_blocked_convention_sets_blocked_attribute() -> None:
    body = payload("build.finished.passed")
    body["build"]["state"] = "blocked"
    _, attributes = to_message(body, "build.finished")
    assert attributes["blocked"] == "true"
    assert attributes["build_state"] == "blocked"


@pytest.mark.parametrize(
    ("filter_text", "selected"),
    [
        (
            'attributes.event_type = "build.finished" AND attributes.build_state = "failed"',
            {"build.finished.failed"},
        ),
        ('attributes.blocked = "true"', {"build.finished.blocked", "build.finished.blocked.failed"}),
        ('attributes.job_type = "manual"', {"job.activated"}),
        ('hasPrefix(attributes.event_type, "agent.")', {"agent.connected", "agent.disconnected", "agent.lost"}),
        ('attributes:branch AND NOT attributes.branch = "main"', None),
    ],
)
def test_subscription_filters_select_the_right_fixtures(filter_text: str, selected: set[str] | None) -> None:
    chosen = {name for name in ALL if matches(filter_text, to_message(payload(name), payload(name)["event"])[1])}
    if selected is None:  # branch-filtered: every fixture whose build branch is not main
        selected = {n for n in WITH_BUILD if payload(n)["build"]["branch"] != "main"}
        assert selected  # the fixtures do have non-main branches
    assert chosen == selected


@pytest.mark.parametrize("char", ["a", "é", "€", "😀", "a€😀"])
def test_long_branch_is_truncated_on_a_character_boundary(char: str) -> None:
    branch = (char * 5000)[:5000]
    body = payload("build.running")
    body["build"]["branch"] = branch
    data, attributes = to_message(body, "build.running")
    value = attributes["branch"]
    raw = value.encode("utf-8")
    assert len(raw) <= MAX_ATTRIBUTE_BYTES == 1024
    assert branch.startswith(value)
    next_char = branch[len(value)]
    assert len(raw) + len(next_char.encode("utf-8")) > 1024  # nothing more would have fitted
    assert json.loads(data)["build"]["branch"] == branch  # data keeps it whole


@pytest.mark.parametrize("field", ["state", "source"])
def test_every_attribute_is_bounded(field: str) -> None:
    body = payload("job.started")
    body["build"][field] = "€" * 2000
    body["job"]["state"] = "😀" * 2000
    body["job"]["type"] = "x" * 5000
    body["pipeline"]["slug"] = "s" * 3000
    body["pipeline"]["url"] = "https://api.buildkite.com/v2/organizations/" + "o" * 3000 + "/pipelines/x"
    _, attributes = to_message(body, "job.started")
    for key, value in attributes.items():
        assert 0 < len(value.encode("utf-8")) <= 1024, key


def test_lone_surrogates_encode_to_valid_data_that_round_trips() -> None:
    body = payload("build.finished.failed")
    body["build"]["branch"] = "bad-\ud800-branch"
    body["build"]["message"] = "\udfff first\nsecond \ud83d"
    body["pipeline"]["slug"] = "pipe-\udc80"
    data, attributes = to_message(body, "build.finished")
    data.decode("utf-8")  # strict: valid UTF-8
    for value in attributes.values():
        value.encode("utf-8")  # strict: valid UTF-8, as Pub/Sub requires
    event = parse_delivery(envelope(data, attributes))
    assert event.build is not None
    assert event.build.branch == "bad-\ufffd-branch"  # off the wire: U+FFFD, encodable everywhere
    assert event.build.message == "\ufffd first\nsecond \ufffd"
    assert event.pipeline_slug == "pipe-\ufffd"
    assert event.data["build"]["pipeline"] == "pipe-\ufffd"
    assert json.loads(event.payload)["build"]["branch"] == "bad-\ud800-branch"  # the bytes are kept as sent


def test_non_ascii_is_sent_as_utf8_not_escaped() -> None:
    body = payload("build.running")
    body["build"]["message"] = "Ünïcødé ✓ 😀"
    data, _ = to_message(body, "build.running")
    assert "Ünïcødé ✓ 😀".encode() in data


# --- build_message_data / encode_data / truncate_utf8 -----------------------------------------


def test_nested_pipeline_object_moves_to_the_top_when_missing() -> None:
    nested = {"slug": "nested", "name": "Nested"}
    body = {"event": "build.finished", "build": {"id": "b", "pipeline": nested}}
    data = build_message_data(body, "build.finished", organization="acme", pipeline_slug="nested")
    assert data["pipeline"] == nested
    assert data["build"]["pipeline"] == "nested"
    assert data["build"]["organization"] == "acme"
    assert body["build"]["pipeline"] == nested  # not mutated


def test_string_build_pipeline_and_existing_organization_are_kept() -> None:
    body = {"event": "build.finished", "build": {"id": "b", "pipeline": "mine", "organization": "org-a"}}
    data = build_message_data(body, "build.finished", organization="org-b", pipeline_slug="other")
    assert data["build"]["pipeline"] == "mine"
    assert data["build"]["organization"] == "org-a"


def test_non_object_build_is_left_alone() -> None:
    for build in (None, [], "x", 5):
        data = build_message_data({"event": "x", "build": build}, "x", organization="o", pipeline_slug="p")
        assert data["build"] == build


def test_to_message_does_not_need_a_build() -> None:
    data, attributes = to_message({"event": "ping"}, "ping")
    assert json.loads(data) == {"event_type": "ping", "event": "ping"}
    assert attributes == {"event_type": "ping", "origin": "buildkite-webhook"}


@pytest.mark.parametrize(
    "value",
    [{"a": "é"}, {"a": "\ud800"}, {"a": ["\udfff", {"b": "ok"}]}, {}, {"n": 10**40, "f": 1.5, "z": None}],
)
def test_encode_data_round_trips(value: dict[str, Any]) -> None:
    raw = encode_data(value)
    assert json.loads(raw.decode("utf-8")) == value


@pytest.mark.parametrize(
    ("value", "limit", "expected"),
    [
        ("", 10, ""),
        ("abc", 3, "abc"),
        ("abcd", 3, "abc"),
        ("é" * 3, 5, "éé"),
        ("é" * 3, 6, "ééé"),
        ("€€", 5, "€"),
        ("😀😀", 7, "😀"),
        ("😀", 3, ""),
        ("a\ud800b", 10, "a?b"),
    ],
)
def test_truncate_utf8(value: str, limit: int, expected: str) -> None:
    assert truncate_utf8(value, limit) == expected
    assert len(truncate_utf8(value, limit).encode("utf-8")) <= limit


def test_message_attributes_of_an_event_view() -> None:
    event = BuildkiteEvent(
        event_type="job.finished",
        data={"job": {"id": "j", "state": "passed", "type": "script"}, "build": {"id": "b", "number": 0}},
    )
    attributes = message_attributes(event)
    assert attributes["job_state"] == "passed" and attributes["job_type"] == "script"
    assert attributes["build_number"] == "0"
    assert "blocked" not in attributes
