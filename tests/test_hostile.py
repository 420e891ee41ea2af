"""Hostile input, end to end: whatever arrives, nobody crashes and nothing is retried forever.

- The ingress (the real functions-framework app, publishing to the Pub/Sub emulator) answers
  4xx for every client fault and never 5xx, and whatever it accepts (200) is on the topic.
- Every Pub/Sub function (its entry point, with its real backends: fake-gcs-server,
  bqemulator, Firestore, the third-party stand-in) acks with a logged reason; the only
  exception allowed is the handler's deliberate ``Nack`` after logging ``retry`` or
  ``config_error``. An ``error`` outcome (an unforeseen exception) fails the test.

Hypothesis runs are bounded and derandomized: the same examples every run. The shared
parser's own properties are in tests/test_properties.py.
"""

from __future__ import annotations

import json
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from buildkite_events import Nack
from buildkite_events.errors import ACKED_OUTCOMES
from buildkite_events.message import MAX_ATTRIBUTE_BYTES, to_message, truncate_utf8
from buildkite_events.signature import sign
from tests.lanes import UPSTREAM, accepted_fixtures, drain, pubsub_manifests, storage_client
from tests.support import ROOT, cloud_event, envelope, load_function, payload
from tools import LOCAL_STATE_COLLECTION
from tools.local.standin import StandIn
from tools.manifests import function_env

TOKEN = "hostile-test-webhook-token"
INGRESS = ROOT / "functions" / "ingress" / "main.py"
ACKED = ACKED_OUTCOMES
NACKED = {"retry", "config_error"}  # deliberate: the message goes back to Pub/Sub, then the dead-letter queue

BOUNDED = settings(
    max_examples=30,
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.function_scoped_fixture],
)
FEW = settings(BOUNDED, max_examples=15)

TEXT = st.text(st.characters(exclude_categories=()), max_size=40)  # every category, lone surrogates included
SCALARS = (
    st.none()
    | st.booleans()
    | st.integers(min_value=-(10**40), max_value=10**40)
    | st.floats(allow_nan=False, allow_infinity=False)
    | TEXT
)
JSON = st.recursive(
    SCALARS, lambda inner: st.lists(inner, max_size=4) | st.dictionaries(TEXT, inner, max_size=4), max_leaves=20
)
FIXTURES = sorted(p.stem for p in (ROOT / "tests" / "fixtures" / "buildkite" / "payloads").glob("*.json"))


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> Iterator[tuple[Any, ...]]:
    if isinstance(value, dict):
        for key, inner in value.items():
            yield (*prefix, key)
            yield from _paths(inner, (*prefix, key))
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            yield (*prefix, index)
            yield from _paths(inner, (*prefix, index))


def _set(body: Any, path: tuple[Any, ...], value: Any) -> None:
    for step in path[:-1]:
        body = body[step]
    body[path[-1]] = value


@st.composite
def wrong_types(draw: st.DrawFn, names: list[str], keep_event: bool = True) -> dict[str, Any]:
    """A fixture body with up to 5 fields (anywhere, at any depth) replaced by arbitrary JSON."""
    body = payload(draw(st.sampled_from(names)))
    paths = [p for p in _paths(body) if not (keep_event and p == ("event",))]
    for path in draw(st.lists(st.sampled_from(paths), min_size=1, max_size=5)):
        try:
            _set(body, path, draw(JSON))
        except (KeyError, IndexError, TypeError):  # an earlier replacement removed its parent
            continue
    return body


@st.composite
def unicode_everywhere(draw: st.DrawFn, names: list[str], keep_event: bool = True) -> dict[str, Any]:
    """A fixture body with every string (keys' values, at any depth) replaced by arbitrary text."""

    def walk(value: Any, key: Any = None) -> Any:
        if isinstance(value, dict):
            return {k: walk(v, k) for k, v in value.items()}
        if isinstance(value, list):
            return [walk(v) for v in value]
        if isinstance(value, str) and not (keep_event and key == "event"):
            return draw(TEXT)
        return value

    result: dict[str, Any] = walk(payload(draw(st.sampled_from(names))))
    return result


def _nested(depth: int) -> bytes:
    return b'{"event":"build.finished","build":{"number":1,"meta_data":' + b"[" * depth + b"]" * depth + b"}}"


def _surrogates(*, in_slug: bool = False) -> bytes:
    """A real build with lone surrogates (valid JSON escapes, invalid UTF-8) in the strings functions use."""
    body = payload("build.finished.failed")
    build = body["build"]
    build.update(id=f"0197aaaa-0000-4000-8000-00000000000{int(in_slug)}", number=90_000 + in_slug)  # a new event
    build.update(web_url=build["web_url"] + "/\ud800", message="fix \udfff", branch="main\ud83d")
    build["creator"]["name"] = "\udc80 someone"
    body["pipeline"]["name"] = "My \ud800 pipeline"
    if in_slug:
        body["pipeline"]["slug"] = "my-pipeline\udfff"
    return json.dumps(body).encode()


def _huge(field: str, value: Any) -> bytes:
    body = payload("build.finished.failed")
    body["build"][field] = value
    return json.dumps(body, ensure_ascii=False).encode()


# Bodies no strategy reaches cheaply: nesting past our depth limit (and the parser's recursion limit),
# megabytes of text, numbers JSON cannot carry.
EXTREMES = {
    "nested-120": _nested(120),
    "nested-500": _nested(500),
    "nested-976": _nested(976),
    "nested-5000": _nested(5000),
    "nested-200000": _nested(200_000),
    "huge-message": _huge("message", "x" * 900_000),
    "huge-unicode-branch": _huge("branch", "😀" * 200_000),
    "huge-number": b'{"event":"build.finished","build":{"number":' + b"9" * 5000 + b"}}",
    "nan": b'{"event":"build.finished","build":{"number":NaN}}',
    "1e999": b'{"event":"build.finished","build":{"number":1,"duration":1e999}}',
    "lone-surrogates": b'{"event":"build.finished","build":{"number":1,"message":"\\ud800\\udfff\\ud83d"}}',
    "surrogates-in-a-real-build": _surrogates(),
    "surrogate-in-the-pipeline-slug": _surrogates(in_slug=True),
    "nul-bytes": b'{"event":"build.finished","build":{"number":1,"branch":"a\\u0000b"}}\x00',
    "bom": b'\xef\xbb\xbf{"event":"ping"}',
    "duplicate-keys": b'{"event":"ping","event":"build.finished","build":{"number":1}}',
}


# --- the ingress ---------------------------------------------------------------------------


@pytest.fixture
def ingress(
    pubsub_emulator: Any, gcp_project: str, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> Iterator[tuple[Any, str]]:
    """(test client of the real app, pull subscription on its fresh topic).

    ``capsys``: stdout is a strict UTF-8 stream, as on Cloud Run (pytest's own capture would
    quietly replace what cannot be encoded).
    """
    import functions_framework
    from google.cloud import pubsub_v1

    name = f"hostile-{uuid.uuid4().hex[:8]}"
    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=publisher.topic_path(gcp_project, name)).name
    subscription = subscriber.create_subscription(name=subscriber.subscription_path(gcp_project, name), topic=topic)
    subscriber.close()
    monkeypatch.setenv("BUILDKITE_WEBHOOK_TOKEN", TOKEN)
    monkeypatch.setenv("PUBSUB_TOPIC", name)
    monkeypatch.setenv("MAX_BODY_BYTES", "1048576")
    app = functions_framework.create_app(target="receive_webhook", source=str(INGRESS))
    _ingress_module()._setup.cache_clear()  # a fresh instance with this test's env
    yield app.test_client(), subscription.name
    _ingress_module()._setup.cache_clear()


def _ingress_module() -> Any:
    for module in list(sys.modules.values()):
        if getattr(module, "__file__", None) == str(INGRESS):
            return module
    raise LookupError("ingress not loaded")


class Posts:
    """Posts to the ingress and checks every answer against the contract."""

    def __init__(self, client: Any) -> None:
        self.client = client
        self.accepted: set[str] = set()
        self.statuses: dict[int, int] = {}

    def __call__(self, body: bytes, *, event: str | None = None, signed: bool = False) -> int:
        headers = {"Content-Type": "application/json"}
        if signed:
            headers["X-Buildkite-Signature"] = sign(body, TOKEN, int(time.time()))
        else:
            headers["X-Buildkite-Token"] = TOKEN
        if event is not None and event.isprintable() and all(ord(c) < 256 for c in event):
            headers["X-Buildkite-Event"] = event  # HTTP headers are Latin-1; without one the body decides
        response = self.client.post("/", data=body, headers=headers)
        status: int = response.status_code
        self.statuses[status] = self.statuses.get(status, 0) + 1
        answer = response.get_json(silent=True)
        assert status < 500, (status, answer, body[:300])
        assert status in (200, 400, 413), (status, answer)
        if status == 200:
            assert isinstance(answer, dict) and answer.get("message_id"), answer
            self.accepted.add(answer["message_id"])
        else:
            assert isinstance(answer, dict) and answer.get("error"), answer  # a reason, for Buildkite's delivery log
        return status

    def check_published(self, subscription: str) -> None:
        """Exactly what was accepted is on the topic, each message within Pub/Sub's attribute limits."""
        messages = drain(subscription)
        assert {m["message_id"] for m in messages} == self.accepted
        for message in messages:
            attributes = message["attributes"]
            assert attributes["origin"] == "buildkite-webhook"
            assert all(len(v.encode("utf-8")) <= MAX_ATTRIBUTE_BYTES for v in attributes.values())
            assert truncate_utf8(json.loads(message["data"])["event_type"]) == attributes["event_type"]


def test_ingress_answers_4xx_for_arbitrary_bytes_and_publishes_what_it_accepts(ingress: tuple[Any, str]) -> None:
    client, subscription = ingress
    post = Posts(client)

    @BOUNDED
    @given(st.binary(max_size=2000), st.booleans())
    def arbitrary_bytes(body: bytes, signed: bool) -> None:
        post(body, signed=signed)

    @BOUNDED
    @given(JSON, st.booleans())
    def arbitrary_json(value: Any, signed: bool) -> None:
        post(json.dumps(value).encode(), signed=signed)

    @BOUNDED
    @given(st.dictionaries(TEXT, JSON, max_size=5), st.sampled_from(["ping", "build.finished", "x", " ", ""]) | TEXT)
    def objects_with_any_event(value: dict[str, Any], event: str) -> None:
        post(json.dumps({**value, "event": event}).encode(), event=event)

    arbitrary_bytes()
    arbitrary_json()
    objects_with_any_event()
    post.check_published(subscription)
    assert post.statuses.get(400, 0) > 0


def test_ingress_accepts_fixtures_with_wrong_types_or_any_unicode(ingress: tuple[Any, str]) -> None:
    client, subscription = ingress
    post = Posts(client)

    @BOUNDED
    @given(wrong_types(FIXTURES), st.booleans())
    def wrong_typed_fields(body: dict[str, Any], signed: bool) -> None:
        status = post(json.dumps(body).encode(), event=body["event"], signed=signed)
        assert status == 200  # the event name is intact: every other field is the consumers' business

    @BOUNDED
    @given(unicode_everywhere(FIXTURES, keep_event=False), st.booleans())
    def unicode_strings(body: dict[str, Any], signed: bool) -> None:
        event = body["event"]
        status = post(json.dumps(body).encode(), event=event, signed=signed)
        assert status == (200 if event.strip() and len(event) <= 128 else 400)

    wrong_typed_fields()
    unicode_strings()
    post.check_published(subscription)
    assert len(post.accepted) > 0


@pytest.mark.parametrize("name", sorted(EXTREMES))
def test_ingress_extremes_are_4xx_or_published(ingress: tuple[Any, str], name: str) -> None:
    client, subscription = ingress
    post = Posts(client)
    status = post(EXTREMES[name])
    accepted = ["nested-120", "huge-message", "huge-unicode-branch", "lone-surrogates", "duplicate-keys"]
    accepted += ["surrogates-in-a-real-build", "surrogate-in-the-pipeline-slug"]
    expected = dict.fromkeys(accepted, 200)
    assert status == expected.get(name, 400), name
    post.check_published(subscription)


def test_ingress_refuses_bodies_over_the_limit_whatever_they_hold(ingress: tuple[Any, str]) -> None:
    client, subscription = ingress
    post = Posts(client)
    assert post(b"[" * 1_048_577) == 413
    assert post(b" " * 2_000_000 + b'{"event":"ping"}') == 413
    post.check_published(subscription)


def test_a_signature_replayed_after_the_window_is_401_for_any_body(ingress: tuple[Any, str]) -> None:
    client, subscription = ingress

    @FEW
    @given(st.binary(max_size=300) | st.sampled_from([json.dumps(payload(n)).encode() for n in FIXTURES]),
           st.integers(min_value=301, max_value=10**8))  # fmt: skip
    def replayed(body: bytes, age: int) -> None:
        headers = {"X-Buildkite-Signature": sign(body, TOKEN, int(time.time()) - age)}
        response = client.post("/", data=body, headers={"Content-Type": "application/json", **headers})
        assert response.status_code == 401

    replayed()
    assert drain(subscription) == []


# --- every Pub/Sub function's entry point ---------------------------------------------------


def _json_lines(captured: str) -> list[dict[str, Any]]:
    """JSON log lines, split on "\n" only: U+0085 or U+2028 inside a JSON string is no line break
    (``str.splitlines`` would cut the line there; Cloud Logging does not)."""
    found = []
    for raw in captured.split("\n"):
        if raw.startswith("{"):
            try:
                found.append(json.loads(raw))
            except ValueError:
                continue
    return found


def _cloud_event(push: dict[str, Any]) -> Any:
    """As ``tests.support.cloud_event``, for push bodies whose ``message`` may be anything at all."""
    if isinstance(push.get("message"), dict):
        return cloud_event(push)
    from cloudevents.http import CloudEvent

    attributes = {
        "id": "hostile-1",
        "source": "//pubsub.googleapis.com/projects/buildkite-fanout-test/topics/buildkite-events",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "specversion": "1.0",
    }
    return CloudEvent(attributes, dict(push))


class Deliveries:
    """Calls one function's entry point and checks each delivery against the ack/nack contract."""

    def __init__(self, entry: Callable[[Any], None], capsys: pytest.CaptureFixture[str]) -> None:
        self.entry = entry
        self.capsys = capsys
        self.outcomes: dict[str, int] = {}
        self.nacked: list[str] = []

    def __call__(self, push: dict[str, Any]) -> str:
        self.capsys.readouterr()
        try:
            self.entry(_cloud_event(push))
        except Nack:
            nacked = True
        else:
            nacked = False
        lines = [line for line in _json_lines(self.capsys.readouterr().out) if "outcome" in line]
        assert len(lines) == 1, lines  # one outcome line per delivery, whatever happened
        outcome, message = lines[0]["outcome"], lines[0]["message"]
        self.outcomes[outcome] = self.outcomes.get(outcome, 0) + 1
        if nacked:
            assert outcome in NACKED, message  # "error" is an unforeseen exception: a bug
            self.nacked.append(message)
        else:
            assert outcome in ACKED, message
        assert message.strip(), lines[0]
        if outcome in ("invalid", "filtered"):
            assert message.startswith(f"{outcome}: ") and len(message) > len(outcome) + 2  # a reason is logged
        return str(outcome)

    def body(self, body: dict[str, Any] | bytes, attributes: dict[str, str] | None = None, **kw: Any) -> str:
        if isinstance(body, dict):
            data, derived = to_message(body, str(body.get("event")))
            return self(envelope(data, derived if attributes is None else attributes, **kw))
        return self(envelope(body, attributes or {}, **kw))


@pytest.fixture
def function_under_attack(
    request: pytest.FixtureRequest, gcp_project: str, monkeypatch: pytest.MonkeyPatch
) -> Iterator[tuple[str, Any]]:
    """(name, entry point) of one Pub/Sub function, configured against healthy local backends."""
    name: str = request.param
    m = pubsub_manifests()[name]
    values = {"project": gcp_project, "region": "local", "topic": "buildkite-events", "bigquery_api_url": ""}
    values |= {"archive_bucket": "unused", "bigquery_dataset": "unused", "state_collection": LOCAL_STATE_COLLECTION}
    if m.uses_firestore:
        request.getfixturevalue("firestore")  # an emptied emulator database
    if UPSTREAM.get(name) == "gcs":
        request.getfixturevalue("gcs_server")
        values["archive_bucket"] = storage_client().create_bucket(f"hostile-{uuid.uuid4().hex[:10]}").name
    if UPSTREAM.get(name) == "bigquery":
        dataset: str = request.getfixturevalue("bigquery_dataset")
        values["bigquery_dataset"] = dataset.split(".")[1]
        values["bigquery_api_url"] = request.getfixturevalue("bigquery_emulator").url
    with StandIn().load_providers() as standin:
        values["standin"] = standin.url
        env = {secret: f"local-{name}-{secret.lower()}" for secret in m.secrets}
        env |= function_env(m, values, local=True)
        env |= {"RETRY_BUDGET_SECONDS": "1", "RETRY_MAX_ATTEMPTS": "2", "JIRA_MAX_RETRIES": "0"}
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        entry = getattr(load_function(name), m.entry_point)
        entry.instance.reset()  # read this test's config, as a new instance would
        yield name, entry
        entry.instance.reset()


PUBSUB_FUNCTIONS = sorted(pubsub_manifests())


@pytest.mark.parametrize("function_under_attack", PUBSUB_FUNCTIONS, indirect=True)
def test_functions_ack_hostile_deliveries_with_a_reason(
    function_under_attack: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    name, entry = function_under_attack
    deliver = Deliveries(entry, capsys)
    mine = accepted_fixtures(pubsub_manifests()[name])  # bodies that get past the function's own filter
    assert mine, f"no fixture passes {name}'s filter"

    @FEW
    @given(st.binary(max_size=500), st.dictionaries(TEXT.filter(bool), TEXT, max_size=4))
    def arbitrary_data(data: bytes, attributes: dict[str, str]) -> None:
        deliver.body(data, attributes)

    @FEW
    @given(JSON)
    def arbitrary_envelopes(message: Any) -> None:
        deliver({"message": message, "subscription": "projects/p/subscriptions/s"})

    @BOUNDED
    @given(wrong_types(mine))
    def wrong_typed_fields(body: dict[str, Any]) -> None:
        deliver.body(body)

    @BOUNDED
    @given(unicode_everywhere(mine))
    def unicode_strings(body: dict[str, Any]) -> None:
        deliver.body(body)

    arbitrary_data()
    arbitrary_envelopes()
    wrong_typed_fields()
    unicode_strings()
    for label, body in EXTREMES.items():
        data = body.removeprefix(b"\xef\xbb\xbf").rstrip(b"\x00")
        deliver.body(data, {"event_type": "build.finished"}, message_id=f"extreme-{label}")
    assert deliver.outcomes.get("invalid", 0) > 0
    # Healthy backends: a nack here would park hostile input in the dead-letter queue.
    assert deliver.nacked == [], f"{name} nacked hostile input: {deliver.nacked}"


@pytest.mark.parametrize("function_under_attack", PUBSUB_FUNCTIONS, indirect=True)
def test_a_push_with_attributes_and_no_data_is_acked_as_invalid(
    function_under_attack: tuple[str, Any], capsys: pytest.CaptureFixture[str]
) -> None:
    """Pub/Sub omits ``data`` for an attributes-only message (the emulator sends ``"data": ""``).
    functions-framework answers such a push 400 before calling the function, so Pub/Sub would
    redeliver it until it dead-letters; through the real app it is acked as invalid instead."""
    import functions_framework

    name, _ = function_under_attack
    m = pubsub_manifests()[name]
    app = functions_framework.create_app(target=m.entry_point, source=str(ROOT / "functions" / name / "main.py"))
    client = app.test_client()
    push = {
        "message": {
            "attributes": {"event_type": "build.finished"},
            "messageId": "4242",
            "publishTime": "2026-01-01T00:00:00Z",
        },
        "subscription": f"projects/p/subscriptions/buildkite-events-{name}",
    }
    capsys.readouterr()
    response = client.post("/", json=push)
    assert response.status_code == 200, response.get_data(as_text=True)[:300]
    (line,) = [line for line in _json_lines(capsys.readouterr().out) if "outcome" in line]
    assert line["outcome"] == "invalid" and line["message"] == "invalid: Pub/Sub message has no data"
    assert line["function"] == name
    assert client.post("/", json={"not": "a push"}).status_code == 400  # anything else keeps the framework's 400
