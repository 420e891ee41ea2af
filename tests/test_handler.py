"""The ack/nack contract of ``pubsub_handler``, on a small function built for each test."""

from __future__ import annotations

import importlib.util
import json
import sys
import textwrap
import threading
import time
import uuid
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from buildkite_events import Nack
from tests.support import cloud_event, envelope, log_lines, payload, unreachable_endpoint

SECRET = "xoxb-very-secret-token-123"

MAIN = """
from __future__ import annotations

import os
from dataclasses import dataclass

import functions_framework
from buildkite_events import BuildkiteEvent, ConfigError, InvalidEvent, Skip, TransientError, env, pubsub_handler

CALLS: list[str] = []
BEHAVIOUR: list[str] = []  # what each successive call does: ok, skip, transient, slow-hint, config, invalid, crash


@dataclass(frozen=True)
class Config:
    token: str = env("TEST_TOKEN", secret=True)
    limit: int = env("TEST_LIMIT", default=3)


@functions_framework.cloud_event
@pubsub_handler(Config)
def handle(event: BuildkiteEvent, config: Config) -> str:
    CALLS.append(event.event_type)
    step = BEHAVIOUR.pop(0) if BEHAVIOUR else os.environ.get("TEST_STEP", "ok")
    if step == "skip":
        raise Skip("state passed not notified")
    if step == "transient":
        raise TransientError("stand-in API answered 503")
    if step == "slow-hint":
        raise TransientError("rate limited", retry_after=3600)
    if step == "config":
        raise ConfigError("channel_not_found: invite the app to #builds")
    if step == "invalid":
        raise InvalidEvent("Jira issue PROJ-1 does not exist")
    if step == "crash":
        raise RuntimeError(f"https://hooks.example.test/{config.token}/x exploded")
    return f"handled {event.event_type} (limit {config.limit})"
"""


def _make_function(tmp_path: Path, *, filter: str = "", idempotency: bool = False) -> ModuleType:
    folder = tmp_path / f"fn-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "main.py").write_text(MAIN)
    manifest = f"""
        name: test-fn
        description: A function for testing the handler.
        entry_point: handle
        trigger: pubsub
        runtime: python312
        filter: {json.dumps(filter)}
        state: {"[idempotency]" if idempotency else "[]"}
        resources: {{memory: 256Mi, timeout_seconds: 60, max_instances: 1}}
        delivery: {{max_delivery_attempts: 5}}
    """
    (folder / "function.yaml").write_text(textwrap.dedent(manifest))
    spec = importlib.util.spec_from_file_location(f"handler_test_{folder.name.replace('-', '_')}", folder / "main.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture
def fn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    monkeypatch.setenv("TEST_TOKEN", SECRET)
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "5")
    return _make_function(tmp_path)


def _lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [line for line in log_lines(capsys.readouterr().out) if "outcome" in line]


def test_success_logs_one_done_line_with_event_identifiers(fn: ModuleType, capsys: Any) -> None:
    fn.handle(cloud_event(envelope(payload("build.finished.failed"), message_id="m-1")))
    (line,) = _lines(capsys)
    assert line["outcome"] == "done"
    assert line["severity"] == "INFO"
    assert line["message"] == "done: handled build.finished (limit 3)"
    assert line["function"] == "test-fn"
    assert (line["event_type"], line["build_number"], line["pipeline"]) == ("build.finished", 2042, "my-pipeline")
    assert line["message_id"] == "m-1"
    assert len(line["event_key"]) == 16


def test_unparseable_messages_are_acked_with_a_warning(fn: ModuleType, capsys: Any) -> None:
    fn.handle(cloud_event(envelope(b"\x00garbage", {})))
    (line,) = _lines(capsys)
    assert (line["outcome"], line["severity"]) == ("invalid", "WARNING")
    assert "not valid UTF-8" in line["message"] or "not JSON" in line["message"]
    assert fn.CALLS == []


def test_handler_raising_invalid_event_is_acked(fn: ModuleType, capsys: Any) -> None:
    fn.BEHAVIOUR.append("invalid")
    fn.handle(cloud_event(envelope(payload("ping"))))
    assert [line["outcome"] for line in _lines(capsys)] == ["invalid"]


def test_a_handler_with_nothing_to_do_logs_skipped_and_acks(fn: ModuleType, capsys: Any) -> None:
    fn.BEHAVIOUR.append("skip")
    fn.handle(cloud_event(envelope(payload("build.finished.passed"))))
    (line,) = _lines(capsys)
    assert (line["outcome"], line["severity"]) == ("skipped", "INFO")
    assert line["message"] == "skipped: state passed not notified"


def test_transient_failures_are_retried_in_process(fn: ModuleType, capsys: Any) -> None:
    fn.BEHAVIOUR.extend(["transient", "transient"])
    fn.handle(cloud_event(envelope(payload("ping"))))
    assert len(fn.CALLS) == 3
    assert [line["outcome"] for line in _lines(capsys)] == ["done"]


def test_transient_failures_beyond_the_attempts_nack(fn: ModuleType, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    fn.BEHAVIOUR.extend(["transient"] * 5)
    with pytest.raises(Nack, match="gave up for now"):
        fn.handle(cloud_event(envelope(payload("ping"))))
    assert len(fn.CALLS) == 2
    (line,) = _lines(capsys)
    assert (line["outcome"], line["severity"]) == ("retry", "ERROR")


def test_a_retry_after_beyond_the_budget_nacks_at_once(fn: ModuleType) -> None:
    fn.BEHAVIOUR.append("slow-hint")
    with pytest.raises(Nack):
        fn.handle(cloud_event(envelope(payload("ping"))))
    assert len(fn.CALLS) == 1


def test_config_errors_nack_without_retrying(fn: ModuleType, capsys: Any) -> None:
    fn.BEHAVIOUR.append("config")
    with pytest.raises(Nack, match="channel_not_found") as raised:
        fn.handle(cloud_event(envelope(payload("ping"))))
    assert raised.value.code == 500
    assert len(fn.CALLS) == 1
    assert [line["outcome"] for line in _lines(capsys)] == ["config_error"]


def test_missing_configuration_names_the_variable(fn: ModuleType, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.delenv("TEST_TOKEN")
    fn.handle.instance.reset()
    with pytest.raises(Nack, match="TEST_TOKEN"):
        fn.handle(cloud_event(envelope(payload("ping"))))
    assert fn.CALLS == []


def test_invalid_configuration_names_the_variable(fn: ModuleType, monkeypatch: Any) -> None:
    monkeypatch.setenv("TEST_LIMIT", "three")
    fn.handle.instance.reset()
    with pytest.raises(Nack, match="TEST_LIMIT must be a number"):
        fn.handle(cloud_event(envelope(payload("ping"))))


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("RETRY_BUDGET_SECONDS", "ten"),
        ("RETRY_BUDGET_SECONDS", "-1"),
        ("RETRY_BUDGET_SECONDS", "60"),
        ("RETRY_BUDGET_SECONDS", "nan"),
        ("RETRY_MAX_ATTEMPTS", "0"),
        ("RETRY_MAX_ATTEMPTS", "2.5"),
    ],
)
def test_bad_retry_settings_are_a_configuration_error_with_an_outcome_line(
    fn: ModuleType, monkeypatch: Any, capsys: Any, variable: str, value: str
) -> None:
    # The config_error alert reads the outcome line: a bad setting must not skip it.
    monkeypatch.setenv(variable, value)
    fn.handle.instance.reset()
    with pytest.raises(Nack, match=variable):
        fn.handle(cloud_event(envelope(payload("ping"))))
    assert fn.CALLS == []
    (line,) = _lines(capsys)
    assert line["outcome"] == "config_error" and "dead-letter queue" in line["message"]


def test_unexpected_errors_nack_and_never_show_secrets(fn: ModuleType, capsys: Any) -> None:
    fn.BEHAVIOUR.append("crash")
    with pytest.raises(Nack) as raised:
        fn.handle(cloud_event(envelope(payload("ping"))))
    output = capsys.readouterr()
    assert SECRET not in raised.value.description
    assert SECRET not in output.out + output.err
    (line,) = [line for line in log_lines(output.out) if "outcome" in line]
    assert line["outcome"] == "error"
    assert "RuntimeError" in line["message"] and "[REDACTED]" in line["message"]


def test_messages_outside_the_manifest_filter_are_acked_unhandled(
    tmp_path: Path, monkeypatch: Any, capsys: Any
) -> None:
    monkeypatch.setenv("TEST_TOKEN", SECRET)
    fn = _make_function(
        tmp_path, filter='attributes.event_type = "build.finished" AND attributes.build_state = "failed"'
    )
    for name in ("build.finished.passed", "build.finished.failed", "job.finished.failed", "ping"):
        fn.handle(cloud_event(envelope(payload(name))))
    assert fn.CALLS == ["build.finished"]
    assert [line["outcome"] for line in _lines(capsys)] == ["filtered", "done", "filtered", "filtered"]


def test_a_raw_body_without_attributes_is_filtered_on_derived_attributes(tmp_path: Path, monkeypatch: Any) -> None:
    monkeypatch.setenv("TEST_TOKEN", SECRET)
    fn = _make_function(tmp_path, filter='attributes.build_state = "failed"')
    fn.handle(cloud_event(envelope(json.dumps(payload("build.finished.failed")).encode(), {})))
    fn.handle(cloud_event(envelope(json.dumps(payload("build.finished.passed")).encode(), {})))
    assert fn.CALLS == ["build.finished"]


def test_served_by_functions_framework_from_a_raw_push_and_an_eventarc_cloudevent(
    fn: ModuleType, capsys: Any, gcp_project: str
) -> None:
    import functions_framework

    app = functions_framework.create_app(target="handle", source=fn.__file__, signature_type="cloudevent")
    client = app.test_client()
    push = envelope(payload("build.finished.failed"))
    raw = client.post("/", json=push, headers={"X-Cloud-Trace-Context": "4bf92f3577b34da6a3ce929d0e0e4736/1;o=1"})
    assert raw.status_code == 200
    eventarc = client.post(
        "/",
        json=push,
        headers={
            "ce-id": "1234",
            "ce-source": "//pubsub.googleapis.com/projects/p/topics/buildkite-events",
            "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
            "ce-specversion": "1.0",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        },
    )
    assert eventarc.status_code == 200
    lines = _lines(capsys)
    assert [line["outcome"] for line in lines] == ["done", "done"]
    trace = f"projects/{gcp_project}/traces/"
    assert lines[0]["logging.googleapis.com/trace"] == trace + "4bf92f3577b34da6a3ce929d0e0e4736"
    assert lines[1]["logging.googleapis.com/trace"] == trace + "0af7651916cd43dd8448eb211c80319c"


def test_a_nack_is_a_500_without_a_traceback(fn: ModuleType, monkeypatch: Any) -> None:
    import functions_framework

    monkeypatch.setenv("TEST_STEP", "config")  # functions-framework loads its own copy of main.py
    app = functions_framework.create_app(target="handle", source=fn.__file__, signature_type="cloudevent")
    response = app.test_client().post("/", json=envelope(payload("ping")))
    assert response.status_code == 500
    assert "Traceback" not in response.get_data(as_text=True)


class TestIdempotency:
    @pytest.fixture
    def idem(self, tmp_path: Path, monkeypatch: Any, firestore: Any) -> ModuleType:
        monkeypatch.setenv("TEST_TOKEN", SECRET)
        monkeypatch.setenv("RETRY_BUDGET_SECONDS", "0")
        return _make_function(tmp_path, idempotency=True)

    def test_a_redelivered_message_runs_once(self, idem: ModuleType, capsys: Any) -> None:
        push = envelope(payload("build.finished.failed"))
        idem.handle(cloud_event(push))
        idem.handle(cloud_event(push))
        assert idem.CALLS == ["build.finished"]
        assert [line["outcome"] for line in _lines(capsys)] == ["done", "duplicate"]

    def test_a_skipped_event_leaves_no_claim_behind(self, idem: ModuleType, capsys: Any) -> None:
        """Nothing happened: a replay (say after the notified states changed) may still act."""
        idem.BEHAVIOUR.append("skip")
        push = envelope(payload("build.finished.failed"))
        idem.handle(cloud_event(push))
        idem.handle(cloud_event(push))
        assert idem.CALLS == ["build.finished", "build.finished"]
        assert [line["outcome"] for line in _lines(capsys)] == ["skipped", "done"]

    def test_the_same_event_from_another_message_id_is_still_a_duplicate(self, idem: ModuleType) -> None:
        idem.handle(cloud_event(envelope(payload("build.finished.failed"), message_id="a")))
        idem.handle(cloud_event(envelope(payload("build.finished.failed"), message_id="b")))
        assert idem.CALLS == ["build.finished"]

    def test_a_failed_attempt_releases_the_claim_for_the_retry(self, idem: ModuleType) -> None:
        idem.BEHAVIOUR.append("transient")
        push = envelope(payload("build.finished.failed"))
        with pytest.raises(Nack):
            idem.handle(cloud_event(push))
        idem.handle(cloud_event(push))
        idem.handle(cloud_event(push))
        assert idem.CALLS == ["build.finished", "build.finished"]

    def test_racing_deliveries_run_the_side_effect_once(self, idem: ModuleType) -> None:
        push = envelope(payload("build.finished.failed"))
        results: list[str] = []

        def deliver() -> None:
            try:
                idem.handle(cloud_event(push))
                results.append("acked")
            except Nack:
                results.append("nacked")  # the loser is redelivered later and finds it done

        threads = [threading.Thread(target=deliver) for _ in range(8)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert idem.CALLS == ["build.finished"]
        assert len(results) == 8
        idem.handle(cloud_event(push))
        assert idem.CALLS == ["build.finished"]


@pytest.mark.parametrize("kind", ["closed-port", "silent-server"])
def test_with_firestore_unreachable_a_delivery_nacks_and_logs_inside_its_timeout(
    tmp_path: Path, monkeypatch: Any, capsys: Any, gcp_project: str, kind: str
) -> None:
    """The Firestore client alone retries UNAVAILABLE for up to 60 s per call: a claim took ~47 s
    and a delivery ~87 s, past the 60 s timeout, so Cloud Run killed it before the outcome line."""
    monkeypatch.setenv("TEST_TOKEN", SECRET)
    if kind == "closed-port":
        monkeypatch.delenv("RETRY_BUDGET_SECONDS", raising=False)  # the default: half the timeout, 30 s
    else:  # each call waits out its timeout here: a shorter budget keeps the test short
        monkeypatch.setenv("RETRY_BUDGET_SECONDS", "5")
    fn = _make_function(tmp_path, idempotency=True)
    timeout = fn.handle.instance.manifest.timeout_seconds
    with unreachable_endpoint(kind) as host:
        monkeypatch.setenv("FIRESTORE_EMULATOR_HOST", host)
        started = time.monotonic()
        with pytest.raises(Nack, match="Firestore claim failed"):
            fn.handle(cloud_event(envelope(payload("build.finished.failed"))))
        elapsed = time.monotonic() - started
    (line,) = _lines(capsys)
    assert line["outcome"] == "retry" and "Pub/Sub will redeliver" in line["message"]
    assert fn.CALLS == []  # no side effect without its claim
    assert elapsed < timeout  # returned, outcome logged, before the function's timeout
