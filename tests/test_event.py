"""BuildkiteEvent and its typed views (Build, Job, Agent, Pipeline), plus the time helpers they use."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from buildkite_events import BuildkiteEvent, parse_delivery
from buildkite_events.timeutil import format_duration, isoformat, parse_time, seconds_between
from tests.support import envelope, mcncl, payload, payload_names

ALL = payload_names()
BUILD_FIXTURES = [n for n in ALL if n.startswith("build.")]
JOB_FIXTURES = [n for n in ALL if n.startswith("job.")]
AGENT_FIXTURES = [n for n in ALL if n.startswith("agent.")]


def _iso(value: str | None) -> datetime | None:
    """Buildkite's '2025-06-12T03:31:07.655Z', read without the code under test."""
    if value is None:
        return None
    return datetime.strptime(value, "%Y-%m-%dT%H:%M:%S.%f%z").astimezone(UTC)


def _event(body: dict[str, Any], **push: Any) -> BuildkiteEvent:
    return parse_delivery(envelope(body, **push)) if push else parse_delivery(body)


def _org_from_fixture(body: dict[str, Any]) -> str | None:
    """The organization slug, read from the fixture the way a person would."""
    if isinstance(body.get("organization"), dict):
        return str(body["organization"]["slug"])
    for key in ("pipeline", "build", "agent"):
        url = (body.get(key) or {}).get("url") or ""
        if "/organizations/" in url:
            return str(url.split("/organizations/", 1)[1].split("/", 1)[0])
    return None


# --- kinds, identities, organization ---------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_kind_and_identity_fields_match_the_fixture(name: str) -> None:
    body = payload(name)
    event = _event(body)
    assert event.kind == body["event"].split(".")[0]
    assert event.organization == _org_from_fixture(body)
    if "pipeline" in body:
        assert event.pipeline_slug == body["pipeline"]["slug"]
        assert event.pipeline is not None
        assert event.pipeline.name == body["pipeline"]["name"]
        assert event.pipeline.provider == body["pipeline"]["provider"]["id"]
        assert event.pipeline.provider_repository == body["pipeline"]["provider"]["settings"]["repository"]
    else:
        assert event.pipeline is None and event.pipeline_slug is None
    if "build" in body:
        build = event.build
        assert build is not None
        raw = body["build"]
        assert (build.id, build.number, build.state, build.branch, build.commit) == (
            raw["id"],
            raw["number"],
            raw["state"],
            raw["branch"],
            raw["commit"],
        )
        assert build.tag == raw["tag"]
        assert build.source == raw["source"]
        assert build.web_url == raw["web_url"]
        for stamp in ("created_at", "scheduled_at", "started_at", "failing_at", "finished_at"):
            assert getattr(build, stamp) == _iso(raw[stamp]), stamp
    else:
        assert event.build is None
    if "job" in body:
        job = event.job
        assert job is not None
        assert (job.id, job.type, job.state) == (body["job"]["id"], body["job"]["type"], body["job"]["state"])
        assert job.exit_status == body["job"].get("exit_status")
    else:
        assert event.job is None
    if "agent" in body:
        agent = event.agent
        assert agent is not None
        assert (agent.id, agent.name, agent.connection_state) == (
            body["agent"]["id"],
            body["agent"]["name"],
            body["agent"]["connection_state"],
        )
        queue = [m.split("=", 1)[1] for m in body["agent"]["meta_data"] if m.startswith("queue=")]
        assert agent.queue == queue[0]
    else:
        assert event.agent is None


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        ({"organization": {"slug": "from-object"}, "pipeline": {"url": "/organizations/other/x"}}, "from-object"),
        ({"build": {"organization": "from-build", "url": "/organizations/other/x"}}, "from-build"),
        ({"pipeline": {"url": "https://api.buildkite.com/v2/organizations/acme/pipelines/p"}}, "acme"),
        ({"build": {"url": "https://api.buildkite.com/v2/organizations/acme/pipelines/p/builds/1"}}, "acme"),
        ({"agent": {"url": "https://api.buildkite.com/v2/organizations/acme/agents/a"}}, "acme"),
        ({"cluster_token": {"url": "https://api.buildkite.com/v2/organizations/acme/clusters/c/tokens/t"}}, "acme"),
        ({"pipeline": {"url": "https://api.buildkite.com/v2/organizations/acme?x=1"}}, "acme"),
        ({"pipeline": {"web_url": "https://buildkite.com/acme-web/my-pipeline"}}, "acme-web"),
        ({"build": {"web_url": "https://buildkite.com/acme-web/my-pipeline/builds/4"}}, "acme-web"),
        ({"pipeline": {"url": None, "web_url": None}, "build": {"url": 5}}, None),
        ({"pipeline": {"url": "https://example.com/no/org/here"}}, None),
        ({"pipeline": "acme"}, None),
        ({}, None),
    ],
)
def test_organization_from_urls(data: dict[str, Any], expected: str | None) -> None:
    assert BuildkiteEvent(event_type="build.finished", data=data).organization == expected


def test_pipeline_slug_fallbacks() -> None:
    slug = BuildkiteEvent(event_type="x", data={"build": {"pipeline": "from-build"}}).pipeline_slug
    assert slug == "from-build"
    nested = BuildkiteEvent(event_type="x", data={"build": {"pipeline": {"slug": "nested"}}}).pipeline_slug
    assert nested == "nested"
    top = BuildkiteEvent(event_type="x", data={"pipeline": {"slug": "top"}, "build": {"pipeline": "b"}})
    assert top.pipeline_slug == "top"
    assert BuildkiteEvent(event_type="x", data={"build": {"pipeline": ["x"]}}).pipeline_slug is None


# --- key --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_key_is_deterministic_across_redeliveries(name: str) -> None:
    body = payload(name)
    first = _event(body, message_id="1", publish_time="2025-06-12T03:40:00.000Z")
    again = _event(body, message_id="2", publish_time="2025-06-13T09:00:00.000Z")
    reordered = parse_delivery(json.dumps(dict(reversed(list(body.items())))).encode())
    assert first.key == again.key == reordered.key == _event(body).key
    assert re.fullmatch(r"[0-9a-f]{16}", first.key_hash)
    assert first.key_hash == again.key_hash
    assert body["event"] in first.key


def test_every_fixture_has_its_own_key() -> None:
    keys = {name: _event(payload(name)).key for name in ALL}
    assert len(set(keys.values())) == len(ALL), keys
    assert len({_event(payload(name)).key_hash for name in ALL}) == len(ALL)


def test_transitions_of_one_build_have_distinct_keys() -> None:
    names = ["build.scheduled", "build.running", "build.finished.passed"]
    builds = {payload(n)["build"]["id"] for n in names}
    assert len(builds) == 1  # the same build, three transitions
    assert len({_event(payload(n)).key for n in names}) == 3


def test_transitions_of_one_job_have_distinct_keys() -> None:
    names = ["job.scheduled", "job.started", "job.finished.failed"]
    assert len({payload(n)["job"]["id"] for n in names}) == 1
    assert len({_event(payload(n)).key for n in names}) == 3


def test_agent_transitions_have_distinct_keys() -> None:
    assert len({payload(n)["agent"]["id"] for n in AGENT_FIXTURES}) == 1
    assert len({_event(payload(n)).key for n in AGENT_FIXTURES}) == len(AGENT_FIXTURES)


def test_blocked_then_unblocked_finish_of_one_build_differ() -> None:
    blocked = payload("build.finished.blocked")
    unblocked = json.loads(json.dumps(blocked))
    unblocked["build"].update(blocked=False, blocked_state="", finished_at="2025-06-12T04:30:00.000Z")
    assert _event(blocked).key != _event(unblocked).key
    # Only the blocked flag differs: still a different transition.
    flag_only = json.loads(json.dumps(blocked))
    flag_only["build"]["blocked"] = False
    assert _event(blocked).key != _event(flag_only).key


def test_build_key_is_the_same_from_mcncl_and_from_our_ingress() -> None:
    """mcncl/buildkite-pubsub drops blocked and failing_at: the key must not depend on them."""
    ours = parse_delivery(envelope(payload("build.finished.failed")))
    data, attributes = mcncl("build.finished.failed")
    assert parse_delivery(envelope(data, attributes)).key == ours.key


@pytest.mark.parametrize("field", ["state", "started_at", "finished_at"])
def test_build_key_changes_with_each_transition_field(field: str) -> None:
    body = payload("build.finished.failed")
    changed = json.loads(json.dumps(body))
    changed["build"][field] = "2030-01-01T00:00:00.000Z" if field.endswith("_at") else "canceled"
    assert _event(body).key != _event(changed).key


def test_key_of_two_jobs_in_one_build_differ() -> None:
    first = payload("job.finished.failed")
    second = json.loads(json.dumps(first))
    second["job"]["id"] = "01976231-ffff-4011-85cf-f156cf57f41d"
    assert _event(first).key != _event(second).key


def test_builds_without_id_are_told_apart_by_pipeline_and_number() -> None:
    def body(slug: str, number: int) -> dict[str, Any]:
        return {"event": "build.finished", "pipeline": {"slug": slug}, "build": {"number": number, "state": "passed"}}

    keys = {_event(body(s, n)).key for s in ("a", "b") for n in (1, 2)}
    assert len(keys) == 4
    assert _event(body("a", 1)).key == _event(body("a", 1)).key


def test_ping_key_is_the_body_and_ignores_how_it_arrived() -> None:
    ping = payload("ping")
    assert _event(ping).key == _event(ping, message_id="x").key
    other = json.loads(json.dumps(ping))
    other["service"]["settings"]["url"] = "https://elsewhere.example/hook"
    assert _event(other).key != _event(ping).key


def test_key_hash_of_lone_surrogates() -> None:
    event = BuildkiteEvent(event_type="ping", data={"event": "ping", "x": "\ud800"})
    assert re.fullmatch(r"[0-9a-f]{16}", event.key_hash)


# --- occurred_at ------------------------------------------------------------------------------

OWN_TIMESTAMP = {
    "build.scheduled": ("build", "scheduled_at"),
    "build.running": ("build", "started_at"),
    "build.failing": ("build", "failing_at"),
    "build.finished": ("build", "finished_at"),
    "build.skipped": ("build", "finished_at"),
    "job.scheduled": ("job", "runnable_at"),
    "job.started": ("job", "started_at"),
    "job.finished": ("job", "finished_at"),
    "job.activated": ("job", "unblocked_at"),
    "agent.connected": ("agent", "connected_at"),
    "agent.disconnected": ("agent", "disconnected_at"),
    "agent.lost": ("agent", "lost_at"),
}


def _occurred_cases() -> list[Any]:
    cases = []
    for name in ALL:
        event_type = payload(name)["event"]
        if event_type in OWN_TIMESTAMP:
            cases.append(pytest.param(name, id=name))
    return cases


@pytest.mark.parametrize("name", _occurred_cases())
def test_occurred_at_is_the_time_of_the_transition(name: str) -> None:
    body = payload(name)
    obj, field = OWN_TIMESTAMP[body["event"]]
    expected = _iso(body[obj][field])
    assert expected is not None
    assert _event(body).occurred_at == expected
    assert _event(body, message_id="x", publish_time="2030-01-01T00:00:00.000Z").occurred_at == expected


def test_occurred_at_falls_back_to_publish_time() -> None:
    publish = "2025-06-12T03:40:00.500Z"
    for name in ("ping",):
        assert _event(payload(name), message_id="m", publish_time=publish).occurred_at == _iso(publish)
        assert _event(payload(name)).occurred_at is None
    build = payload("build.scheduled")
    for stamp in ("created_at", "scheduled_at", "started_at", "failing_at", "finished_at"):
        build["build"][stamp] = None
    assert _event(build, message_id="m", publish_time=publish).occurred_at == _iso(publish)
    assert _event(build).occurred_at is None


def test_occurred_at_of_a_build_falls_back_through_earlier_stamps() -> None:
    body = payload("build.finished.failed")
    body["build"]["finished_at"] = None
    assert _event(body).occurred_at == _iso(body["build"]["failing_at"])
    body["build"]["failing_at"] = None
    assert _event(body).occurred_at == _iso(body["build"]["started_at"])
    body["build"]["started_at"] = "garbage"
    assert _event(body).occurred_at == _iso(body["build"]["scheduled_at"])


# --- build views ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", BUILD_FIXTURES + JOB_FIXTURES)
def test_blocked_and_effective_state_from_fixtures(name: str) -> None:
    raw = payload(name)["build"]
    build = _event(payload(name)).build
    assert build is not None
    expected_blocked = raw["blocked"] is True or raw["state"] == "blocked"
    assert build.is_blocked is expected_blocked
    failed = raw["state"] == "failed" or (expected_blocked and raw["blocked_state"] == "failed")
    assert build.effective_state == ("failed" if failed else "blocked" if expected_blocked else raw["state"])
    assert build.is_finished is (raw["finished_at"] is not None)


def test_blocked_fixture_keeps_its_state_but_reads_blocked() -> None:
    build = _event(payload("build.finished.blocked")).build
    assert build is not None
    assert build.state == "passed" and build.blocked is True and build.blocked_state == "passed"
    assert build.is_blocked and build.effective_state == "blocked"


def test_a_build_its_block_step_set_to_failed_is_a_failure() -> None:
    build = _event(payload("build.finished.blocked.failed")).build
    assert build is not None
    assert build.state == "passed" and build.blocked is True and build.blocked_state == "failed"
    assert build.is_blocked and build.effective_state == "failed"


# (blocked, state, blocked_state, is_blocked, verdict): the one definition of a build's verdict.
VERDICTS = [
    (True, "passed", "passed", True, "blocked"),
    (True, "passed", "running", True, "blocked"),
    (True, "passed", "failed", True, "failed"),  # the block step set the build to failed
    (True, "failed", "failed", True, "failed"),
    (True, "failed", "passed", True, "failed"),
    (True, "failed", None, True, "failed"),
    (True, "passed", None, True, "blocked"),
    ("true", "passed", "", True, "blocked"),
    ("TRUE", "passed", "failed", True, "failed"),
    (False, "blocked", None, True, "blocked"),  # notification convention
    (None, "blocked", "failed", True, "failed"),
    (False, "passed", "failed", False, "passed"),  # blocked_state only counts while blocked
    (False, "failed", "", False, "failed"),
    ("false", "passed", "", False, "passed"),
    (None, None, None, False, None),
]


@pytest.mark.parametrize(("blocked", "state", "blocked_state", "is_blocked", "effective"), VERDICTS)
def test_both_blocked_conventions(
    blocked: Any, state: str | None, blocked_state: str | None, is_blocked: bool, effective: str | None
) -> None:
    data = {"build": {"id": "b", "blocked": blocked, "state": state, "blocked_state": blocked_state}}
    event = BuildkiteEvent(event_type="build.finished", data=data)
    assert event.build is not None
    assert event.build.is_blocked is is_blocked
    assert event.build.effective_state == effective


@pytest.mark.parametrize("name", BUILD_FIXTURES)
def test_message_title_from_fixture(name: str) -> None:
    message = payload(name)["build"]["message"]
    build = _event(payload(name)).build
    assert build is not None
    lines = [line.strip() for line in message.split("\n") if line.strip()]
    assert build.message_title == lines[0]
    assert "\n" not in (build.message_title or "")


@pytest.mark.parametrize(
    ("message", "title"),
    [
        ("\n\n   Fix: the thing  \n\nlong body", "Fix: the thing"),
        ("one line", "one line"),
        ("   \n\t\n", None),
        ("", None),
        (None, None),
        (42, "42"),
        ("windows\r\nline endings", "windows"),
    ],
)
def test_message_title(message: Any, title: str | None) -> None:
    build = BuildkiteEvent(event_type="build.finished", data={"build": {"id": "b", "message": message}}).build
    assert build is not None
    assert build.message_title == title


@pytest.mark.parametrize(
    ("commit", "short"),
    [
        ("b7c3e2d94f1a60c58e2d7f3a9b4c1e0d6f8a2b3c", "b7c3e2d"),
        ("HEAD", "HEAD"),
        ("main", "main"),
        ("abc", "abc"),
        (None, None),
        ("", None),
    ],
)
def test_short_commit(commit: str | None, short: str | None) -> None:
    build = BuildkiteEvent(event_type="build.finished", data={"build": {"id": "b", "commit": commit}}).build
    assert build is not None
    assert build.short_commit == short


def test_short_commit_of_ui_build_fixture_is_head() -> None:
    body = payload("build.finished.canceled")
    assert body["build"]["commit"] == "HEAD"
    build = _event(body).build
    assert build is not None and build.short_commit == "HEAD"


@pytest.mark.parametrize("name", BUILD_FIXTURES)
def test_build_durations(name: str) -> None:
    raw = payload(name)["build"]
    build = _event(payload(name)).build
    assert build is not None
    started, finished, scheduled = _iso(raw["started_at"]), _iso(raw["finished_at"]), _iso(raw["scheduled_at"])
    if started and finished:
        assert build.duration_seconds == pytest.approx((finished - started).total_seconds(), abs=1e-3)
    else:
        assert build.duration_seconds is None
    if started and scheduled:
        assert build.wait_seconds == pytest.approx((started - scheduled).total_seconds(), abs=1e-3)
    else:
        assert build.wait_seconds is None


def test_build_of_a_zeroed_or_empty_object_is_none() -> None:
    for data in ({}, {"id": "", "number": 0}, {"state": "passed", "branch": "main"}, None, [], "b"):
        assert BuildkiteEvent(event_type="build.finished", data={"build": data}).build is None
    assert BuildkiteEvent(event_type="x", data={"build": {"number": 7}}).build is not None
    assert BuildkiteEvent(event_type="x", data={"build": {"id": "b"}}).build is not None


def test_rebuilt_from_and_creator() -> None:
    data = {
        "build": {
            "id": "b",
            "rebuilt_from": {"id": "a", "number": "2040", "url": "u"},
            "creator": {"id": "u-1", "name": "Keith", "email": "k@example.com"},
        }
    }
    build = BuildkiteEvent(event_type="build.running", data=data).build
    assert build is not None
    assert build.rebuilt_from_number == 2040
    assert build.creator is not None and (build.creator.id, build.creator.display) == ("u-1", "Keith")


# --- job views --------------------------------------------------------------------------------


@pytest.mark.parametrize("name", JOB_FIXTURES)
def test_job_from_fixture(name: str) -> None:
    raw = payload(name)["job"]
    job = _event(payload(name)).job
    assert job is not None
    assert job.name == (raw.get("name") or raw.get("label"))
    rules = raw.get("agent_query_rules") or []
    queues = [r.split("=", 1)[1] for r in rules if r.startswith("queue=")]
    assert job.queue == (queues[0] if queues else None)
    started, finished = _iso(raw["started_at"]), _iso(raw["finished_at"])
    ready = _iso(raw.get("runnable_at")) or _iso(raw.get("scheduled_at"))
    if started and finished:
        assert job.run_seconds == pytest.approx((finished - started).total_seconds(), abs=1e-3)
    else:
        assert job.run_seconds is None
    if started and ready:
        assert job.wait_seconds == pytest.approx((started - ready).total_seconds(), abs=1e-3)
    else:
        assert job.wait_seconds is None
    retry = raw.get("retry_type") or (raw.get("retry_source") or {}).get("retry_type")
    assert job.retry_type == retry
    assert job.soft_failed is (raw.get("soft_failed") is True)
    if raw.get("agent"):
        assert job.agent is not None and job.agent.id == raw["agent"]["id"]


def test_block_step_uses_label_for_its_name() -> None:
    raw = payload("job.activated")["job"]
    assert raw.get("name") is None and raw["label"]
    job = _event(payload("job.activated")).job
    assert job is not None and job.name == raw["label"] and job.type == "manual"


@pytest.mark.parametrize(
    ("job", "name", "queue"),
    [
        ({"id": "j", "name": "Name", "label": "Label"}, "Name", None),
        ({"id": "j", "name": "", "label": "Label"}, "Label", None),
        ({"id": "j", "agent_query_rules": ["os=linux", "queue=deploy"]}, None, "deploy"),
        ({"id": "j", "agent_query_rules": {"queue": "mapped"}}, None, "mapped"),
        (
            {"id": "j", "agent_query_rules": ["queue="], "agent": {"id": "a", "meta_data": ["queue=agent-q"]}},
            None,
            "agent-q",
        ),
        ({"id": "j", "agent_query_rules": [], "agent": {"id": "a", "meta_data": {"queue": "meta"}}}, None, "meta"),
        ({"id": "j", "agent_query_rules": ["queued=x", 5, None]}, None, None),
        ({"id": "j", "agent_query_rules": "queue=str"}, None, None),
    ],
)
def test_job_name_and_queue(job: dict[str, Any], name: str | None, queue: str | None) -> None:
    view = BuildkiteEvent(event_type="job.started", data={"job": job}).job
    assert view is not None
    assert (view.name, view.queue) == (name, queue)


def test_job_retry_type_from_retry_source() -> None:
    data = {"job": {"id": "j", "retry_type": None, "retry_source": {"retry_type": "manual", "job_id": "i"}}}
    job = BuildkiteEvent(event_type="job.finished", data=data).job
    assert job is not None and job.retry_type == "manual"


def test_job_without_id_is_none() -> None:
    assert BuildkiteEvent(event_type="job.started", data={"job": {"name": "x"}}).job is None


# --- log fields -------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ALL)
def test_log_fields(name: str) -> None:
    body = payload(name)
    event = _event(body, message_id="m-1", publish_time="2025-06-12T03:40:00.000Z")
    fields = event.log_fields()
    assert fields["event_type"] == body["event"]
    assert fields["event_key"] == event.key_hash
    assert fields["message_id"] == "m-1"
    assert fields.get("organization") == _org_from_fixture(body)
    assert fields.get("pipeline") == (body.get("pipeline") or {}).get("slug")
    assert fields.get("build_number") == (body.get("build") or {}).get("number")
    assert fields.get("build_id") == (body.get("build") or {}).get("id")
    assert None not in fields.values()
    json.dumps(fields)


# --- timeutil ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-06-12T03:31:07.655Z", datetime(2025, 6, 12, 3, 31, 7, 655000, tzinfo=UTC)),
        ("2025-06-12T03:31:07Z", datetime(2025, 6, 12, 3, 31, 7, tzinfo=UTC)),
        ("2025-06-12T13:31:07.655+10:00", datetime(2025, 6, 12, 3, 31, 7, 655000, tzinfo=UTC)),
        ("2025-06-12T03:31:07", datetime(2025, 6, 12, 3, 31, 7, tzinfo=UTC)),
        ("2013-09-03 13:24:38 UTC", datetime(2013, 9, 3, 13, 24, 38, tzinfo=UTC)),
        ("  2025-06-12T03:31:07Z  ", datetime(2025, 6, 12, 3, 31, 7, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("0001-06-01T00:00:00Z", None),
        ("not a time", None),
        ("2025-13-45T99:99:99Z", None),
        ("", None),
        (None, None),
        (1749699373, None),
        ("2025-06-12T03:31:07Z" + " " * 60, None),
        (["2025-06-12T03:31:07Z"], None),
    ],
)
def test_parse_time(text: Any, expected: datetime | None) -> None:
    parsed = parse_time(text)
    assert parsed == expected
    if parsed is not None:
        assert parsed.utcoffset() == timedelta(0)


def test_isoformat_renders_like_buildkite() -> None:
    assert isoformat(None) is None
    assert isoformat(datetime(2025, 6, 12, 3, 31, 7, 655321, tzinfo=UTC)) == "2025-06-12T03:31:07.655Z"
    plus_ten = datetime(2025, 6, 12, 13, 31, 7, tzinfo=timezone(timedelta(hours=10)))
    assert isoformat(plus_ten) == "2025-06-12T03:31:07.000Z"
    for name in BUILD_FIXTURES:
        raw = payload(name)["build"]["created_at"]
        assert isoformat(parse_time(raw)) == raw


def test_seconds_between() -> None:
    start = datetime(2025, 1, 1, tzinfo=UTC)
    assert seconds_between(start, start + timedelta(seconds=90, milliseconds=250)) == 90.25
    assert seconds_between(start + timedelta(seconds=5), start) == -5.0
    assert seconds_between(None, start) is None
    assert seconds_between(start, None) is None


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(3725.4, "1h2m5s"), (3600, "1h0m0s"), (65, "1m5s"), (59.99, "59s"), (0, "0s"), (-1, None), (None, None)],
)
def test_format_duration(seconds: float | None, text: str | None) -> None:
    assert format_duration(seconds) == text
