"""The dashboard and the alerts read the log lines the code really writes.

``terraform test -verbose`` renders the repository's own configuration against the mocked
provider and prints the state: the log-based metrics, the alert policies, the dashboard.
The code writes the lines: every Pub/Sub function's delivery plumbing (the shared handler
with that function's manifest) in each way a delivery can end, the real functions when
their credentials are missing, and the real ingress answering requests. Each line becomes
the log entry Cloud Run makes of it and goes through the rendered filters, extractors and
alert conditions. A renamed log field, outcome or function breaks these tests, not the
dashboard.
"""

from __future__ import annotations

import contextlib
import dataclasses
import io
import json
import re
import sys
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from buildkite_events import ConfigError, InvalidEvent, TransientError
from buildkite_events.errors import Skip
from buildkite_events.filters import parse_filter
from buildkite_events.handler import Nack, pubsub_handler
from buildkite_events.manifest import Manifest
from buildkite_events.message import to_message
from tests.support import PAYLOADS, ROOT, cloud_event, envelope, load_function, log_lines
from tools.manifests import all_manifests
from tools.terraform import check

PROJECT = "buildkite-fanout-ci"  # terraform/tests/repository.tftest.hcl's project_id
PUBSUB = {name: m for name, m in all_manifests().items() if m.is_pubsub}
Entry = dict[str, Any]
Series = dict[str, str]


# --- what Cloud Logging and Cloud Monitoring do with them, for the syntax we use ----------


def stdout_entry(line: dict[str, Any], service: str) -> Entry:
    """The log entry Cloud Run makes of a JSON line on a container's stdout: special fields
    lifted out, the rest (``message`` included) as jsonPayload."""
    special = {"severity", "time", "timestamp", "httpRequest"}
    payload = {k: v for k, v in line.items() if k not in special and not k.startswith("logging.googleapis.com/")}
    return {
        "logName": f"projects/{PROJECT}/logs/run.googleapis.com%2Fstdout",
        "resource": _revision(service),
        "severity": line.get("severity", "DEFAULT"),
        "jsonPayload": payload,
    }


def request_entry(status: int, service: str) -> Entry:
    """The entry Cloud Run writes to its request log for each answer of a service."""
    return {
        "logName": f"projects/{PROJECT}/logs/run.googleapis.com%2Frequests",
        "resource": _revision(service),
        "severity": "ERROR" if status >= 500 else "WARNING" if status >= 400 else "INFO",
        "httpRequest": {"requestMethod": "POST", "status": status, "latency": "0.012s"},
    }


def _revision(service: str) -> dict[str, Any]:
    labels = {"project_id": PROJECT, "service_name": service, "revision_name": f"{service}-00001-abc"}
    return {"type": "cloud_run_revision", "labels": {**labels, "location": "us-central1"}}


def _field(entry: Entry, path: str) -> Any:
    value: Any = entry
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


def _strings(text: str, separator: str) -> list[str]:
    items = [item.strip() for item in text.split(separator)]
    assert all(re.fullmatch(r'"[^"\\]*"', item) for item in items), f"unsupported values: {text}"
    return [json.loads(item) for item in items]


def log_filter_matches(text: str, entry: Entry) -> bool:
    """The Logging query language as the metrics use it: terms joined by AND, each
    ``field:*``, ``field = "v"`` or ``field = ("a" OR "b")``. Anything else fails loudly."""
    for term in text.split(" AND "):
        if has := re.fullmatch(r"([\w.]+):\*", term):
            ok = _field(entry, has[1]) is not None
        elif equal := re.fullmatch(r"([\w.]+) = \((.*)\)", term):
            ok = str(_field(entry, equal[1])) in _strings(equal[2], " OR ")
        elif equal := re.fullmatch(r'([\w.]+) = ("[^"\\]*")', term):
            ok = str(_field(entry, equal[1])) == json.loads(equal[2])
        else:
            raise AssertionError(f"unsupported Logging filter term: {term}")
        if not ok:
            return False
    return True


def extract(expression: str, entry: Entry) -> str | None:
    """A label or value extractor: ``EXTRACT(field)`` (the field's value as text, or nothing)."""
    match = re.fullmatch(r"EXTRACT\(([\w.]+)\)", expression)
    assert match, f"unsupported extractor: {expression}"
    value = _field(entry, match[1])
    return None if value is None or isinstance(value, dict | list) else str(value)


def monitoring_filter_matches(text: str, series: Series) -> bool:
    """Cloud Monitoring filters as the charts and alerts use them: ``key = "v"``,
    ``key = starts_with("p")``, ``key = one_of("a", "b")``, joined by AND."""
    for term in text.split(" AND "):
        if equal := re.fullmatch(r'([\w.]+) = ("[^"\\]*")', term):
            ok = series.get(equal[1]) == json.loads(equal[2])
        elif prefix := re.fullmatch(r'([\w.]+) = starts_with\(("[^"\\]*")\)', term):
            ok = series.get(prefix[1], "\0").startswith(json.loads(prefix[2]))
        elif one_of := re.fullmatch(r"([\w.]+) = one_of\((.*)\)", term):
            ok = series.get(one_of[1]) in _strings(one_of[2], ",")
        else:
            raise AssertionError(f"unsupported Monitoring filter term: {term}")
        if not ok:
            return False
    return True


@dataclasses.dataclass(frozen=True)
class Rendered:
    """What ``terraform test`` planned for the repository's own manifests."""

    resources: dict[str, dict[str, Any]]  # address -> values

    def metric(self, name: str) -> dict[str, Any]:
        return self.resources[f"google_logging_metric.{name}[0]"]

    def condition(self, policy: str) -> dict[str, Any]:
        values = self.resources[f"google_monitoring_alert_policy.{policy}[0]"]
        return dict(values["conditions"][0]["condition_threshold"][0])

    @property
    def dashboard(self) -> dict[str, Any]:
        return dict(json.loads(self.resources["google_monitoring_dashboard.fanout"]["dashboard_json"]))

    def point(self, metric: str, entry: Entry) -> Series | None:
        """The time series a log entry adds a point to, or None when the metric skips it."""
        values = self.metric(metric)
        if not log_filter_matches(values["filter"], entry):
            return None
        series = {"metric.type": f"logging.googleapis.com/user/{values['name']}", "resource.type": "cloud_run_revision"}
        series |= {f"resource.label.{k}": v for k, v in entry["resource"]["labels"].items()}
        for label, expression in values["label_extractors"].items():
            series[f"metric.label.{label}"] = extract(expression, entry) or ""  # a failed extraction: ""
        return series


@pytest.fixture(scope="module")
def rendered() -> Rendered:
    args = [
        "test",
        "-json",
        "-verbose",
        "-no-color",
        "-filter=tests/repository.tftest.hcl",
        "-var=bundle_dir={bundles}",
        "-var=manifests_file={manifests}",  # written from functions/*/function.yaml, as `make package` does
    ]
    result = check._with_standin("render", args)
    assert result.ok, result.output
    for raw in result.output.splitlines():
        message = json.loads(raw)
        if message.get("type") == "test_state":
            resources = message["test_state"]["root_module"]["resources"]
            return Rendered({r["address"]: r["values"] for r in resources})
    raise AssertionError(f"terraform test printed no state:\n{result.output}")


# --- the lines the code writes --------------------------------------------------------------


def accepted_message(m: Manifest) -> tuple[bytes, dict[str, str]]:
    """A fixture event that passes the function's filter, as the ingress publishes it."""
    accepts = parse_filter(m.filter)
    for path in sorted(PAYLOADS.glob("*.json"), key=lambda p: p.stem != "build.finished.failed"):
        body = json.loads(path.read_bytes())
        data, attributes = to_message(body, body["event"])
        if accepts.matches(attributes):
            return data, attributes
    raise LookupError(f"no fixture passes {m.name}'s filter")


def _written(deliver: Callable[[], Any]) -> list[dict[str, Any]]:
    """The JSON lines one delivery writes to stdout (its Nack, if any, is the answer, not a failure)."""
    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(Nack):
        deliver()
    return log_lines(out.getvalue())


def _fails(error: Exception) -> Callable[[Any, Any], None]:
    def handler(event: Any, config: Any) -> None:
        raise error

    return handler


# Each way a delivery can end, and what the handler does to end that way.
ENDINGS: dict[str, Callable[[Any, Any], Any]] = {
    "success": lambda event, config: "posted",
    "nothing to do": _fails(Skip("state passed is not notified")),
    "never succeeds": _fails(InvalidEvent("Jira issue PROJ-1 does not exist")),
    "misconfigured": _fails(ConfigError("SLACK_TOKEN is not set")),
    "transient failure": _fails(TransientError("stand-in answered 503")),
    "bug": _fails(RuntimeError("unexpected answer")),
}


def delivery_lines(m: Manifest, ending: str) -> list[dict[str, Any]]:
    entry = pubsub_handler(manifest=m.path)(ENDINGS[ending])
    # The plumbing only: an idempotent function's Firestore claim writes no line of its own.
    entry.instance._manifest = dataclasses.replace(entry.instance.manifest, state=frozenset())  # type: ignore[attr-defined]
    data, attributes = accepted_message(m)
    return _written(lambda: entry(cloud_event(envelope(data, attributes))))


@pytest.fixture
def quick_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """One retry after the first backoff (0.5 s), then the delivery gives up."""
    monkeypatch.setenv("RETRY_MAX_ATTEMPTS", "2")
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "1")


# --- the tests --------------------------------------------------------------------------------


@pytest.mark.usefixtures("quick_retries")
@pytest.mark.parametrize("name", sorted(PUBSUB))
def test_each_delivery_is_counted_once_with_its_function_and_outcome(rendered: Rendered, name: str) -> None:
    outcomes: dict[str, Series] = {}
    value_extractor = rendered.metric("delivery_duration")["value_extractor"]
    for ending in ENDINGS:
        lines = delivery_lines(PUBSUB[name], ending)
        counted = [(e, p) for line in lines if (p := rendered.point("deliveries", e := stdout_entry(line, name)))]
        assert len(counted) == 1, f"{ending}: one point per delivery, got {len(counted)} from {lines}"
        ((entry, series),) = counted
        assert series["metric.label.function"] == name
        assert series["metric.label.outcome"] != ""
        timed = rendered.point("delivery_duration", entry)
        assert timed is not None and timed["metric.label.outcome"] == series["metric.label.outcome"]
        duration = extract(value_extractor, entry)
        assert duration is not None and float(duration) >= 0, f"no duration in {entry}"
        outcomes[ending] = series
        if ending == "transient failure":  # the retry's own line carries the function, not an outcome
            assert len(lines) > 1, lines

    # One outcome per ending: the chart's bars and the alert tell them apart.
    assert len({series["metric.label.outcome"] for series in outcomes.values()}) == len(ENDINGS)
    config_alert = rendered.condition("config_error")["filter"]
    paged = [ending for ending, series in outcomes.items() if monitoring_filter_matches(config_alert, series)]
    assert paged == ["misconfigured"]


@pytest.mark.usefixtures("quick_retries")
def test_the_dashboard_charts_each_functions_outcomes_and_the_p95_of_successes(rendered: Rendered) -> None:
    charts = {
        tile["widget"]["title"]: tile["widget"]["xyChart"] for tile in rendered.dashboard["mosaicLayout"]["tiles"]
    }
    p95 = charts["p95 duration of a delivery that did its work (outcome done)"]["dataSets"][0]
    for name, m in sorted(PUBSUB.items()):
        (outcome_chart,) = [chart for title, chart in charts.items() if title.startswith(f"{name}: deliveries")]
        query = outcome_chart["dataSets"][0]["timeSeriesQuery"]["timeSeriesFilter"]
        assert query["aggregation"]["groupByFields"] == ["metric.label.outcome"]
        for ending in ENDINGS:
            entries = [stdout_entry(line, service=name) for line in delivery_lines(m, ending)]
            counted = [p for e in entries if (p := rendered.point("deliveries", e))]
            assert [monitoring_filter_matches(query["filter"], series) for series in counted] == [True]
            for other in set(PUBSUB) - {name}:
                assert not monitoring_filter_matches(query["filter"], {**counted[0], "metric.label.function": other})
            timed = [p for e in entries if (p := rendered.point("delivery_duration", e))]
            in_p95 = monitoring_filter_matches(p95["timeSeriesQuery"]["timeSeriesFilter"]["filter"], timed[0])
            assert in_p95 == (ending == "success"), ending


def test_real_functions_without_their_credentials_page_as_config_errors(
    rendered: Rendered, monkeypatch: pytest.MonkeyPatch
) -> None:
    with_secrets = {name: m for name, m in PUBSUB.items() if m.secrets}
    assert with_secrets
    for name, m in sorted(with_secrets.items()):
        for secret in m.secrets:
            monkeypatch.delenv(secret, raising=False)
        module = load_function(name)
        entry_point = getattr(module, m.entry_point)
        entry_point.instance.reset()
        data, attributes = accepted_message(m)
        lines = _written(lambda e=entry_point, d=data, a=attributes: e(cloud_event(envelope(d, a))))
        points = [p for line in lines if (p := rendered.point("deliveries", stdout_entry(line, service=name)))]
        assert len(points) == 1, lines
        assert points[0]["metric.label.function"] == name
        assert monitoring_filter_matches(rendered.condition("config_error")["filter"], points[0]), points[0]
        entry_point.instance.reset()


@pytest.fixture
def ingress(pubsub_emulator: Any, gcp_project: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    """The real ingress under functions-framework, publishing to a topic on the emulator."""
    import functions_framework
    from google.cloud import pubsub_v1

    topic = f"monitoring-{uuid.uuid4().hex[:8]}"
    publisher = pubsub_v1.PublisherClient()
    publisher.create_topic(name=publisher.topic_path(gcp_project, topic))
    monkeypatch.setenv("PUBSUB_TOPIC", topic)
    source = str(ROOT / "functions" / "ingress" / "main.py")
    app = functions_framework.create_app(target="receive_webhook", source=source)

    def fresh_instance() -> None:
        """Forget the instance's config and publisher (every copy of main.py loaded so far)."""
        for module in list(sys.modules.values()):
            if getattr(module, "__file__", None) == source:
                module._setup.cache_clear()

    yield app.test_client(), fresh_instance
    fresh_instance()


def test_every_ingress_answer_is_counted_by_status_and_5xx_opens_an_incident(
    rendered: Rendered, ingress: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    client, fresh_instance = ingress
    body = (PAYLOADS / "ping.json").read_bytes()
    monkeypatch.setenv("BUILDKITE_WEBHOOK_TOKEN", "monitoring-token-0123456789")
    fresh_instance()
    token = {"X-Buildkite-Token": "monitoring-token-0123456789", "X-Buildkite-Event": "ping"}
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        answers = [
            client.post("/", data=body, headers=token).status_code,
            client.post("/", data=body, headers={**token, "X-Buildkite-Token": "wrong-token-0123456789"}).status_code,
            client.post("/", data=b"{not json", headers=token).status_code,
            client.get("/").status_code,
        ]
        monkeypatch.delenv("BUILDKITE_WEBHOOK_TOKEN")
        fresh_instance()  # a new instance, deployed without its secret
        answers.append(client.post("/", data=body, headers=token).status_code)
    assert answers == [200, 401, 400, 405, 503]

    ingress_chart = next(
        tile["widget"]["xyChart"]
        for tile in rendered.dashboard["mosaicLayout"]["tiles"]
        if tile["widget"]["title"].startswith("Ingress answers")
    )
    alert = rendered.condition("ingress_errors")["filter"]
    for status in answers:
        series = rendered.point("ingress_responses", request_entry(status, service="ingress"))
        assert series is not None and series["metric.label.status"] == str(status)
        classes = [
            data["legendTemplate"]
            for data in ingress_chart["dataSets"]
            if monitoring_filter_matches(data["timeSeriesQuery"]["timeSeriesFilter"]["filter"], series)
        ]
        assert classes == [f"{status // 100}xx"], status
        assert monitoring_filter_matches(alert, series) == (status >= 500), status

    # The ingress's own lines (published, unauthorized, config_error) are no deliveries, and
    # no Pub/Sub function's answers are the ingress's.
    lines = [line for line in log_lines(out.getvalue()) if "outcome" in line]
    assert "config_error" in {line["outcome"] for line in lines}  # the 5xx runbook sends operators to it
    assert not [line for line in lines if rendered.point("deliveries", stdout_entry(line, service="ingress"))]
    for name in PUBSUB:
        assert rendered.point("ingress_responses", request_entry(500, service=name)) is None
        assert rendered.point("ingress_responses", stdout_entry(lines[0], service="ingress")) is None


def test_the_dashboard_is_a_dashboard_the_monitoring_api_accepts(rendered: Rendered) -> None:
    from google.cloud.monitoring_dashboard_v1.types import Dashboard

    text = rendered.resources["google_monitoring_dashboard.fanout"]["dashboard_json"]
    Dashboard.from_json(text, ignore_unknown_fields=False)  # unknown fields and enum values raise
    metrics = {
        f"logging.googleapis.com/user/{v['name']}": v for k, v in rendered.resources.items() if "logging_metric" in k
    }
    pubsub = {
        "pubsub.googleapis.com/subscription/num_undelivered_messages",
        "pubsub.googleapis.com/subscription/oldest_unacked_message_age",
    }
    tiles = rendered.dashboard["mosaicLayout"]["tiles"]
    assert len(tiles) == 4 + len(PUBSUB)
    for tile in tiles:
        for data in tile["widget"]["xyChart"]["dataSets"]:
            query = data["timeSeriesQuery"]["timeSeriesFilter"]
            metric_type = re.match(r'metric.type = "([^"]+)"', query["filter"])
            assert metric_type and metric_type[1] in {*metrics, *pubsub}, query["filter"]
            labels = re.findall(
                r"metric\.label\.(\w+)", query["filter"] + " ".join(query["aggregation"]["groupByFields"])
            )
            declared = metrics.get(metric_type[1], {}).get("label_extractors") or {}
            assert set(labels) <= set(declared), f"{tile['widget']['title']}: {labels} not in {sorted(declared)}"


def test_every_alert_pages_the_same_channels(rendered: Rendered) -> None:
    policies = {k: v for k, v in rendered.resources.items() if k.startswith("google_monitoring_alert_policy.")}
    names = {address.split(".")[1].removesuffix("[0]") for address in policies}
    assert names == {"dead_letter_backlog", "config_error", "ingress_errors"}
    assert {json.dumps(p["notification_channels"]) for p in policies.values()} == {
        json.dumps(["projects/buildkite-fanout-ci/notificationChannels/1"])
    }


def test_the_metric_names_are_what_the_readme_tells_operators_to_query() -> None:
    readme = (ROOT / "terraform" / "README.md").read_text(encoding="utf-8")
    logging_tf = (ROOT / "terraform" / "logging.tf").read_text(encoding="utf-8")
    for name in re.findall(r'= "(buildkite-fanout/[\w-]+)"', logging_tf):
        assert f"logging.googleapis.com/user/{name}" in readme, name
