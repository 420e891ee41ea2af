"""One trace per event on the local stack: webhook → ingress → the topic → every function.

The stack `make demo` runs, with every function exporting its spans to one file (as the
demo does). A pull subscription beside the push ones shows what is on the topic.
"""

from __future__ import annotations

import json
import time
import urllib.request
import uuid
from pathlib import Path
from typing import Any

from buildkite_events.signature import sign
from buildkite_events.tracing import SPAN_FIELD, TRACE_FIELD, TRACEPARENT_ATTRIBUTE, parse_traceparent
from tests.support import log_lines, mcncl, payload_bytes
from tools.local import stack as local
from tools.local import timeline
from tools.local.topology import publish_raw, pull_all

TRACE, SPAN = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
HOSTILE = f"00-{TRACE}-{'0' * 16}-01" + "-x" * 300  # an all-zero parent span, padded: never a trace context


def _post(stack: local.LocalStack, name: str, headers: dict[str, str]) -> None:
    body = payload_bytes(name)
    event = json.loads(body)["event"]
    signature = sign(body, local.WEBHOOK_TOKEN, int(time.time()))
    headers = {
        "Content-Type": "application/json",
        "X-Buildkite-Event": event,
        "X-Buildkite-Signature": signature,
        **headers,
    }
    request = urllib.request.Request(stack.ingress_url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        assert response.status == 200


def _lines(stack: local.LocalStack, name: str) -> list[dict[str, Any]]:
    return log_lines(stack.functions[name].log_path.read_text(errors="replace"))


def _trace_id(line: dict[str, Any]) -> str:
    return str(line[TRACE_FIELD]).rsplit("/", 1)[-1]


def test_a_webhooks_trace_reaches_the_topic_and_every_functions_lines(tmp_path: Path) -> None:
    spans_file = tmp_path / "traces.jsonl"
    with local.local_stack(tmp_path / "logs", extra_env=timeline.trace_env(spans_file)) as stack:
        from google.cloud import pubsub_v1

        subscriber = pubsub_v1.SubscriberClient()
        tap = subscriber.create_subscription(
            name=subscriber.subscription_path(local.PROJECT, f"tap-{uuid.uuid4().hex[:6]}"),
            topic=f"projects/{local.PROJECT}/topics/{local.TOPIC}",
        ).name
        subscriber.close()

        _post(stack, "build.finished.failed", {"traceparent": f"00-{TRACE}-{SPAN}-01"})
        _post(stack, "ping", {"traceparent": HOSTILE, "X-Cloud-Trace-Context": HOSTILE})
        data, attributes = mcncl("agent.connected")
        other_id = publish_raw(local.PROJECT, local.TOPIC, data, attributes)  # another publisher: no trace attribute
        assert local.wait_settled(stack, 3)
        for _ in range(50):  # the span ends just after the outcome line
            if len([s for s in timeline.read_spans(spans_file) if s.name == s.service]) >= 3 * len(stack.functions):
                break
            time.sleep(0.1)

        on_topic = {m["attributes"].get("event_type"): m["attributes"] for m in pull_all(tap, ack=True)}
        failed = parse_traceparent(on_topic["build.finished"][TRACEPARENT_ATTRIBUTE])
        ping = parse_traceparent(on_topic["ping"][TRACEPARENT_ATTRIBUTE])
        assert failed is not None and ping is not None
        assert failed.trace_id == TRACE and failed.span_id != SPAN
        assert ping.trace_id not in HOSTILE and int(ping.trace_id, 16)

        published = {
            line["event_type"]: line for line in _lines(stack, "ingress") if line.get("outcome") == "published"
        }
        keys = {published["build.finished"]["event_key"]: TRACE, published["ping"]["event_key"]: ping.trace_id}
        assert _trace_id(published["build.finished"]) == TRACE
        ingress_traces = set(keys.values())
        for name in stack.wiring:
            lines = _lines(stack, name)
            for key, trace_id in keys.items():
                about = [line for line in lines if line.get("event_key") == key]
                assert any("outcome" in line for line in about), (name, key)
                assert {_trace_id(line) for line in about} == {trace_id}, (name, about)
            others = [line for line in lines if line.get("message_id") == other_id]
            assert others and not {_trace_id(line) for line in others} & ingress_traces  # not an ingress trace
            text = stack.functions[name].log_path.read_text(errors="replace")
            assert HOSTILE not in text and "-x-x-x" not in text

        found, outside = timeline.timelines(timeline.read_spans(spans_file))
        assert [t.trace_id for t in found] == [TRACE, ping.trace_id]
        assert {s.service for s in outside} == set(stack.wiring)  # the other publisher's message, once per function
        first = found[0]
        assert first.publish is not None and first.publish.span_id == failed.span_id
        assert {s.service for s in first.deliveries} == set(stack.wiring)
        assert all(s.parent_id == failed.span_id for s in first.deliveries)  # each function a child of the publish
        outcomes = {
            name: [line for line in _lines(stack, name) if line.get("event_key") in keys] for name in stack.wiring
        }
        for span in first.deliveries:
            (line,) = [x for x in outcomes[span.service] if "outcome" in x and _trace_id(x) == TRACE]
            assert span.attributes["buildkite.outcome"] == line["outcome"]
            assert line[SPAN_FIELD] == span.span_id  # Cloud Trace shows the line under its span

        report = timeline.report(spans_file)
        assert "build.finished my-pipeline #2042" in report and f"trace {TRACE}" in report
        assert "received" in report and "published" in report
        assert all(name in report for name in stack.wiring)
