"""ingress through the real functions-framework app, publishing to the Pub/Sub emulator."""

from __future__ import annotations

import base64
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from buildkite_events.message import MAX_ATTRIBUTE_BYTES
from buildkite_events.parse import parse_delivery
from buildkite_events.signature import sign
from buildkite_events.tracing import SPAN_FIELD, TRACE_FIELD, TRACEPARENT_ATTRIBUTE, TraceContext, parse_traceparent
from tests.support import FIXTURES, ROOT, load_function, log_lines, payload, payload_bytes, payload_names
from tools.local.faultproxy import FaultProxy
from tools.local.standin import Reply, StandIn

TOKEN = "test-webhook-token-5f0c1d"
SOURCE = ROOT / "functions" / "ingress" / "main.py"


@pytest.fixture
def topic(pubsub_emulator: Any, gcp_project: str) -> Iterator[tuple[str, str]]:
    """A fresh topic and a pull subscription on it."""
    from google.cloud import pubsub_v1

    name = f"events-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic_path = publisher.create_topic(name=publisher.topic_path(gcp_project, name)).name
    sub_path = subscriber.create_subscription(
        name=subscriber.subscription_path(gcp_project, name), topic=topic_path
    ).name
    yield name, sub_path
    subscriber.close()


@pytest.fixture
def client(topic: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> Any:
    import functions_framework

    monkeypatch.setenv("BUILDKITE_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("PUBSUB_TOPIC", topic[0])
    app = functions_framework.create_app(target="receive_webhook", source=str(SOURCE))
    _loaded()._setup.cache_clear()  # each test is a fresh instance with its own env
    return app.test_client()


def _loaded() -> Any:
    """The module functions-framework loaded from main.py."""
    import sys

    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(SOURCE):
            return module
    raise LookupError("ingress module not loaded")


def _pull(subscription: str, expected: int = 1, timeout: float = 20.0) -> list[Any]:
    from google.api_core.exceptions import DeadlineExceeded
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    received: list[Any] = []
    deadline = time.monotonic() + timeout
    while len(received) < expected and time.monotonic() < deadline:
        wait = max(0.1, min(5.0, deadline - time.monotonic()))
        try:
            response = subscriber.pull(request={"subscription": subscription, "max_messages": 50}, timeout=wait)
        except DeadlineExceeded:
            continue
        if response.received_messages:
            subscriber.acknowledge(
                request={"subscription": subscription, "ack_ids": [m.ack_id for m in response.received_messages]}
            )
            received += [m.message for m in response.received_messages]
    subscriber.close()
    return received


def _signed(body: bytes, *, at: int | None = None, token: str = TOKEN) -> dict[str, str]:
    return {"X-Buildkite-Signature": sign(body, token, int(time.time()) if at is None else at)}


def _post(client: Any, body: bytes, headers: dict[str, str], event: str | None = None) -> Any:
    if event is not None:
        headers = {**headers, "X-Buildkite-Event": event}
    return client.post("/", data=body, headers={"Content-Type": "application/json", **headers})


@pytest.mark.parametrize("name", payload_names())
def test_every_fixture_arrives_on_the_topic_with_its_attributes(
    client: Any, topic: tuple[str, str], name: str, capsys: Any
) -> None:
    body = payload_bytes(name)
    sent = json.loads(body)
    response = _post(client, body, _signed(body), sent["event"])
    assert response.status_code == 200, response.get_json()
    message_id = response.get_json()["message_id"]

    (message,) = _pull(topic[1])
    assert message.message_id == message_id
    attributes = dict(message.attributes)
    assert attributes["event_type"] == sent["event"]
    assert attributes["origin"] == "buildkite-webhook"
    assert all(value for value in attributes.values())
    data = json.loads(message.data)
    assert data["event_type"] == sent["event"]
    for key, value in sent.items():
        if key != "build":
            assert data[key] == value
    if "build" in sent:
        build = sent["build"]
        assert attributes["build_state"] == build["state"]
        assert attributes["build_number"] == str(build["number"])
        assert attributes["branch"] == build["branch"]
        assert attributes["pipeline"] == sent["pipeline"]["slug"] == data["build"]["pipeline"]
        assert {k: v for k, v in data["build"].items() if k not in ("pipeline", "organization")} == build
    if sent["event"].startswith("build."):
        assert attributes["blocked"] == str(sent["build"]["blocked"]).lower()
    if sent["event"].startswith("job."):
        assert (attributes["job_state"], attributes["job_type"]) == (sent["job"]["state"], sent["job"]["type"])
    delivered = parse_delivery({"message": {"data": base64.b64encode(message.data).decode(), "messageId": "1"}})
    (published,) = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "published"]
    assert published["event_key"] == delivered.key_hash  # the ingress's lines and every function's share one key


def test_plain_token_is_accepted(client: Any, topic: tuple[str, str]) -> None:
    body = payload_bytes("ping")
    response = _post(client, body, {"X-Buildkite-Token": TOKEN}, "ping")
    assert response.status_code == 200
    assert len(_pull(topic[1])) == 1


def test_external_signature_vector_is_accepted(client: Any, topic: tuple[str, str], monkeypatch: Any) -> None:
    """go-buildkite's published vector, byte for byte (a huge tolerance: it is from 2022)."""
    vector = json.loads((FIXTURES / "signatures" / "vectors.json").read_text())[0]
    body = (FIXTURES / vector["body_file"]).read_bytes()
    monkeypatch.setenv("BUILDKITE_WEBHOOK_TOKEN", vector["token"])
    monkeypatch.setenv("SIGNATURE_TOLERANCE_SECONDS", str(int(time.time()) - vector["timestamp"] + 60))
    _loaded()._setup.cache_clear()
    response = _post(client, body, {"X-Buildkite-Signature": vector["expected_header"]}, "ping")
    assert response.status_code == 200, response.get_json()
    assert len(_pull(topic[1])) == 1


UNAUTHORIZED = {"error": "invalid or missing Buildkite token or signature"}


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"X-Buildkite-Token": "wrong"},
        {"X-Buildkite-Token": ""},
        {"X-Buildkite-Token": TOKEN + " "},
        {"X-Buildkite-Signature": "timestamp=1,signature=00"},
        {"X-Buildkite-Signature": "garbage"},
        {"X-Buildkite-Signature": "x" * 10_000},
    ],
    ids=["none", "wrong-token", "empty-token", "token-with-space", "bad-signature", "garbage", "huge-header"],
)
def test_bad_or_missing_auth_is_401_with_one_body(client: Any, topic: tuple[str, str], headers: dict[str, str]) -> None:
    response = _post(client, payload_bytes("ping"), headers, "ping")
    assert response.status_code == 401
    assert response.get_json() == UNAUTHORIZED
    assert _pull(topic[1], timeout=1) == []


@pytest.mark.parametrize("skew", [-301, 301, -86_400, 10**9])
def test_stale_or_future_signatures_are_401(client: Any, skew: int) -> None:
    body = payload_bytes("ping")
    response = _post(client, body, _signed(body, at=int(time.time()) + skew), "ping")
    assert response.status_code == 401
    assert response.get_json() == UNAUTHORIZED


def test_a_replayed_signature_after_the_window_is_401(client: Any, monkeypatch: Any) -> None:
    body = payload_bytes("ping")
    headers = _signed(body, at=int(time.time()) - 120)
    assert _post(client, body, headers, "ping").status_code == 200
    monkeypatch.setenv("SIGNATURE_TOLERANCE_SECONDS", "60")  # the window has passed
    _loaded()._setup.cache_clear()
    assert _post(client, body, headers, "ping").status_code == 401


def test_signature_over_a_tampered_body_is_401(client: Any) -> None:
    body = payload_bytes("build.finished.failed")
    headers = _signed(body)
    tampered = body.replace(b'"failed"', b'"passed"')
    assert _post(client, tampered, headers, "build.finished").status_code == 401


def test_signature_signed_with_another_token_is_401(client: Any) -> None:
    body = payload_bytes("ping")
    assert _post(client, body, _signed(body, token="another-token"), "ping").status_code == 401


def test_require_signature_rejects_plain_tokens(client: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("BUILDKITE_REQUIRE_SIGNATURE", "true")
    _loaded()._setup.cache_clear()
    body = payload_bytes("ping")
    assert _post(client, body, {"X-Buildkite-Token": TOKEN}, "ping").status_code == 401
    assert _post(client, body, _signed(body), "ping").status_code == 200


@pytest.mark.parametrize("method", ["GET", "PUT", "DELETE", "PATCH"])
def test_non_post_is_405(client: Any, method: str) -> None:
    response = client.open("/", method=method, headers={"X-Buildkite-Token": TOKEN})
    assert response.status_code == 405
    assert response.headers["Allow"] == "POST"


def test_bodies_over_the_limit_are_413_before_auth(client: Any, topic: tuple[str, str]) -> None:
    body = b'{"event": "ping", "pad": "' + b"x" * (10 * 1024 * 1024) + b'"}'
    response = _post(client, body, _signed(body), "ping")
    assert response.status_code == 413
    assert _pull(topic[1], timeout=1) == []


def test_body_limit_is_configurable(client: Any, monkeypatch: Any) -> None:
    monkeypatch.setenv("MAX_BODY_BYTES", "100")
    _loaded()._setup.cache_clear()
    body = payload_bytes("ping")
    assert _post(client, body, _signed(body), "ping").status_code == 413


@pytest.mark.parametrize(
    ("body", "reason"),
    [
        (b'{"event": "ping", "n": 1e999}', "out of range"),
        (b'{"event": "ping", "n": -1E+999}', "out of range"),
        (b'{"event": "ping", "n": NaN}', "NaN"),
        (b'{"event": "ping", "n": Infinity}', "Infinity"),
        (b'{"event": "ping", "n": ' + b"[" * 129 + b"]" * 129 + b"}", "deeper than 128"),
        (b"\xff\xfe{}", "UTF-8"),
        (b"{not json", "JSON"),
        (b"", "JSON"),
        (b"[1, 2, 3]", "object"),
        (b'"ping"', "object"),
        (b'{"build": {}}', "event"),
        (b'{"event": ""}', "event"),
        (b'{"event": 42}', "event"),
        (b"[" * 100_000 + b"]" * 100_000, "JSON"),
        (b'{"event": "ping", "n": 1' + b"0" * 5000 + b"}", "JSON"),
    ],
    ids=[
        "1e999",
        "-1e999",
        "nan",
        "infinity",
        "nested-129",
        "not-utf8",
        "not-json",
        "empty",
        "array",
        "string",
        "no-event",
        "empty-event",
        "event-not-string",
        "deep",
        "bigint",
    ],
)
def test_malformed_bodies_are_400_with_a_reason(client: Any, topic: tuple[str, str], body: bytes, reason: str) -> None:
    response = _post(client, body, _signed(body))
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert _pull(topic[1], timeout=1) == []


def test_event_header_disagreeing_with_body_is_400(client: Any) -> None:
    body = payload_bytes("build.finished.failed")
    response = _post(client, body, _signed(body), "build.running")
    assert response.status_code == 400
    assert "disagree" in response.get_json()["error"]


def test_unknown_future_events_are_published(client: Any, topic: tuple[str, str]) -> None:
    body = json.dumps({"event": "pipeline.teleported", "pipeline": {"slug": "p"}, "extra": [1, {"a": None}]}).encode()
    response = _post(client, body, _signed(body), "pipeline.teleported")
    assert response.status_code == 200
    (message,) = _pull(topic[1])
    assert message.attributes["event_type"] == "pipeline.teleported"
    assert json.loads(message.data)["extra"] == [1, {"a": None}]


def test_long_branch_names_are_truncated_in_attributes_not_in_data(client: Any, topic: tuple[str, str]) -> None:
    sent = payload("build.finished.failed")
    sent["build"]["branch"] = "feature/" + "ü" * 5_000
    body = json.dumps(sent, ensure_ascii=False).encode()
    assert _post(client, body, _signed(body), "build.finished").status_code == 200
    (message,) = _pull(topic[1])
    branch = message.attributes["branch"]
    assert len(branch.encode()) <= MAX_ATTRIBUTE_BYTES
    assert sent["build"]["branch"].startswith(branch)
    assert json.loads(message.data)["build"]["branch"] == sent["build"]["branch"]


def test_publish_failure_is_503(client: Any, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("PUBSUB_TOPIC", "no-such-topic")
    _loaded()._setup.cache_clear()
    body = payload_bytes("ping")
    response = _post(client, body, _signed(body), "ping")
    assert response.status_code == 503
    assert "Traceback" not in response.get_data(as_text=True)
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "publish_failed"]
    assert "HTTP 404" in line["message"]  # the topic is missing: said at once, not retried


def test_missing_token_configuration_is_503_and_named_in_logs(client: Any, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.delenv("BUILDKITE_WEBHOOK_TOKEN")
    _loaded()._setup.cache_clear()
    capsys.readouterr()
    assert _post(client, payload_bytes("ping"), {"X-Buildkite-Token": "x"}, "ping").status_code == 503
    assert any("BUILDKITE_WEBHOOK_TOKEN" in line["message"] for line in log_lines(capsys.readouterr().out))


def test_the_token_never_appears_in_logs_or_answers(client: Any, capsys: Any) -> None:
    body = payload_bytes("ping")
    answers = [
        _post(client, body, {"X-Buildkite-Token": TOKEN}, "ping"),
        _post(client, body, {"X-Buildkite-Token": TOKEN + "x"}, "ping"),
        _post(client, b"{", {"X-Buildkite-Token": TOKEN}),
    ]
    output = capsys.readouterr()
    assert [a.status_code for a in answers] == [200, 401, 400]
    for text in (output.out, output.err, *(a.get_data(as_text=True) for a in answers)):
        assert TOKEN not in text


def test_manifest_describes_this_function() -> None:
    import yaml

    manifest = yaml.safe_load(Path(SOURCE.parent / "function.yaml").read_text())
    assert manifest["entry_point"] == "receive_webhook"
    assert manifest["trigger"] == "http"
    assert "BUILDKITE_WEBHOOK_TOKEN" in manifest["secrets"]
    assert manifest["optional_secrets"] == ["BUILDKITE_WEBHOOK_TOKEN_PREVIOUS"]  # mounted only during a rotation


# --- configuration refused at start-up ----------------------------------------------------------


def _config_error(client: Any, capsys: Any) -> str:
    capsys.readouterr()
    assert _post(client, payload_bytes("ping"), {"X-Buildkite-Token": TOKEN}, "ping").status_code == 503
    (line,) = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "config_error"]
    return str(line["message"])


def test_a_token_stored_with_a_trailing_newline_still_matches(
    client: Any, topic: tuple[str, str], monkeypatch: Any
) -> None:
    monkeypatch.setenv("BUILDKITE_WEBHOOK_TOKEN", TOKEN + "\n")  # `echo $TOKEN | gcloud secrets versions add ...`
    _loaded()._setup.cache_clear()
    body = payload_bytes("ping")
    assert _post(client, body, {"X-Buildkite-Token": TOKEN}, "ping").status_code == 200
    assert _post(client, body, _signed(body), "ping").status_code == 200
    assert len(_pull(topic[1], expected=2)) == 2


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("BUILDKITE_WEBHOOK_TOKEN", " \n\t"),
        ("SIGNATURE_TOLERANCE_SECONDS", "-5"),
        ("SIGNATURE_TOLERANCE_SECONDS", "0"),
        ("PUBLISH_DEADLINE_SECONDS", "0"),
        ("PUBLISH_DEADLINE_SECONDS", "26"),  # the manifest's 30 s timeout leaves at most 25
        ("MAX_BODY_BYTES", "0"),
    ],
)
def test_bad_settings_are_configuration_errors_naming_the_variable(
    client: Any, monkeypatch: Any, capsys: Any, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    _loaded()._setup.cache_clear()
    assert name in _config_error(client, capsys)


def test_the_manifest_deadline_ends_before_the_timeout() -> None:
    import yaml

    manifest = yaml.safe_load(Path(SOURCE.parent / "function.yaml").read_text())
    deadline = float(manifest["env"]["PUBLISH_DEADLINE_SECONDS"])
    assert 0 < deadline <= manifest["resources"]["timeout_seconds"] - load_function("ingress").ANSWER_MARGIN_SECONDS


# --- token rotation -------------------------------------------------------------------------------

PREVIOUS = "previous-webhook-token-91a2"


@pytest.mark.parametrize("method", ["signature", "token"])
def test_the_previous_token_is_accepted_while_configured_and_refused_after(
    client: Any, topic: tuple[str, str], monkeypatch: Any, capsys: Any, method: str
) -> None:
    body = payload_bytes("ping")
    headers = _signed(body, token=PREVIOUS) if method == "signature" else {"X-Buildkite-Token": PREVIOUS}
    monkeypatch.setenv("BUILDKITE_WEBHOOK_TOKEN_PREVIOUS", PREVIOUS)
    _loaded()._setup.cache_clear()
    capsys.readouterr()
    assert _post(client, body, headers, "ping").status_code == 200
    current = _signed(body) if method == "signature" else {"X-Buildkite-Token": TOKEN}
    assert _post(client, body, current, "ping").status_code == 200
    published = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "published"]
    assert [(line["auth"], line["auth_token"]) for line in published] == [(method, "previous"), (method, "current")]
    assert len(_pull(topic[1], expected=2)) == 2

    monkeypatch.delenv("BUILDKITE_WEBHOOK_TOKEN_PREVIOUS")  # rotation done: instances restart without it
    _loaded()._setup.cache_clear()
    assert _post(client, body, headers, "ping").status_code == 401
    assert _post(client, body, current, "ping").status_code == 200


def test_the_previous_token_never_appears_in_logs(client: Any, monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.setenv("BUILDKITE_WEBHOOK_TOKEN_PREVIOUS", PREVIOUS)
    _loaded()._setup.cache_clear()
    body = payload_bytes("ping")
    _post(client, body, {"X-Buildkite-Token": PREVIOUS}, "ping")
    _post(client, body, {"X-Buildkite-Token": PREVIOUS + "x"}, "ping")
    output = capsys.readouterr()
    assert PREVIOUS not in output.out + output.err


# --- publishing through a Pub/Sub outage: the fault proxy in front of the emulator ----------------


@pytest.fixture
def proxied(client: Any, pubsub_emulator: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, FaultProxy]]:
    """(client, proxy): the ingress publishes through a fault proxy; the tests pull from the emulator directly."""
    with FaultProxy(pubsub_emulator.url) as proxy:
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", proxy.host)
        monkeypatch.setenv("PUBLISH_DEADLINE_SECONDS", "8")
        _loaded()._setup.cache_clear()
        _loaded()._setup()  # the publisher keeps the proxy's address
        monkeypatch.setenv("PUBSUB_EMULATOR_HOST", pubsub_emulator.host)
        yield client, proxy


PUBLISH = r":publish$"


def _deadline(seconds: float) -> None:
    """Shorten this instance's publish deadline (for tests that wait it out)."""
    _loaded()._setup()[1].deadline_seconds = seconds


def _publish_failed(client: Any, capsys: Any) -> str:
    """Post a ping; check it gets the documented 503 and one publish_failed line, and return that line's message."""
    body = payload_bytes("ping")
    capsys.readouterr()
    response = _post(client, body, _signed(body), "ping")
    assert response.status_code == 503
    assert response.get_json() == {"error": "could not queue the event; it was not accepted"}
    (line,) = _published(capsys)
    assert line["outcome"] == "publish_failed" and line["severity"] == "ERROR"
    return str(line["message"])


def _published(capsys: Any) -> list[dict[str, Any]]:
    return [
        line for line in log_lines(capsys.readouterr().out) if line.get("outcome") in ("published", "publish_failed")
    ]


def test_an_outage_of_a_few_seconds_ends_on_the_topic_exactly_once(
    proxied: tuple[Any, FaultProxy], topic: tuple[str, str], capsys: Any
) -> None:
    client, proxy = proxied
    proxy.fail(PUBLISH, "status", times=3, status=503)
    proxy.fail(PUBLISH, "drop", times=2)  # connection closed unanswered, nothing stored
    proxy.fail(PUBLISH, "status", times=1, status=429, retry_after=1)
    body = payload_bytes("build.finished.failed")
    capsys.readouterr()
    response = _post(client, body, _signed(body), "build.finished")
    assert response.status_code == 200, response.get_json()
    assert proxy.pending() == 0 and len(proxy.forwarded(PUBLISH)) == 1
    (message,) = _pull(topic[1], expected=2, timeout=3)  # one, not two
    assert message.message_id == response.get_json()["message_id"]
    assert [line["outcome"] for line in _published(capsys)] == ["published"]


def test_a_slow_pubsub_gets_time_to_answer_rather_than_a_second_copy(
    proxied: tuple[Any, FaultProxy], topic: tuple[str, str]
) -> None:
    client, proxy = proxied
    proxy.fail(PUBLISH, "slow", delay=3.0)  # the first attempt may wait 4 s of the 8 s deadline
    body = payload_bytes("build.finished.failed")
    assert _post(client, body, _signed(body), "build.finished").status_code == 200
    assert len(proxy.seen) == 1
    assert len(_pull(topic[1], expected=2, timeout=3)) == 1


def test_an_attempt_stored_after_its_timeout_is_a_duplicate_with_the_same_event_key(
    proxied: tuple[Any, FaultProxy], topic: tuple[str, str]
) -> None:
    """The one duplicate left: the answer came too late, the event was stored, the next attempt stores it again.
    Both copies carry the same data, hence the same event_key, which every consumer dedupes on."""
    client, proxy = proxied
    proxy.fail(PUBLISH, "slow", delay=5.0)  # past the first attempt's 4 s, then forwarded
    body = payload_bytes("build.finished.failed")
    assert _post(client, body, _signed(body), "build.finished").status_code == 200
    messages = _pull(topic[1], expected=2)
    assert len(messages) == 2
    assert messages[0].data == messages[1].data
    keys = {parse_delivery({"message": {"data": base64.b64encode(m.data).decode(), "messageId": m.message_id}}).key
            for m in messages}  # fmt: skip
    assert len(keys) == 1


def test_an_outage_past_the_deadline_is_the_documented_503(
    proxied: tuple[Any, FaultProxy], topic: tuple[str, str], monkeypatch: Any, capsys: Any
) -> None:
    client, proxy = proxied
    _deadline(3)
    proxy.fail(PUBLISH, "status", times=1000, status=503)
    reason = _publish_failed(client, capsys)
    assert "HTTP 503" in reason and "gave up after" in reason
    assert len(proxy.seen) > 3  # retried, within the deadline
    assert _pull(topic[1], timeout=1) == []


@pytest.mark.parametrize(
    "answer", [b"<html>proxy login</html>", b'{"unexpected": true}', b""], ids=["html", "json", "empty"]
)
def test_a_200_that_is_not_pubsubs_answer_is_retried_then_503(
    proxied: tuple[Any, FaultProxy], topic: tuple[str, str], capsys: Any, answer: bytes
) -> None:
    client, proxy = proxied
    _deadline(2)
    proxy.fail(PUBLISH, "status", times=1000, status=200, body=answer)
    assert "200 without a message id" in _publish_failed(client, capsys)
    proxy.clear()
    body = payload_bytes("ping")
    assert _post(client, body, _signed(body), "ping").status_code == 200
    assert len(_pull(topic[1], expected=2, timeout=3)) == 1


# --- Google credentials (production path: no emulator) --------------------------------------------


@pytest.fixture
def production(client: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    """The ingress as deployed: no emulator, so it needs Google credentials before publishing."""
    monkeypatch.delenv("PUBSUB_EMULATOR_HOST", raising=False)
    monkeypatch.setenv("PUBLISH_DEADLINE_SECONDS", "3")
    monkeypatch.setenv("GCE_METADATA_HOST", "127.0.0.1:9")  # never the real metadata server
    monkeypatch.setenv("NO_GCE_CHECK", "True")
    _loaded()._setup.cache_clear()
    return client


def _credentials_file(tmp_path: Path, token_uri: str) -> str:
    """A service account key whose token endpoint is ``token_uri`` (google-auth honours it for this type)."""
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048).private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    info = {
        "type": "service_account",
        "project_id": "buildkite-fanout-test",
        "private_key_id": "1",
        "private_key": key.decode(),
        "client_email": "ingress@buildkite-fanout-test.iam.gserviceaccount.com",
        "client_id": "1",
        "token_uri": token_uri,
    }
    path = tmp_path / "credentials.json"
    path.write_text(json.dumps(info))
    return str(path)


def test_missing_credentials_are_the_documented_503(
    production: Any, monkeypatch: Any, tmp_path: Path, capsys: Any
) -> None:
    monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", str(tmp_path / "missing.json"))  # DefaultCredentialsError
    assert "DefaultCredentialsError" in _publish_failed(production, capsys)


@pytest.mark.parametrize(("status", "error"), [(400, "invalid_grant"), (503, "backend_error")])
def test_a_token_refresh_that_fails_is_the_documented_503(
    production: Any, monkeypatch: Any, tmp_path: Path, capsys: Any, status: int, error: str
) -> None:
    with StandIn() as token_server:
        token_server.route("POST", "/token", lambda _: Reply(status, {"error": error, "error_description": "no"}))
        monkeypatch.setenv("GOOGLE_APPLICATION_CREDENTIALS", _credentials_file(tmp_path, f"{token_server.url}/token"))
        assert "could not refresh the Google access token" in _publish_failed(production, capsys)
        assert token_server.recorded("/token")  # it did try


# --- one trace per event ----------------------------------------------------------------------

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"


def _message_trace(message: Any) -> TraceContext:
    trace = parse_traceparent(message.attributes[TRACEPARENT_ATTRIBUTE])
    assert trace is not None, message.attributes
    return trace


@pytest.mark.parametrize(
    ("header", "sampled"),
    [
        ({"traceparent": f"00-{TRACE}-{SPAN}-01"}, True),
        ({"traceparent": f"00-{TRACE}-{SPAN}-00"}, False),
        ({"X-Cloud-Trace-Context": f"{TRACE}/{int(SPAN, 16)};o=1"}, True),
    ],
)
def test_the_callers_trace_goes_on_the_message_and_every_line(
    client: Any, topic: tuple[str, str], capsys: Any, gcp_project: str, header: dict[str, str], sampled: bool
) -> None:
    body = payload_bytes("build.finished.failed")
    capsys.readouterr()
    assert _post(client, body, {**_signed(body), **header}, "build.finished").status_code == 200
    (message,) = _pull(topic[1])
    trace = _message_trace(message)
    assert (trace.trace_id, trace.sampled) == (TRACE, sampled)
    assert trace.span_id != SPAN  # the ingress's own publish span is the message's parent
    lines = log_lines(capsys.readouterr().out)
    assert lines and all(line[TRACE_FIELD] == f"projects/{gcp_project}/traces/{TRACE}" for line in lines)
    (published,) = [line for line in lines if line.get("outcome") == "published"]
    assert len(published["event_key"]) == 16 and len(published[SPAN_FIELD]) == 16
    assert (published.get("logging.googleapis.com/trace_sampled") is True) is sampled


def test_without_a_trace_header_the_ingress_starts_the_events_trace(
    client: Any, topic: tuple[str, str], capsys: Any, gcp_project: str
) -> None:
    body = payload_bytes("ping")
    capsys.readouterr()
    assert _post(client, body, _signed(body), "ping").status_code == 200
    trace = _message_trace(_pull(topic[1])[0])
    assert int(trace.trace_id, 16) and int(trace.span_id, 16)
    (published,) = [line for line in log_lines(capsys.readouterr().out) if line.get("outcome") == "published"]
    assert published[TRACE_FIELD] == f"projects/{gcp_project}/traces/{trace.trace_id}"


@pytest.mark.parametrize(
    "value",
    [
        f"00-{TRACE[:-2]}-{SPAN}-01",
        f"00-{TRACE}-{SPAN}-0x",
        f"00-{'0' * 32}-{SPAN}-01",
        f"00-{TRACE}-{'0' * 16}-01",
        f"00-{TRACE}-{SPAN}-01" + "-x" * 4000,
        f'00-{TRACE}-{SPAN}-01","severity":"EMERGENCY',
    ],
    ids=["short", "non-hex", "zero-trace", "zero-span", "huge", "injection"],
)
def test_a_hostile_traceparent_starts_a_new_trace_and_is_never_logged(
    client: Any, topic: tuple[str, str], capsys: Any, value: str
) -> None:
    body = payload_bytes("ping")
    capsys.readouterr()
    response = _post(client, body, {**_signed(body), "traceparent": value, "X-Cloud-Trace-Context": value}, "ping")
    assert response.status_code == 200
    trace = _message_trace(_pull(topic[1])[0])
    assert trace.trace_id != TRACE and trace.trace_id not in value
    output = capsys.readouterr()
    assert value not in output.out + output.err and "EMERGENCY" not in output.out


def test_spans_verify_and_publish_under_the_callers_span(
    client: Any, topic: tuple[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    spans_file = tmp_path / "traces.jsonl"
    monkeypatch.setenv("TRACE_EXPORTER", "file")
    monkeypatch.setenv("TRACE_FILE", str(spans_file))
    body = payload_bytes("build.finished.failed")
    response = _post(client, body, {**_signed(body), "traceparent": f"00-{TRACE}-{SPAN}-01"}, "build.finished")
    assert response.status_code == 200
    trace = _message_trace(_pull(topic[1])[0])
    spans = {span["name"]: span for span in map(json.loads, spans_file.read_text().splitlines())}
    assert set(spans) == {"ingress", "verify", "publish"}
    ingress, verify, publish = spans["ingress"], spans["verify"], spans["publish"]
    assert {span["context"]["trace_id"] for span in spans.values()} == {f"0x{TRACE}"}
    assert ingress["parent_id"] == f"0x{SPAN}" and ingress["kind"] == "SpanKind.SERVER"
    assert verify["parent_id"] == publish["parent_id"] == ingress["context"]["span_id"]
    assert publish["context"]["span_id"] == f"0x{trace.span_id}" and publish["kind"] == "SpanKind.PRODUCER"
    assert publish["attributes"]["messaging.message.id"] == response.get_json()["message_id"]
    assert publish["attributes"]["buildkite.pipeline"] == "my-pipeline"
    assert verify["attributes"]["buildkite.auth"] == "signature (current)"
    assert ingress["attributes"]["http.response.status_code"] == 200
