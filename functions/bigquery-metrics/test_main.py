"""bigquery-metrics on bqemulator with the official client: every event in events_raw, builds and jobs
rows, null-safety, redelivery, failures."""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from buildkite_events import Nack, parse_delivery
from buildkite_events.filters import parse_filter
from buildkite_events.message import message_attributes
from tests.support import (
    cloud_event,
    envelope,
    fresh_first_delivery,
    load_function,
    log_lines,
    mcncl,
    outcomes,
    payload,
    payload_names,
)
from tools.bigquery import bigquery_client, metrics_rows, table_specs
from tools.local import emulators
from tools.local.emulators import Service
from tools.local.standin import Fault, Recorded, Reply, StandIn
from tools.manifests import manifest

metrics = load_function("bigquery-metrics")
ROWS = metrics_rows()  # the row builders beside main.py, the module main.py itself imports
TYPED_EVENTS = {"build.finished", "build.skipped", "job.finished"}
SCHEMAS = table_specs()


def _reset() -> None:
    metrics.store_build_metrics.instance.reset()  # config is read once per instance: be a new one
    sys.modules[metrics.insert_rows.__module__]._session.cache_clear()  # bigquery_insert, beside main.py
    metrics._written.clear()


@pytest.fixture
def dataset(
    bigquery_dataset: str, bigquery_emulator: Service, firestore: Any, monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """The function pointed at a fresh dataset on the emulator, with an empty Firestore."""
    monkeypatch.setenv("BIGQUERY_TABLE", f"{bigquery_dataset}.builds")
    monkeypatch.delenv("BIGQUERY_JOBS_TABLE", raising=False)
    monkeypatch.setenv("BIGQUERY_API_URL", bigquery_emulator.url)
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "2")
    _reset()
    yield bigquery_dataset
    _reset()


def deliver(push: dict[str, Any]) -> None:
    metrics.store_build_metrics(cloud_event(push))


def select(dataset: str, table: str, where: str = "TRUE") -> list[dict[str, Any]]:
    sql = f"SELECT * FROM `{dataset}.{table}` WHERE {where}"  # noqa: S608 - names the test made
    job = bigquery_client(dataset.split(".")[0], _api_url()).query(sql, job_retry=None, timeout=30)
    return [dict(row.items()) for row in job.result(timeout=60)]


def _api_url() -> str:
    return os.environ["BIGQUERY_API_URL"]


def ts(text: str) -> datetime:
    return datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(UTC)


# --- every fixture -----------------------------------------------------------------


@pytest.mark.parametrize("name", payload_names())
def test_every_fixture_lands_in_events_raw_and_its_typed_table_once(dataset: str, name: str, capsys: Any) -> None:
    body = payload(name)
    push = envelope(body, message_id=f"m-{name}")
    deliver(push)
    deliver(push)  # redelivery

    builds, jobs = select(dataset, "builds"), select(dataset, "jobs")
    event = parse_delivery(push)
    assert outcomes(capsys) == ["done", "duplicate"]
    (raw,) = select(dataset, "events_raw")
    assert (raw["event_type"], raw["event_key"], raw["message_id"]) == (body["event"], event.key_hash, f"m-{name}")
    assert raw["payload"] == json.loads(event.payload)  # the message body, whole
    assert {k: v for k, v in raw["payload"].items() if k not in ("event_type", "build")} == {
        k: v for k, v in body.items() if k != "build"
    }
    assert raw["occurred_at"] == event.occurred_at
    if body["event"] not in TYPED_EVENTS:
        assert (builds, jobs) == ([], [])
        return
    if event.kind == "build":
        assert jobs == []
        (row,) = builds
        assert row["build_id"] == body["build"]["id"]
        assert row["number"] == body["build"]["number"]
        assert row["state"] == body["build"]["state"]
        assert row["finished_at"] == ts(body["build"]["finished_at"])
    else:
        assert builds == []
        (row,) = jobs
        assert row["job_id"] == body["job"]["id"]
        assert row["build_id"] == body["build"]["id"]
        assert row["state"] == body["job"]["state"]
    assert row["event_type"] == body["event"]
    assert row["event_key"] == event.key_hash
    assert row["message_id"] == f"m-{name}"
    assert row["publish_time"] == ts("2025-06-12T03:40:00Z")


def test_a_failed_build_row_has_every_column(dataset: str) -> None:
    deliver(envelope(payload("build.finished.failed")))
    (row,) = select(dataset, "builds")
    inserted = row.pop("inserted_at")
    assert isinstance(inserted, datetime)
    assert row == {
        "build_id": "01976230-e966-4d3e-a32e-520a9c211ecd",
        "organization": "my-great-org",
        "pipeline_slug": "my-pipeline",
        "pipeline_name": "My Pipeline",
        "default_branch": "main",
        "number": 2042,
        "state": "failed",
        "blocked": False,
        "blocked_state": None,
        "branch": "main",
        "tag": None,
        "commit": "b7c3e2d94f1a60c58e2d7f3a9b4c1e0d6f8a2b3c",
        "source": "webhook",
        "message": "Refactor session store",
        "creator": "Keith Pitt",
        "author": "Keith Pitt",
        "pull_request_id": None,
        "pull_request_base": None,
        "rebuilt_from_number": None,
        "cancel_reason": None,
        "web_url": "https://buildkite.com/my-great-org/my-pipeline/builds/2042",
        "created_at": ts("2025-06-12T03:31:02.118Z"),
        "scheduled_at": ts("2025-06-12T03:31:02.064Z"),
        "started_at": ts("2025-06-12T03:31:07.655Z"),
        "finished_at": ts("2025-06-12T03:36:12.430Z"),
        "wait_seconds": pytest.approx(5.591),
        "duration_seconds": pytest.approx(304.775),
        "event_type": "build.finished",
        "event_key": parse_delivery(envelope(payload("build.finished.failed"))).key_hash,
        "message_id": "1000",
        "publish_time": ts("2025-06-12T03:40:00Z"),
        "source_format": "buildkite",
    }


def test_job_rows_carry_queue_agent_retry_and_timings(dataset: str) -> None:
    deliver(envelope(payload("job.finished.failed"), message_id="1"))
    deliver(envelope(payload("job.finished.passed.auto-retry"), message_id="2"))
    rows = {row["step_key"]: row for row in select(dataset, "jobs")}
    failed, retry = rows["rspec"], rows["features"]
    assert failed["job_type"] == "script"
    assert failed["name"] == ":rspec: RSpec"
    assert (failed["state"], failed["exit_status"], failed["soft_failed"]) == ("failed", 1, False)
    assert (failed["queue"], failed["agent_name"]) == ("default", "ip-10-0-3-17-1")
    assert (failed["pipeline_slug"], failed["branch"], failed["build_number"]) == ("my-pipeline", "main", 2042)
    assert failed["wait_seconds"] == pytest.approx(2.857)  # runnable → started
    assert failed["run_seconds"] == pytest.approx(267.025)
    assert (failed["retried"], failed["retries_count"], failed["retry_type"]) == (False, None, None)
    assert failed["runnable_at"] == ts("2025-06-12T03:31:11.020Z")
    assert (retry["retries_count"], retry["retry_type"]) == (1, "automatic")
    assert retry["retry_source_job_id"] == "01976231-09c5-4d7c-9dc1-aeba69afb3be"
    assert retry["state"] == "passed"
    # The code failed, not the machine; a job that passed has no failure cause.
    assert (failed["signal"], failed["signal_reason"], failed["failure_cause"]) == (None, None, "command")
    assert failed["infrastructure_failure"] is False
    assert (retry["failure_cause"], retry["infrastructure_failure"]) == (None, None)


@pytest.mark.parametrize(
    ("job", "cause", "infrastructure"),
    [
        ({"exit_status": -1}, "agent_lost", True),
        ({"exit_status": 143, "signal": "SIGTERM", "signal_reason": "agent_stop"}, "agent_stopped", True),
        ({"exit_status": 255}, "agent_stopped", True),
        ({"exit_status": -1, "signal_reason": "agent_refused"}, "agent_refused", True),
        ({"exit_status": -1, "signal_reason": "agent_incompatible"}, "agent_refused", True),
        ({"exit_status": -1, "signal_reason": "stack_error"}, "stack_error", True),
        ({"exit_status": -1, "signal_reason": "process_run_error"}, "process_run_error", True),
        ({"exit_status": -1, "signal_reason": "signature_rejected"}, "signature_rejected", False),
        ({"state": "expired", "exit_status": None}, "expired", True),
        ({"exit_status": 137, "signal": "SIGKILL"}, "signal", False),
        ({"exit_status": -1, "signal": "SIGTERM", "signal_reason": "cancel"}, "timed_out", False),
        ({"state": "timed_out", "exit_status": -1}, "timed_out", False),
        ({"state": "canceled", "exit_status": -1, "signal_reason": "cancel"}, "canceled", False),
        ({"exit_status": 2}, "command", False),
        ({"state": "broken", "exit_status": None}, None, None),
        ({"state": "passed", "exit_status": 0}, None, None),
    ],
    ids=lambda value: str(value) if not isinstance(value, dict) else "-".join(f"{v}" for v in value.values()),
)
def test_failure_cause_tells_the_machine_from_the_code(job: dict[str, Any], cause: str, infrastructure: bool) -> None:
    """Buildkite's exit status -1 (agent lost), 255 (agent terminated) and signal reasons (retry docs)."""
    body = payload("job.finished.failed")
    body["job"] |= {"state": "failed", "signal": None, "signal_reason": None} | job
    row = ROWS.rows_for(parse_delivery(body)).tables["jobs"]
    assert (row["failure_cause"], row["infrastructure_failure"]) == (cause, infrastructure)
    assert (row["signal"], row["signal_reason"]) == (job.get("signal"), job.get("signal_reason"))


def test_jobs_and_events_tables_default_to_beside_the_builds_table(dataset: str, monkeypatch: Any) -> None:
    config = metrics.Config(builds_table="proj.metrics.build_rows")
    assert (config.jobs_table_id, config.events_table_id) == ("proj.metrics.jobs", "proj.metrics.events_raw")
    assert metrics.Config(builds_table="a.b.c", jobs_table="x.y.z").jobs_table_id == "x.y.z"
    assert metrics.Config(builds_table="a.b.c", events_table="x.y.raw").table_id("events_raw") == "x.y.raw"
    assert metrics.Config(builds_table="example.com:proj.metrics.builds").jobs_table_id == (
        "example.com:proj.metrics.jobs"
    )


# --- null-safety ---------------------------------------------------------------------


def test_build_canceled_before_it_started_has_no_duration(dataset: str) -> None:
    deliver(envelope(payload("build.finished.canceled")))
    (row,) = select(dataset, "builds")
    assert (row["state"], row["started_at"], row["duration_seconds"], row["wait_seconds"]) == (
        "canceled",
        None,
        None,
        None,
    )
    assert row["cancel_reason"] == "reason for a canceled build"
    assert (row["commit"], row["source"], row["author"], row["creator"]) == ("HEAD", "ui", None, "Keith Pitt")


def test_skipped_build_is_a_row_without_start(dataset: str) -> None:
    deliver(envelope(payload("build.skipped")))
    (row,) = select(dataset, "builds")
    assert (row["state"], row["event_type"], row["started_at"], row["creator"]) == (
        "skipped",
        "build.skipped",
        None,
        None,
    )
    assert row["finished_at"] == ts("2025-06-12T05:00:09.845Z")
    assert row["author"] == "Alice Nguyen"


def test_blocked_build_keeps_its_state_and_says_blocked(dataset: str, capsys: Any) -> None:
    deliver(envelope(payload("build.finished.blocked")))
    (row,) = select(dataset, "builds")
    assert (row["state"], row["blocked"], row["blocked_state"]) == ("passed", True, "passed")
    assert (row["duration_seconds"], row["wait_seconds"]) == (pytest.approx(349.888), pytest.approx(4.863))
    (line,) = [line for line in capsys.readouterr().out.splitlines() if '"outcome"' in line]
    assert "(passed, blocked)" in json.loads(line)["message"]


def test_mcncl_build_message_is_stored_with_what_it_carries(dataset: str) -> None:
    data, attributes = mcncl("build.finished.failed")
    deliver(envelope(data, attributes))
    (row,) = select(dataset, "builds")
    assert (row["source_format"], row["pipeline_slug"], row["organization"]) == ("mcncl", "my-pipeline", "my-great-org")
    assert (row["state"], row["number"], row["duration_seconds"]) == ("failed", 2042, pytest.approx(304.775))
    assert row["default_branch"] is None  # mcncl drops it; the queries fall back to "main"


def test_pull_request_rebuild_and_bare_email_author(dataset: str) -> None:
    body = payload("build.finished.passed")
    body["build"] |= {
        "pull_request": {"id": "123", "base": "main", "repository": "git://github.com/x/y.git"},
        "rebuilt_from": {"id": "abc", "number": 2040, "url": "https://api.buildkite.com/x"},
        "author": "dev@example.com",
        "message": "\n\n  First real line  \nsecond line",
        "tag": "v2.4.0",
    }
    deliver(envelope(body))
    (row,) = select(dataset, "builds")
    assert (row["pull_request_id"], row["pull_request_base"], row["rebuilt_from_number"]) == ("123", "main", 2040)
    assert (row["author"], row["message"], row["tag"]) == ("dev@example.com", "First real line", "v2.4.0")


def test_build_with_nothing_but_an_id_is_stored_with_nulls(dataset: str) -> None:
    body = {"event": "build.finished", "build": {"id": "only-an-id", "number": "not a number", "started_at": 42}}
    deliver(envelope(body))
    (row,) = select(dataset, "builds")
    assert row["build_id"] == "only-an-id"
    assert all(row[k] is None for k in ("number", "state", "started_at", "finished_at", "duration_seconds", "branch"))
    assert row["blocked"] is False


def test_job_without_timestamps_or_agent_and_a_block_step_label(dataset: str) -> None:
    body = payload("job.activated")  # a manual (block) step: label, no name, no agent, no times
    body["event"] = "job.finished"
    deliver(envelope(body))
    (row,) = select(dataset, "jobs")
    assert (row["job_type"], row["name"], row["state"]) == ("manual", ":rocket: Deploy to production", "unblocked")
    assert all(row[k] is None for k in ("agent_name", "queue", "exit_status", "run_seconds", "wait_seconds"))


@pytest.mark.parametrize(
    "body",
    [
        {"event": "build.finished", "build": {"number": 5}},  # no build id
        {"event": "build.finished"},
        {"event": "job.finished", "build": {"id": "b"}},  # no job (mcncl drops it)
        {"event": "job.finished", "job": {"name": "no id"}},
    ],
    ids=["build-without-id", "no-build", "job-dropped", "job-without-id"],
)
def test_events_without_what_a_typed_row_needs_are_kept_raw_only(dataset: str, body: Any, capsys: Any) -> None:
    deliver(envelope(body))
    lines = [line for line in log_lines(capsys.readouterr().out) if "outcome" in line]
    assert [line["outcome"] for line in lines] == ["done"]
    assert "in events_raw; no" in lines[0]["message"]
    assert select(dataset, "builds") == select(dataset, "jobs") == []
    (raw,) = select(dataset, "events_raw")
    assert raw["payload"]["event"] == body["event"]


def test_an_mcncl_job_event_is_kept_raw_though_it_carries_no_job(dataset: str, capsys: Any) -> None:
    data, attributes = mcncl("build.finished.failed")
    message = json.loads(data)
    message["event_type"] = message["raw_payload"]["event"] = "job.finished"
    deliver(envelope(json.dumps(message).encode(), attributes | {"event_type": "job.finished"}))
    assert outcomes(capsys) == ["done"]
    assert select(dataset, "jobs") == []
    (raw,) = select(dataset, "events_raw")
    assert (raw["source_format"], raw["event_type"], raw["pipeline_slug"]) == ("mcncl", "job.finished", "my-pipeline")


def test_every_event_kind_lands_in_events_raw_with_what_identifies_it(dataset: str) -> None:
    names = ["agent.lost", "job.started", "ping", "build.running"]
    for index, name in enumerate(names):
        deliver(envelope(payload(name), message_id=str(index)))
    body = {"event": "cluster_token.registration_blocked", "blocked_ip": "203.0.113.9", "cluster_token": {"id": "t"}}
    deliver(envelope(body, message_id="9"))
    deliver(envelope({"event": "pipeline.future_event", "thing": {"id": 1}}, message_id="10"))
    rows = {row["event_type"]: row for row in select(dataset, "events_raw")}
    assert set(rows) == {*(payload(n)["event"] for n in names), body["event"], "pipeline.future_event"}
    lost, started = rows["agent.lost"], rows["job.started"]
    assert (lost["agent_name"], lost["queue"], lost["state"]) == ("ip-10-0-3-17-1", "default", "lost")
    assert lost["occurred_at"] == ts("2025-06-12T07:42:18.004Z")
    assert (started["job_id"], started["build_number"], started["state"]) == (
        payload("job.started")["job"]["id"],
        2042,
        "running",
    )
    assert rows["cluster_token.registration_blocked"]["payload"]["blocked_ip"] == "203.0.113.9"
    assert rows["pipeline.future_event"]["payload"]["thing"] == {"id": 1}
    assert select(dataset, "builds") == select(dataset, "jobs") == []


# --- rows match the schema files exactly (the emulator would drop an unknown field) -----


_JSON_TYPES: dict[str, tuple[type, ...]] = {
    "JSON": (str,),  # JSON text: the insertAll form the official client sends for a JSON column
    "STRING": (str,),
    "INTEGER": (int,),
    "FLOAT": (int, float),
    "BOOLEAN": (bool,),
    "TIMESTAMP": (str,),
}


def _assert_matches_schema(row: dict[str, Any], table: str) -> None:
    fields = {f["name"]: f for f in SCHEMAS[table]["fields"]}
    assert set(row) == set(fields), f"row and schemas/bigquery/{table}.json differ"
    for name, value in row.items():
        field = fields[name]
        if value is None:
            assert field.get("mode", "NULLABLE") != "REQUIRED", f"{table}.{name} is REQUIRED but null"
            continue
        assert isinstance(value, _JSON_TYPES[field["type"]]), f"{table}.{name}: {value!r} is not {field['type']}"
        if field["type"] in ("INTEGER", "FLOAT"):
            assert not isinstance(value, bool)
        if field["type"] == "TIMESTAMP":
            assert datetime.fromisoformat(str(value).replace("Z", "+00:00")).tzinfo is not None
        if field["type"] == "JSON":
            json.loads(str(value))


@pytest.mark.parametrize("name", payload_names())
def test_rows_have_exactly_the_schema_columns_and_types(name: str) -> None:
    tables = ROWS.rows_for(parse_delivery(envelope(payload(name)))).tables
    assert set(tables) == {"events_raw", *([TYPED[payload(name)["event"]]] if payload(name)["event"] in TYPED else [])}
    for table, row in tables.items():
        _assert_matches_schema(row, table)


TYPED = {"build.finished": "builds", "build.skipped": "builds", "job.finished": "jobs"}


def test_synthetic_history_rows_match_the_schema_too() -> None:
    from tools.ops.report.history import synthetic_history
    from tools.ops.report.seed import seed_rows

    seeded = seed_rows(synthetic_history(days=2, seed=11))
    assert set(seeded.tables) == {"builds", "jobs", "events_raw"}
    for table, written in seeded.tables.items():
        for _, row in written:
            _assert_matches_schema(row, table)


def nested(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"x": value}
    return value


@pytest.mark.parametrize(
    ("value", "kept_as_text"),
    [
        ({"a": [1, 2.5, None, True, "é"]}, False),
        ({"big": 2**63 - 1, "unsigned": 2**64 - 1}, False),
        ({"too big": 2**64}, True),
        ({"not a number": float("nan")}, True),
        ({"inf": float("inf")}, True),
        (nested(500), False),  # BigQuery's limit
        (nested(501), True),
    ],
    ids=["plain", "64-bit", "past-64-bit", "nan", "infinity", "500-deep", "501-deep"],
)
def test_a_body_bigquery_json_cannot_hold_is_kept_as_one_json_string(value: Any, kept_as_text: bool) -> None:
    text = ROWS.json_payload(value)
    stored = json.loads(text)
    assert isinstance(stored, str) is kept_as_text
    assert json.dumps(json.loads(stored) if kept_as_text else stored) == json.dumps(value)


def test_schema_files_partition_by_day_and_cluster_for_their_questions() -> None:
    assert set(SCHEMAS) == {"builds", "jobs", "events_raw"}
    for name in ("builds", "jobs"):
        assert SCHEMAS[name]["time_partitioning"] == {"type": "DAY", "field": "finished_at"}
        assert SCHEMAS[name]["clustering"] == ["pipeline_slug", "branch", "state"]
    assert SCHEMAS["events_raw"]["time_partitioning"] == {"type": "DAY", "field": "occurred_at"}
    assert SCHEMAS["events_raw"]["clustering"] == ["event_type", "pipeline_slug"]
    assert {f["name"]: f["type"] for f in SCHEMAS["events_raw"]["fields"]}["payload"] == "JSON"
    for spec in SCHEMAS.values():
        names = [f["name"] for f in spec["fields"]]
        assert len(names) == len(set(names))
    # New columns go at the end: BigQuery adds them to an existing table in place.
    assert [f["name"] for f in SCHEMAS["jobs"]["fields"]][-4:] == [
        "signal",
        "signal_reason",
        "failure_cause",
        "infrastructure_failure",
    ]


def test_tables_on_the_emulator_are_made_from_the_schema_files(dataset: str) -> None:
    client = bigquery_client(dataset.split(".")[0], _api_url())
    for name, spec in SCHEMAS.items():
        table = client.get_table(f"{dataset}.{name}")
        assert [(f.name, f.field_type) for f in table.schema] == [(f["name"], f["type"]) for f in spec["fields"]]
        assert table.time_partitioning.field == spec["time_partitioning"]["field"]
        assert table.clustering_fields == spec["clustering"]


# --- redelivery ----------------------------------------------------------------------


def test_redelivery_inserts_once(dataset: str, capsys: Any) -> None:
    push = envelope(payload("build.finished.failed"))
    for _ in range(3):
        deliver(push)
    assert outcomes(capsys) == ["done", "duplicate", "duplicate"]
    assert len(select(dataset, "builds")) == 1


def test_same_event_from_another_message_is_still_a_duplicate(dataset: str, capsys: Any) -> None:
    deliver(envelope(payload("job.finished.failed"), message_id="first"))
    deliver(envelope(payload("job.finished.failed"), message_id="second", publish_time="2025-06-12T04:00:00Z"))
    assert outcomes(capsys) == ["done", "duplicate"]
    assert len(select(dataset, "jobs")) == 1


def test_a_lost_claim_duplicates_a_row_but_the_latest_views_do_not(
    dataset: str, firestore_emulator: Service, gcp_project: str, capsys: Any
) -> None:

    build, job = envelope(payload("build.finished.failed")), envelope(payload("job.finished.failed"))
    deliver(build)
    deliver(job)
    emulators.wipe_firestore(firestore_emulator.host, gcp_project)  # the claims expired or were lost
    _reset()  # ... and another instance takes the redelivery
    deliver(build)
    deliver(job)
    assert outcomes(capsys) == ["done"] * 4
    assert len(select(dataset, "builds")) == 2 and len(select(dataset, "jobs")) == 2
    assert len(select(dataset, "builds_latest")) == 1 and len(select(dataset, "jobs_latest")) == 1
    assert len(select(dataset, "events_raw")) == 4 and len(select(dataset, "events")) == 2


def test_an_instance_that_lost_the_claim_still_writes_nothing_twice(
    dataset: str, firestore_emulator: Service, gcp_project: str, capsys: Any
) -> None:
    push = envelope(payload("build.finished.failed"))
    deliver(push)
    emulators.wipe_firestore(firestore_emulator.host, gcp_project)
    deliver(push)  # the same instance remembers what it wrote
    assert outcomes(capsys) == ["done", "done"]
    assert len(select(dataset, "builds")) == 1 and len(select(dataset, "events_raw")) == 1


def test_builds_latest_shows_the_final_finish_of_a_build_that_was_unblocked(dataset: str) -> None:
    blocked = payload("build.finished.blocked")
    unblocked = payload("build.finished.blocked")
    unblocked["build"] |= {"blocked": False, "blocked_state": "", "finished_at": "2025-06-12T04:20:00.000Z"}
    deliver(envelope(unblocked, message_id="2"))  # arrival order must not matter
    deliver(envelope(blocked, message_id="1"))
    assert len(select(dataset, "builds")) == 2
    (latest,) = select(dataset, "builds_latest")
    assert (latest["state"], latest["blocked"], latest["outcome"]) == ("passed", False, "passed")
    assert latest["finished_at"] == ts("2025-06-12T04:20:00Z")


def test_builds_latest_prefers_our_message_over_mcncls_for_the_same_build(
    dataset: str, firestore_emulator: Service, gcp_project: str
) -> None:
    data, attributes = mcncl("build.finished.failed")
    deliver(envelope(payload("build.finished.failed"), message_id="ours"))
    deliver(envelope(data, attributes, message_id="theirs"))  # the same event: the claim stops it
    assert len(select(dataset, "builds")) == 1
    emulators.wipe_firestore(firestore_emulator.host, gcp_project)  # the claims expired or were lost
    _reset()
    deliver(envelope(data, attributes, message_id="theirs"))  # written later, with less in it
    assert len(select(dataset, "builds")) == 2
    (latest,) = select(dataset, "builds_latest")
    assert (latest["source_format"], latest["default_branch"], latest["message_id"]) == ("buildkite", "main", "ours")
    (event,) = select(dataset, "events")
    assert (event["source_format"], event["message_id"]) == ("buildkite", "ours")


def test_outcome_names_blocked_and_failed_builds(dataset: str) -> None:
    names = [
        "build.finished.blocked",
        "build.finished.blocked.failed",
        "build.finished.failed",
        "build.finished.canceled",
    ]
    for index, name in enumerate(names):
        deliver(envelope(payload(name), message_id=str(index)))
    body = payload("build.finished.failed")
    body["build"] |= {"id": "failed-then-blocked", "blocked": True, "blocked_state": "failed"}
    deliver(envelope(body, message_id="9"))
    outcome = {row["build_id"]: row["outcome"] for row in select(dataset, "builds_latest")}
    assert sorted(outcome.values()) == ["blocked", "canceled", "failed", "failed", "failed"]
    assert outcome["failed-then-blocked"] == "failed"
    assert outcome[payload("build.finished.blocked.failed")["build"]["id"]] == "failed"  # state "passed"


def test_the_views_verdict_is_the_shared_one(dataset: str) -> None:
    """builds_latest.outcome and Build.effective_state: one definition, whatever the combination."""
    states, blocked_states = ("passed", "failed", "canceled"), ("", "passed", "failed", "running", None)
    combos = [(b, s, bs) for b in (False, True) for s in states for bs in blocked_states]
    combos += [(False, "blocked", None), (False, "blocked", "failed")]  # the notification convention
    expected = {}
    for index, (blocked, state, blocked_state) in enumerate(combos):
        body = payload("build.finished.blocked")
        body["build"] |= {"id": f"verdict-{index}", "blocked": blocked, "state": state, "blocked_state": blocked_state}
        push = envelope(body, message_id=f"v{index}")
        deliver(push)
        build = parse_delivery(push).build
        assert build is not None
        expected[f"verdict-{index}"] = build.effective_state
    outcome = {row["build_id"]: row["outcome"] for row in select(dataset, "builds_latest")}
    assert outcome == expected
    assert set(expected.values()) == {"passed", "failed", "canceled", "blocked"}


# --- failures ------------------------------------------------------------------------


def test_missing_table_is_a_config_error_and_the_claim_is_released(dataset: str, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("BIGQUERY_TABLE", f"{dataset}.no_such_table")
    _reset()
    push = envelope(payload("build.finished.failed"))
    with pytest.raises(Nack, match="does not exist"):
        deliver(push)
    assert outcomes(capsys) == ["config_error"]
    monkeypatch.setenv("BIGQUERY_TABLE", f"{dataset}.builds")  # the operator fixes it and replays
    _reset()
    deliver(push)
    assert outcomes(capsys) == ["done"]
    assert len(select(dataset, "builds")) == 1


def test_missing_jobs_table_is_a_config_error_too(dataset: str, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("BIGQUERY_JOBS_TABLE", f"{dataset.split('.')[0]}.no_dataset.jobs")
    _reset()
    with pytest.raises(Nack, match=r"no_dataset\.jobs does not exist"):
        deliver(envelope(payload("job.finished.failed")))
    assert outcomes(capsys) == ["config_error"]


def test_a_table_whose_schema_drifted_makes_the_emulator_fail_and_the_message_is_kept(
    dataset: str, monkeypatch: Any, capsys: Any
) -> None:
    """bqemulator answers a wrongly typed value with HTTP 500: retried, then nacked; never dropped."""
    from google.cloud import bigquery

    client = bigquery_client(dataset.split(".")[0], _api_url())
    drifted = [
        bigquery.SchemaField(f["name"], "TIMESTAMP" if f["name"] == "message" else f["type"])
        for f in SCHEMAS["builds"]["fields"]
    ]
    client.create_table(bigquery.Table(f"{dataset}.drifted", schema=drifted))
    monkeypatch.setenv("BIGQUERY_TABLE", f"{dataset}.drifted")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    _reset()
    with pytest.raises(Nack, match="gave up for now"):
        deliver(envelope(payload("build.finished.failed")))
    assert outcomes(capsys) == ["retry"]
    assert select(dataset, "drifted") == []


def test_unset_or_malformed_table_names_the_variable(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.delenv("BIGQUERY_TABLE", raising=False)
    _reset()
    with pytest.raises(Nack, match="BIGQUERY_TABLE"):
        deliver(envelope(payload("build.finished.failed")))
    monkeypatch.setenv("BIGQUERY_TABLE", "just-a-table")
    _reset()
    with pytest.raises(Nack, match=r"project\.dataset\.table"):
        deliver(envelope(payload("build.finished.failed")))
    assert outcomes(capsys) == ["config_error", "config_error"]
    _reset()


# --- failures only a real BigQuery shows, from a local server answering like it ----------


class FakeBigQuery:
    """Answers insertAll like BigQuery: OK, per-row insertErrors, or faults (StandIn)."""

    def __init__(self, standin: StandIn) -> None:
        self.standin = standin
        self.insert_errors: list[dict[str, Any]] = []
        standin.route("POST", r"/bigquery/v2/projects/[^/]+/datasets/[^/]+/tables/[^/]+/insertAll", self.insert_all)

    def insert_all(self, request: Recorded) -> Reply:
        body: dict[str, Any] = {"kind": "bigquery#tableDataInsertAllResponse"}
        if self.insert_errors:
            body["insertErrors"] = self.insert_errors
        return Reply(200, body)

    def requests(self) -> list[Recorded]:
        return self.standin.recorded("/insertAll")


@pytest.fixture
def fake_bigquery(firestore: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeBigQuery]:
    with StandIn() as standin:
        monkeypatch.setenv("BIGQUERY_API_URL", standin.url)
        monkeypatch.setenv("BIGQUERY_TABLE", "real-project.buildkite.builds")
        monkeypatch.setenv("RETRY_BUDGET_SECONDS", "5")
        monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "3")
        _reset()
        yield FakeBigQuery(standin)
        _reset()


def test_insert_sends_the_event_key_as_insert_id_and_no_unknown_fields(fake_bigquery: FakeBigQuery) -> None:
    push = envelope(payload("build.finished.failed"))
    deliver(push)
    build, raw = sorted(fake_bigquery.requests(), key=lambda request: request.path)  # sent side by side
    assert raw.path == "/bigquery/v2/projects/real-project/datasets/buildkite/tables/events_raw/insertAll"
    assert build.path == "/bigquery/v2/projects/real-project/datasets/buildkite/tables/builds/insertAll"
    for request, table in ((raw, "events_raw"), (build, "builds")):
        (sent,) = request.json["rows"]
        assert sent["insertId"] == parse_delivery(push).key_hash
        assert set(sent["json"]) == {f["name"] for f in SCHEMAS[table]["fields"]}
        assert request.json["ignoreUnknownValues"] is False  # BigQuery must refuse a field the table lacks
        assert request.json["skipInvalidRows"] is False
    assert isinstance(raw.json["rows"][0]["json"]["payload"], str)  # JSON text, as the official client sends it


def test_a_retry_after_a_partial_failure_writes_only_what_is_missing(fake_bigquery: FakeBigQuery, capsys: Any) -> None:
    fake_bigquery.standin.fail("/tables/jobs/insertAll", Fault(status=503, remaining=1, body={"error": {"code": 503}}))
    deliver(envelope(payload("job.finished.failed")))
    assert outcomes(capsys) == ["done"]
    tables = [request.path.split("/tables/")[1].split("/")[0] for request in fake_bigquery.requests()]
    assert sorted(tables) == ["events_raw", "jobs", "jobs"]  # events_raw once: the retry sent only the jobs row


def test_per_row_insert_errors_nack_into_the_dead_letter_queue_with_the_reason(
    fake_bigquery: FakeBigQuery, capsys: Any
) -> None:
    fake_bigquery.insert_errors = [
        {"index": 0, "errors": [{"reason": "invalid", "location": "duration_seconds", "message": "no such field."}]}
    ]
    body = payload("build.finished.failed")
    body["build"]["message"] = "secret-ish commit title"
    with pytest.raises(Nack) as nack:
        deliver(envelope(body))
    captured = capsys.readouterr().out
    (line,) = [json.loads(raw) for raw in captured.splitlines() if '"outcome"' in raw]
    assert line["outcome"] == "config_error"
    assert "invalid at duration_seconds: no such field." in line["message"]
    assert "dead-letter queue" in line["message"]
    assert "secret-ish" not in captured and "secret-ish" not in str(nack.value.description)  # no row values
    assert len(fake_bigquery.requests()) == 2  # retrying cannot help: each table's row sent once, no retries


def test_server_errors_are_retried_with_the_same_insert_id_then_succeed(
    fake_bigquery: FakeBigQuery, capsys: Any
) -> None:
    fake_bigquery.standin.fail("/insertAll", Fault(status=503, remaining=2, body={"error": {"code": 503}}))
    deliver(envelope(payload("job.finished.failed")))
    assert outcomes(capsys) == ["done"]
    requests = fake_bigquery.requests()
    assert len(requests) == 4  # both rows side by side: 503 each, then ok each
    assert len({r.json["rows"][0]["insertId"] for r in requests}) == 1  # BigQuery can dedupe the retries
    tables = sorted(
        r.path.removeprefix("/bigquery/v2/projects/real-project/datasets/buildkite/tables/") for r in requests
    )
    assert tables == ["events_raw/insertAll"] * 2 + ["jobs/insertAll"] * 2


def test_server_errors_that_persist_nack_after_bounded_attempts(fake_bigquery: FakeBigQuery, capsys: Any) -> None:
    fake_bigquery.standin.fail("/insertAll", Fault(status=500, remaining=100, body={"error": {"code": 500}}))
    with pytest.raises(Nack, match="gave up for now"):
        deliver(envelope(payload("build.finished.failed")))
    assert outcomes(capsys) == ["retry"]
    assert len(fake_bigquery.requests()) == 3 * 2  # RETRY_MAX_ATTEMPTS of both rows, not the client's ~600 s


def test_a_request_that_times_out_is_transient(fake_bigquery: FakeBigQuery, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("BIGQUERY_TIMEOUT_SECONDS", "0.2")
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    _reset()
    fake_bigquery.standin.fail("/insertAll", Fault(status=200, delay=1.0, remaining=4))  # two attempts, two rows each
    with pytest.raises(Nack, match="gave up for now"):
        deliver(envelope(payload("build.finished.failed")))
    (line,) = [json.loads(raw) for raw in capsys.readouterr().out.splitlines() if '"outcome"' in raw]
    assert line["outcome"] == "retry"
    assert "Timeout" in line["message"]
    assert len(fake_bigquery.requests()) == 2 * 2  # two attempts of both rows


@pytest.mark.parametrize(
    ("status", "reason", "outcome"),
    [
        (403, "accessDenied", "config_error"),
        (403, "rateLimitExceeded", "retry"),
        (401, "authError", "config_error"),
        (429, "rateLimitExceeded", "retry"),
        (400, "invalid", "config_error"),
    ],
    ids=["denied", "rate-limited-403", "unauthenticated", "too-many-requests", "bad-request"],
)
def test_api_errors_map_onto_ack_and_nack(
    fake_bigquery: FakeBigQuery, status: int, reason: str, outcome: str, capsys: Any
) -> None:
    error = {"error": {"code": status, "message": reason, "errors": [{"reason": reason, "message": reason}]}}
    fake_bigquery.standin.fail("/insertAll", Fault(status=status, remaining=100, body=error))
    with pytest.raises(Nack):
        deliver(envelope(payload("build.finished.failed")))
    assert outcomes(capsys) == [outcome]
    assert len(fake_bigquery.requests()) == (3 if outcome == "retry" else 1) * 2  # both rows each attempt


# --- manifest and cold start ---------------------------------------------------------


def test_manifest_filter_takes_every_event() -> None:
    matches = parse_filter(manifest("bigquery-metrics").filter).matches
    for name in payload_names():
        assert matches(message_attributes(parse_delivery(envelope(payload(name))))), name
    for name in ("build.finished.failed", "agent.connected"):
        assert matches(mcncl(name)[1])
    assert matches({"event_type": "cluster_token.registration_blocked"})


def test_manifest_points_at_the_tables_and_the_local_emulator() -> None:
    m = manifest("bigquery-metrics")
    assert m.entry_point == "store_build_metrics" and m.idempotency
    assert m.env["BIGQUERY_TABLE"] == "${project}.${bigquery_dataset}.builds"
    assert m.env["BIGQUERY_JOBS_TABLE"] == "${project}.${bigquery_dataset}.jobs"
    assert m.env["BIGQUERY_EVENTS_TABLE"] == "${project}.${bigquery_dataset}.events_raw"
    assert m.raw["local_env"]["BIGQUERY_API_URL"] == "${bigquery_api_url}"
    assert m.raw["iam"] == [
        {"role": "projects/${project}/roles/buildkiteFanoutTableWriter", "scope": "bigquery_tables"}
    ]


def test_the_bundle_ships_the_row_builders_beside_main() -> None:
    from tools.ops import deploy

    shipped = {path.name for path in deploy.package("bigquery-metrics").iterdir()}
    assert {"main.py", "metrics_rows.py", "bigquery_insert.py", "function.yaml", "buildkite_events"} <= shipped
    assert not {name for name in shipped if name.startswith("test_")}


def test_the_cold_path_never_imports_the_bigquery_client_library(dataset: str) -> None:
    """Import and first delivery in a fresh interpreter, as a new instance: the row lands, no google.cloud.bigquery."""
    printed, loaded = fresh_first_delivery("bigquery-metrics", "build.finished.failed", {"google.cloud.bigquery"})
    assert loaded == set()
    assert '"outcome": "done"' in printed
    assert len(select(dataset, "builds")) == 1 and len(select(dataset, "events_raw")) == 1


def test_without_the_emulator_it_uses_google_credentials_and_a_refused_one_is_a_config_error(
    firestore: Any, tmp_path: Any, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The production path: google.auth.default() and a token refresh, answered by a local server."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    with StandIn() as token_server:
        token_server.route(
            "POST", "/token", lambda _: Reply(400, {"error": "invalid_grant", "error_description": "no"})
        )
        account = {
            "type": "service_account",
            "project_id": "real-project",
            "private_key_id": "k1",
            "private_key": pem.decode(),
            "client_email": "metrics@real-project.iam.gserviceaccount.com",
            "client_id": "1",
            "token_uri": f"{token_server.url}/token",
        }
        path = tmp_path / "key.json"
        path.write_text(json.dumps(account))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(path))
        monkeypatch.delenv("BIGQUERY_API_URL", raising=False)
        monkeypatch.setenv("BIGQUERY_TABLE", "real-project.buildkite.builds")
        _reset()
        with pytest.raises(Nack, match="no usable Google credentials"):
            deliver(envelope(payload("build.finished.failed")))
        assert token_server.recorded("/token")  # it asked for a token, and nothing else went out
        assert outcomes(capsys) == ["config_error"]
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))
        _reset()
        with pytest.raises(Nack, match="no usable Google credentials"):
            deliver(envelope(payload("build.finished.failed")))
    _reset()


@pytest.mark.parametrize("hint", [-1.0, float("nan"), float("inf"), 1e12])
def test_an_unusable_retry_after_still_retries(fake_bigquery: FakeBigQuery, hint: float, capsys: Any) -> None:
    """A Retry-After of -1 or nan once reached time.sleep() and ended in "error"; now the handler's backoff applies."""
    fake_bigquery.standin.fail("/insertAll", Fault(status=503, retry_after=hint, remaining=1))
    if hint == 1e12:  # a real but long wait: beyond the budget, nack at once for Pub/Sub's backoff
        with pytest.raises(Nack, match=r"Retry-After 3600s"):
            deliver(envelope(payload("build.finished.failed")))
        assert outcomes(capsys) == ["retry"]
        return
    deliver(envelope(payload("build.finished.failed")))
    assert outcomes(capsys) == ["done"]
    assert len(fake_bigquery.requests()) == 3  # the refused events_raw insert, then events_raw and builds
