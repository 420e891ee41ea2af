"""One trace per event: trace context in (headers, the message attribute), on every log line,
spans through the shared handler, and export as TRACE_EXPORTER says (buildkite_events.tracing)."""

from __future__ import annotations

import http.server
import json
import logging
import os
import subprocess
import sys
import textwrap
import threading
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import pytest

from buildkite_events import tracing
from buildkite_events.log import configure_logging, log, logger
from buildkite_events.tracing import (
    SAMPLED_FIELD,
    SPAN_FIELD,
    TRACE_FIELD,
    TRACEPARENT_ATTRIBUTE,
    TraceContext,
    from_attributes,
    from_headers,
    parse_cloud_trace_context,
    parse_traceparent,
)
from tests.support import ROOT, envelope, log_lines, payload

TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN = "00f067aa0ba902b7"
PARENT = f"00-{TRACE}-{SPAN}-01"
OTHER_TRACE = "0af7651916cd43dd8448eb211c80319c"
SECRET = "xoxb-trace-secret-0123456789"

HOSTILE_TRACEPARENTS = [
    "",
    "garbage",
    f"00-{TRACE[:-1]}-{SPAN}-01",  # trace id one digit short
    f"00-{TRACE}0-{SPAN}-01",  # one digit long
    f"00-{TRACE}-{SPAN[:-1]}-01",
    f"00-{TRACE}-{SPAN}-1",
    f"00-{TRACE.upper()}-{SPAN}-01",  # W3C ids are lower-case hex
    f"00-{TRACE[:-1]}g-{SPAN}-01",
    f"00-{'0' * 32}-{SPAN}-01",  # all-zero ids are invalid
    f"00-{TRACE}-{'0' * 16}-01",
    f"ff-{TRACE}-{SPAN}-01",  # version ff is forbidden
    f"00-{TRACE}-{SPAN}-01-extra",  # version 00 has exactly four fields
    f"00_{TRACE}_{SPAN}_01",
    f'00-{TRACE}-{SPAN}-01\n{{"severity": "EMERGENCY"}}',
    "00-" + "٤" * 32 + f"-{SPAN}-01",  # Unicode digits are not hex
    "00-" + "a" * 100_000 + f"-{SPAN}-01",  # huge
]


@pytest.fixture(autouse=True)
def no_export(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("TRACE_EXPORTER", raising=False)
    monkeypatch.delenv("TRACE_FILE", raising=False)
    monkeypatch.delenv("K_SERVICE", raising=False)
    yield
    os.environ.pop("TRACE_EXPORTER", None)
    with tracing.start("reset", None):  # shuts down whatever exporter the test set up
        pass


@pytest.fixture
def lines(capsys: pytest.CaptureFixture[str]) -> Iterator[Any]:
    configure_logging()
    capsys.readouterr()
    yield lambda: log_lines(capsys.readouterr().out)


# --- trace context in -------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (PARENT, TraceContext(TRACE, SPAN, True)),
        (f"00-{TRACE}-{SPAN}-00", TraceContext(TRACE, SPAN, False)),
        (f"00-{TRACE}-{SPAN}-03", TraceContext(TRACE, SPAN, True)),  # other flags: only "sampled" counts
        (f"  {PARENT} ", TraceContext(TRACE, SPAN, True)),
        (f"01-{TRACE}-{SPAN}-01-a-later-version", TraceContext(TRACE, SPAN, True)),
    ],
)
def test_traceparent(value: str, expected: TraceContext) -> None:
    assert parse_traceparent(value) == expected


def test_a_context_writes_back_the_traceparent_it_came_from() -> None:
    assert TraceContext(TRACE, SPAN, True).traceparent == PARENT
    assert parse_traceparent(TraceContext(TRACE, SPAN, False).traceparent) == TraceContext(TRACE, SPAN, False)


@pytest.mark.parametrize("value", [*HOSTILE_TRACEPARENTS, None, 42, b"00-x", ["00"]], ids=repr)
def test_invalid_traceparents_are_ignored(value: object) -> None:
    assert parse_traceparent(value) is None


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (f"{TRACE}/1;o=1", TraceContext(TRACE, "0000000000000001", True)),
        (f"{TRACE}/12345678901234567890;o=0", TraceContext(TRACE, "ab54a98ceb1f0ad2", False)),
        (f"{TRACE.upper()}/255", TraceContext(TRACE, "00000000000000ff", False)),
    ],
)
def test_cloud_trace_context(value: str, expected: TraceContext) -> None:
    assert parse_cloud_trace_context(value) == expected


@pytest.mark.parametrize(
    "value",
    [
        "",
        TRACE,  # no span: nothing to be a child of
        f"{TRACE}/",
        "/1;o=1",
        f"{TRACE}/0;o=1",
        f"{TRACE}/{2**64}",
        f"{TRACE}/-1",
        f"{TRACE}/abc",
        f"{'0' * 32}/1",
        f"{TRACE}a/1",
        "a" * 65 + "/1",
        '"},"severity":"EMERGENCY',
        f"{TRACE}/1;o=1" + " " * 1000,
        None,
    ],
    ids=repr,
)
def test_invalid_cloud_trace_contexts_are_ignored(value: object) -> None:
    assert parse_cloud_trace_context(value) is None


def test_traceparent_wins_over_cloud_trace_context_and_falls_back_to_it() -> None:
    from werkzeug.datastructures import Headers

    both = Headers([("X-Cloud-Trace-Context", f"{OTHER_TRACE}/1;o=1"), ("traceparent", PARENT)])
    assert from_headers(both) == TraceContext(TRACE, SPAN, True)
    broken = Headers([("x-cloud-trace-context", f"{OTHER_TRACE}/1;o=1"), ("Traceparent", "00-zz")])
    assert from_headers(broken) == TraceContext(OTHER_TRACE, "0000000000000001", True)
    assert from_headers(Headers()) is None
    assert from_headers(None) is None


def test_the_message_attribute_is_the_one_googles_pubsub_clients_use() -> None:
    # google-cloud-pubsub's OpenTelemetry instrumentation injects W3C keys with this prefix.
    assert TRACEPARENT_ATTRIBUTE == "googclient_" + "traceparent"
    assert from_attributes({TRACEPARENT_ATTRIBUTE: PARENT}) == TraceContext(TRACE, SPAN, True)
    assert from_attributes({"traceparent": PARENT}) is None
    assert from_attributes({}) is None
    assert from_attributes(None) is None


# --- on every log line ------------------------------------------------------------------------


def test_lines_in_a_span_belong_to_its_trace_and_span(lines: Any) -> None:
    with tracing.start("fn", parse_traceparent(PARENT), project="proj") as root:
        log(logging.INFO, "in the root")
        with tracing.span("claim") as child:
            log(logging.INFO, "in the child")
        log(logging.INFO, "back in the root")
    log(logging.INFO, "outside")
    first, second, third, outside = lines()
    assert first[TRACE_FIELD] == second[TRACE_FIELD] == third[TRACE_FIELD] == f"projects/proj/traces/{TRACE}"
    assert first[SPAN_FIELD] == third[SPAN_FIELD] == root.context.span_id
    assert second[SPAN_FIELD] == child.context.span_id
    assert len({SPAN, root.context.span_id, child.context.span_id}) == 3  # each span its own id
    assert all(len(line[SPAN_FIELD]) == 16 and int(line[SPAN_FIELD], 16) for line in (first, second))
    assert first[SAMPLED_FIELD] is True
    assert not any(key.startswith("logging.googleapis.com/") for key in outside)


def test_an_unsampled_parent_gives_lines_without_trace_sampled(lines: Any) -> None:
    with tracing.start("fn", parse_traceparent(f"00-{TRACE}-{SPAN}-00"), project="proj"):
        log(logging.INFO, "x")
    (line,) = lines()
    assert line[TRACE_FIELD].endswith(TRACE)
    assert SAMPLED_FIELD not in line


def test_without_a_parent_each_request_starts_its_own_trace(lines: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "from-env")
    for _ in range(2):
        with tracing.start("fn", None):
            log(logging.INFO, "x")
    first, second = lines()
    assert first[TRACE_FIELD] != second[TRACE_FIELD]
    for line in (first, second):
        trace_id = line[TRACE_FIELD].removeprefix("projects/from-env/traces/")
        assert len(trace_id) == 32 and int(trace_id, 16)


def test_without_a_project_the_trace_is_the_bare_id(lines: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("GOOGLE_CLOUD_PROJECT", raising=False)
    with tracing.start("fn", parse_traceparent(PARENT)):
        log(logging.INFO, "x")
    assert lines()[0][TRACE_FIELD] == TRACE


@pytest.mark.parametrize("value", HOSTILE_TRACEPARENTS[1:], ids=lambda v: repr(v[:60]))
def test_a_hostile_header_starts_a_new_trace_and_is_never_logged(lines: Any, value: str) -> None:
    with tracing.start("ingress", from_headers({"traceparent": value}), project="proj") as span:
        log(logging.INFO, "received")
    (line,) = lines()
    assert line[TRACE_FIELD] == f"projects/proj/traces/{span.context.trace_id}"
    assert span.context.trace_id not in value
    assert value.strip() not in json.dumps(line) and "EMERGENCY" not in json.dumps(line)


# --- nothing imported by default ----------------------------------------------------------------

NO_OTEL_SCRIPT = """
import json, sys
import functions_framework

ingress_main, function_main, parent, push = sys.argv[1:]
ingress = functions_framework.create_app(target="receive_webhook", source=ingress_main).test_client()
ping = b'{"event":"ping"}'
answers = [
    ingress.post("/", data=ping, headers={"X-Buildkite-Token": "wrong", "traceparent": parent}).status_code,
    ingress.post("/", data=ping, headers={"X-Buildkite-Token": "t0ken-for-tests"}).status_code,
]
function = functions_framework.create_app(target="handle", source=function_main, signature_type="cloudevent")
answers.append(function.test_client().post("/", json=json.loads(push), headers={"traceparent": parent}).status_code)
print(json.dumps({"answers": answers, "otel": sorted(m for m in sys.modules if m.split(".")[0] == "opentelemetry")}))
"""


@pytest.mark.parametrize("exporter", [None, "none", " NONE "])
def test_without_an_exporter_no_opentelemetry_module_is_imported(tmp_path: Path, exporter: str | None) -> None:
    """The ingress (verify, and publish up to an unreachable Pub/Sub) and a Pub/Sub function
    continuing a trace, in a fresh interpreter: spans, ids and log fields, no OpenTelemetry."""
    function = _function_folder(tmp_path)
    push = envelope(payload("build.finished.failed"))
    push["message"]["attributes"][TRACEPARENT_ATTRIBUTE] = PARENT
    env = {k: v for k, v in os.environ.items() if not k.startswith(("TRACE_", "OTEL_"))}
    env |= {"PYTHONPATH": f"{ROOT / 'shared'}{os.pathsep}{ROOT}", "GOOGLE_CLOUD_PROJECT": "proj"}
    env |= {"BUILDKITE_WEBHOOK_TOKEN": "t0ken-for-tests", "PUBSUB_EMULATOR_HOST": "127.0.0.1:9"}
    env |= {"PUBLISH_DEADLINE_SECONDS": "0.5", "TEST_TOKEN": SECRET}
    env |= {"TRACE_EXPORTER": exporter} if exporter else {}
    args = [str(ROOT / "functions" / "ingress" / "main.py"), str(function / "main.py"), PARENT, json.dumps(push)]
    result = subprocess.run(
        [sys.executable, "-c", NO_OTEL_SCRIPT, *args], env=env, capture_output=True, text=True, timeout=120
    )
    assert result.returncode == 0, result.stderr
    *logged, summary = result.stdout.strip().splitlines()
    assert json.loads(summary) == {"answers": [401, 503, 200], "otel": []}
    traces = {line["outcome"]: line[TRACE_FIELD] for line in log_lines("\n".join(logged)) if "outcome" in line}
    assert traces["unauthorized"] == traces["done"] == f"projects/proj/traces/{TRACE}"  # both continued PARENT
    assert traces["publish_failed"].startswith("projects/proj/traces/") and TRACE not in traces["publish_failed"]


# --- through the shared handler ---------------------------------------------------------------

MAIN = """
from __future__ import annotations

import os
from dataclasses import dataclass

import functions_framework
from buildkite_events import BuildkiteEvent, env, pubsub_handler
from buildkite_events.log import log


@dataclass(frozen=True)
class Config:
    token: str = env("TEST_TOKEN", secret=True)


@functions_framework.cloud_event
@pubsub_handler(Config)
def handle(event: BuildkiteEvent, config: Config) -> str:
    log(20, "calling the integration")
    if os.environ.get("TEST_STEP") == "crash":
        raise RuntimeError(f"https://hooks.example.test/{config.token}/x exploded")
    return "handled"
"""


def _function_folder(tmp_path: Path, *, idempotency: bool = False) -> Path:
    folder = tmp_path / f"fn-{uuid.uuid4().hex[:6]}"
    folder.mkdir()
    (folder / "main.py").write_text(MAIN)
    manifest = f"""
        name: traced-fn
        description: A function for testing tracing.
        entry_point: handle
        trigger: pubsub
        runtime: python312
        filter: ""
        state: {"[idempotency]" if idempotency else "[]"}
        resources: {{memory: 256Mi, timeout_seconds: 60, max_instances: 1}}
    """
    (folder / "function.yaml").write_text(textwrap.dedent(manifest))
    return folder


@pytest.fixture
def fn(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, gcp_project: str) -> Any:
    """The function served by functions-framework, as a test client."""
    import functions_framework

    monkeypatch.setenv("TEST_TOKEN", SECRET)
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "5")
    folder = _function_folder(tmp_path)
    return functions_framework.create_app(target="handle", source=str(folder / "main.py"), signature_type="cloudevent")


def _push(attributes: dict[str, str] | None = None) -> dict[str, Any]:
    push = envelope(payload("build.finished.failed"))
    push["message"]["attributes"].update(attributes or {})
    return push


def _trace_ids(lines: list[dict[str, Any]]) -> set[str]:
    return {line[TRACE_FIELD].rsplit("/", 1)[-1] for line in lines}


def test_a_function_continues_the_trace_its_message_carries(fn: Any, lines: Any) -> None:
    headers = {"traceparent": f"00-{OTHER_TRACE}-{SPAN}-01"}  # the push request's own trace
    response = fn.test_client().post("/", json=_push({TRACEPARENT_ATTRIBUTE: PARENT}), headers=headers)
    assert response.status_code == 200
    own, outcome = lines()
    assert own["message"] == "calling the integration" and outcome["outcome"] == "done"
    assert _trace_ids([own, outcome]) == {TRACE}
    assert outcome[SPAN_FIELD] != SPAN and own[SPAN_FIELD] != outcome[SPAN_FIELD]  # the call is a span of its own
    assert own["event_key"] == outcome["event_key"]


@pytest.mark.parametrize(
    "attributes",
    [{}, {TRACEPARENT_ATTRIBUTE: "00-zz"}, {TRACEPARENT_ATTRIBUTE: HOSTILE_TRACEPARENTS[-1]}],
    ids=["none", "invalid", "huge"],
)
def test_a_message_without_a_valid_trace_keeps_the_push_requests(fn: Any, lines: Any, attributes: Any) -> None:
    headers = {"X-Cloud-Trace-Context": f"{OTHER_TRACE}/7;o=1"}
    assert fn.test_client().post("/", json=_push(attributes), headers=headers).status_code == 200
    logged = lines()
    assert _trace_ids(logged) == {OTHER_TRACE}
    assert not any("zz" in line.get(SPAN_FIELD, "") or "aaaa" in json.dumps(line) for line in logged)


def test_an_invalid_delivery_is_logged_in_the_push_requests_trace(fn: Any, lines: Any) -> None:
    push = _push({TRACEPARENT_ATTRIBUTE: PARENT})
    push["message"]["data"] = "bm90IGpzb24="  # "not json": the attribute cannot be trusted to be ours
    headers = {"traceparent": f"00-{OTHER_TRACE}-{SPAN}-01"}
    assert fn.test_client().post("/", json=push, headers=headers).status_code == 200
    (line,) = lines()
    assert line["outcome"] == "invalid" and _trace_ids([line]) == {OTHER_TRACE}


# --- export ---------------------------------------------------------------------------------


def _spans(path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in path.read_text().splitlines()]


def _hex(value: str | None) -> str | None:
    return None if value is None else value.removeprefix("0x")


def test_the_file_exporter_writes_the_delivery_claim_and_call_spans(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, firestore: Any, lines: Any
) -> None:
    import functions_framework

    spans_file = tmp_path / "traces.jsonl"
    monkeypatch.setenv("TRACE_EXPORTER", "file")
    monkeypatch.setenv("TRACE_FILE", str(spans_file))
    monkeypatch.setenv("TEST_TOKEN", SECRET)
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "5")
    folder = _function_folder(tmp_path, idempotency=True)
    app = functions_framework.create_app(target="handle", source=str(folder / "main.py"), signature_type="cloudevent")
    assert app.test_client().post("/", json=_push({TRACEPARENT_ATTRIBUTE: PARENT})).status_code == 200

    spans = {span["name"]: span for span in _spans(spans_file)}
    assert set(spans) == {"traced-fn", "claim", "handle"}
    root, claim, call = spans["traced-fn"], spans["claim"], spans["handle"]
    assert {_hex(s["context"]["trace_id"]) for s in spans.values()} == {TRACE}
    assert _hex(root["parent_id"]) == SPAN  # the publish span the message named
    assert _hex(claim["parent_id"]) == _hex(call["parent_id"]) == _hex(root["context"]["span_id"])
    assert root["kind"] == "SpanKind.CONSUMER"
    assert root["attributes"]["buildkite.outcome"] == "done"
    assert root["attributes"]["messaging.message.id"] == "1000"
    assert root["resource"]["attributes"]["service.name"] == "traced-fn"
    assert root["start_time"] <= claim["start_time"] <= call["start_time"] <= root["end_time"]
    outcome = next(line for line in lines() if "outcome" in line)
    assert outcome[SPAN_FIELD] == _hex(root["context"]["span_id"])  # Cloud Trace links the line to the span
    assert root["attributes"]["buildkite.event_key"] == outcome["event_key"]


def test_a_nack_marks_the_span_failed_with_the_reason_redacted(
    fn: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, lines: Any
) -> None:
    spans_file = tmp_path / "traces.jsonl"
    monkeypatch.setenv("TRACE_EXPORTER", "file")
    monkeypatch.setenv("TRACE_FILE", str(spans_file))
    monkeypatch.setenv("TEST_STEP", "crash")
    assert fn.test_client().post("/", json=_push({TRACEPARENT_ATTRIBUTE: PARENT})).status_code == 500
    text = spans_file.read_text()
    assert SECRET not in text and "[REDACTED]" in text
    root = next(span for span in _spans(spans_file) if span["name"] == "traced-fn")
    assert root["status"]["status_code"] == "ERROR"
    assert root["attributes"]["buildkite.outcome"] == "error"


@pytest.mark.parametrize(
    ("settings", "reason"),
    [
        ({"TRACE_EXPORTER": "jaeger"}, "must be one of none, gcp, otlp, file"),
        ({"TRACE_EXPORTER": "file"}, "needs TRACE_FILE"),
    ],
)
def test_an_exporter_that_cannot_be_set_up_is_reported_once_and_never_fails_a_request(
    lines: Any, monkeypatch: pytest.MonkeyPatch, settings: dict[str, str], reason: str
) -> None:
    for key, value in settings.items():
        monkeypatch.setenv(key, value)
    for _ in range(3):
        with tracing.start("fn", parse_traceparent(PARENT), project="proj"), tracing.span("call"):
            log(logging.INFO, "still traced")
    report, *traced = lines()
    assert report["severity"] == "ERROR" and "tracing is off" in report["message"] and reason in report["message"]
    assert len(traced) == 3 and _trace_ids(traced) == {TRACE}


class _Collector(http.server.BaseHTTPRequestHandler):
    """An OTLP/HTTP endpoint that keeps what it is sent."""

    received: ClassVar[list[tuple[str, str, bytes]]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.received.append((self.path, self.headers["Content-Type"], body))
        self.send_response(200)
        self.send_header("Content-Type", "application/x-protobuf")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *args: Any) -> None:
        pass


def test_the_otlp_exporter_sends_the_spans_before_the_request_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import ExportTraceServiceRequest

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Collector)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    _Collector.received = []
    try:
        monkeypatch.setenv("TRACE_EXPORTER", "otlp")
        monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", f"http://127.0.0.1:{server.server_port}")
        with tracing.start("ingress", parse_traceparent(PARENT)) as root, tracing.span("publish", kind="producer"):
            pass
        assert _Collector.received, "spans must be flushed when the request's first span ends"
    finally:
        server.shutdown()
        server.server_close()
    path, content_type, body = _Collector.received[0]
    assert (path, content_type) == ("/v1/traces", "application/x-protobuf")
    request = ExportTraceServiceRequest.FromString(body)
    spans = [span for rs in request.resource_spans for ss in rs.scope_spans for span in ss.spans]
    assert {span.name for span in spans} == {"ingress", "publish"}
    assert {span.trace_id.hex() for span in spans} == {TRACE}
    ingress = next(span for span in spans if span.name == "ingress")
    assert ingress.parent_span_id.hex() == SPAN and ingress.span_id.hex() == root.context.span_id


def test_the_cloud_trace_exporter_is_set_up_for_the_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Its package and constructor as documented, with a service account key made here (no call is made)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption())
    account = {
        "type": "service_account",
        "project_id": "trace-project",
        "private_key_id": "1",
        "private_key": pem.decode(),
        "client_email": "fn@trace-project.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": "https://oauth2.googleapis.com/token",
    }
    (tmp_path / "key.json").write_text(json.dumps(account))
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "key.json"))
    monkeypatch.setenv("GOOGLE_CLOUD_PROJECT", "trace-project")
    otel = tracing._setup("gcp", "", service="fallback")
    assert otel is not None
    try:
        (processor,) = otel.provider._active_span_processor._span_processors
        exporter = processor._batch_processor._exporter
        assert type(exporter).__name__ == "CloudTraceSpanExporter" and exporter.project_id == "trace-project"
        assert otel.provider.resource.attributes["service.name"] == "fallback"
    finally:
        otel.shutdown()


def test_logger_records_also_carry_the_trace(lines: Any) -> None:
    with tracing.start("fn", parse_traceparent(PARENT), project="proj"):
        logger.info("through logging")
    assert lines()[0][TRACE_FIELD] == f"projects/proj/traces/{TRACE}"


def test_an_instances_first_requests_arriving_together_all_export(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans_file = tmp_path / "traces.jsonl"
    monkeypatch.setenv("TRACE_EXPORTER", "file")
    monkeypatch.setenv("TRACE_FILE", str(spans_file))
    together = threading.Barrier(8)

    def request() -> None:
        together.wait()
        with tracing.start("fn", None), tracing.span("call"):
            pass

    threads = [threading.Thread(target=request) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(_spans(spans_file)) == 16


# --- on the message --------------------------------------------------------------------------


def test_the_trace_attribute_changes_no_filters_verdict_and_stays_within_pubsubs_limits() -> None:
    from buildkite_events.filters import parse_filter
    from buildkite_events.message import message_attributes, to_message
    from buildkite_events.parse import parse_delivery
    from tests.support import PAYLOADS
    from tools.manifests import all_manifests

    filters = {name: parse_filter(m.filter) for name, m in all_manifests().items() if m.is_pubsub}
    for path in sorted(PAYLOADS.glob("*.json")):
        body = json.loads(path.read_bytes())
        _, plain = to_message(body, body["event"])
        _, traced = to_message(body, body["event"], traceparent=PARENT)
        assert traced == {**plain, TRACEPARENT_ATTRIBUTE: PARENT}
        assert TRACEPARENT_ATTRIBUTE not in message_attributes(parse_delivery(body))  # derived ones: filters only
        assert all(value for value in traced.values())  # empty attributes still omitted
        assert len(traced) <= 100 and all(len(k.encode()) <= 256 for k in traced)  # Pub/Sub's attribute limits
        for name, accepts in filters.items():
            assert accepts.matches(traced) == accepts.matches(plain), (name, path.name)
    _, untraced = to_message({"event": "ping"}, "ping", traceparent=None)
    assert TRACEPARENT_ATTRIBUTE not in untraced


# --- deploying with an exporter -----------------------------------------------------------------


def test_bundles_carry_opentelemetry_only_for_the_exporter_named(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools import bundle
    from tools.manifests import manifest
    from tools.ops import deploy

    ingress = manifest("ingress")
    assert not [r for r in bundle.shared_requirements(ingress) if "opentelemetry" in r]
    gcp = bundle.shared_requirements(ingress, "gcp")
    assert any(r.startswith("opentelemetry-exporter-gcp-trace") for r in gcp)
    assert any(r.startswith("opentelemetry-sdk") for r in gcp)
    otlp = bundle.shared_requirements(ingress, "otlp")
    assert any(r.startswith("opentelemetry-exporter-otlp-proto-http") for r in otlp)

    values = {"project": "acme-ci", "region": "us-central1", "topic": "buildkite-events"}
    monkeypatch.delenv("TRACE_EXPORTER", raising=False)
    assert "TRACE_EXPORTER" not in " ".join(deploy.deploy_command("ingress", values))
    monkeypatch.setenv("TRACE_EXPORTER", "gcp")
    assert any("|TRACE_EXPORTER=gcp" in arg for arg in deploy.deploy_command("ingress", values))
    monkeypatch.setenv("TRACE_EXPORTER", "otlp")
    with pytest.raises(SystemExit, match="OTEL_EXPORTER_OTLP_ENDPOINT"):
        deploy.deploy_command("ingress", values)
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://collector.internal:4318")
    (env,) = [arg for arg in deploy.deploy_command("ingress", values) if arg.startswith("--set-env-vars=")]
    assert "|OTEL_EXPORTER_OTLP_ENDPOINT=http://collector.internal:4318|" in env and "TRACE_EXPORTER=otlp" in env
    monkeypatch.setenv("TRACE_EXPORTER", "file")  # local only: not something to deploy
    with pytest.raises(SystemExit, match="trace_exporter"):
        bundle.trace_exporter()


def test_terraform_and_make_deploy_know_the_same_exporters() -> None:
    from tools import bundle as deploy  # what `make package` and `make deploy-<name>` bundle with

    variables = (ROOT / "terraform" / "variables.tf").read_text()
    block = variables[variables.index('variable "trace_exporter"') :]
    assert f"contains({json.dumps(list(deploy.TRACE_EXPORTERS), separators=(', ', ':'))}, var.trace_exporter)" in block
    assert set(deploy.TRACE_EXPORTERS) < set(tracing.EXPORTERS)
