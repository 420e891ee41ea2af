"""`make dlq` / `make replay`: see what a function gave up on, fix, replay to that function only, once.

End to end on the emulators: gcs-archive pointed at a bucket that does not exist dead-letters
its event (one message at a time: see tests/lanes.py), `list` shows it with its delivery
count, source subscription and the function's logged error, a replay while still broken
comes back to the queue through the function's replay subscription, and after the bucket
exists a replay archives it exactly once. Replays travel through Pub/Sub (the functions take
internal traffic only): the replay topic and its push subscription are created on demand.
"""

from __future__ import annotations

import base64
import json
import os
import stat
import threading
import time
import uuid
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from buildkite_events.parse import parse_delivery
from tests.lanes import Lane, drain, fixture_message, open_lanes, storage_client
from tests.support import load_function
from tools import TOPIC
from tools.local.emulators import Service
from tools.ops import dlq

archive = load_function("gcs-archive")


def _queued(project: str, function: str, logs: Path | None = None) -> dlq.Listing:
    (listing,) = dlq.list_queues(project, [function], logs=logs)
    return listing


def _wait_queued(project: str, function: str, count: int, logs: Path, timeout: float = 90.0) -> dlq.Listing:
    deadline = time.monotonic() + timeout
    while True:
        listing = _queued(project, function, logs)
        if len(listing.messages) >= count or time.monotonic() > deadline:
            return listing
        time.sleep(0.5)


def _watch(lane: Lane) -> str:
    """A pull subscription on the lane's events topic: what gets published there from now on."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    name = f"projects/{lane.project}/subscriptions/watch-{uuid.uuid4().hex[:6]}"
    subscriber.create_subscription(name=name, topic=lane.topic)
    subscriber.close()
    return name


def _objects(bucket: str) -> list[str]:
    return [blob.name for blob in storage_client().list_blobs(bucket)]


def _wait_objects(bucket: str, count: int, timeout: float = 60.0) -> list[str]:
    deadline = time.monotonic() + timeout
    while len(names := _objects(bucket)) < count and time.monotonic() < deadline:
        time.sleep(0.2)
    return names


def test_a_dead_lettered_event_is_listed_then_replayed_exactly_once(
    tmp_path: Path, pubsub_emulator: Service, gcs_server: Service, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = f"not-yet-{uuid.uuid4().hex[:10]}"
    services = {"pubsub": pubsub_emulator, "gcs": gcs_server}
    with open_lanes(
        ["gcs-archive"], log_dir=tmp_path, services=services, env_for=lambda _: {"ARCHIVE_BUCKET": missing}
    ) as lanes:
        lane = lanes["gcs-archive"]
        project, attempts = lane.project, lane.manifest.delivery.max_delivery_attempts
        watch = _watch(lane)
        data, attributes = fixture_message("build.finished.failed")
        lane.publish(data, attributes)

        # 1. It lands in the dead-letter queue, and `list` says what it is and why.
        listing = _wait_queued(project, "gcs-archive", 1, logs=tmp_path)
        assert len(listing.messages) == 1, lane.lines()
        (row,) = listing.rows()
        assert row["event_type"] == "build.finished"
        assert (row["pipeline"], row["build_number"], row["build_state"]) == ("my-pipeline", 2042, "failed")
        assert row["delivery_count"] == attempts
        assert row["source_subscription"] == lane.wiring.subscription
        assert row["last_error"]["outcome"] == "config_error"
        assert missing in row["last_error"]["message"]
        failures = [line for line in lane.lines() if line["outcome"] == "config_error"]
        assert len(failures) == attempts

        assert dlq.main(["--project", project, "list", "gcs-archive", "--logs", str(tmp_path)]) == 0
        text = capsys.readouterr().out
        assert "gcs-archive: 1 dead-lettered in" in text
        assert f"delivered {attempts}x via {lane.wiring.subscription}" in text
        assert f"archive bucket '{missing}' does not exist" in text
        assert dlq.main(["--project", project, "list", "gcs-archive", "--json", "--no-logs"]) == 0
        (as_json,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
        assert as_json["event_key"] == row["event_key"]

        # 2. Replayed while the bucket is still missing: the function fails it again through its
        #    replay subscription (created now, as Terraform would have), and it comes back.
        report = dlq.replay(project, "gcs-archive")
        replay_topic = f"projects/{project}/topics/{TOPIC}-gcs-archive-replay"
        assert (report.replayed, report.failed, report.topic) == (1, 0, replay_topic)
        assert report.created == [replay_topic, replay_topic.replace("/topics/", "/subscriptions/")]
        back = _wait_queued(project, "gcs-archive", 1, logs=tmp_path)
        (row,) = back.rows()
        assert row["source_subscription"] == replay_topic.replace("/topics/", "/subscriptions/")
        assert row["delivery_count"] == attempts and row["event_key"] == as_json["event_key"]
        assert len([line for line in lane.lines() if line["outcome"] == "config_error"]) == 2 * attempts

        # 3. Fixed, replayed: archived once, acknowledged, gone from the queue.
        storage_client().create_bucket(missing)
        assert dlq.main(["--project", project, "replay", "gcs-archive", "--dry-run"]) == 0
        assert "1 message(s) would be replayed" in capsys.readouterr().out
        assert len(_queued(project, "gcs-archive").messages) == 1
        assert dlq.main(["--project", project, "replay", "gcs-archive"]) == 0
        assert "1 replayed, 0 failed" in capsys.readouterr().out
        assert _queued(project, "gcs-archive").messages == []
        objects = _wait_objects(missing, 1)
        assert len(objects) == 1
        # Replayed with its original publish time: the same path a first-time success would have used.
        event = parse_delivery({"message": {"data": base64.b64encode(data).decode(), "attributes": attributes}})
        assert objects[0] == archive.archive_path(event)

        # 4. Replaying again finds nothing; the same message dead-lettered a second time (as if an
        #    ack had been lost) is accepted and changes nothing.
        assert dlq.replay(project, "gcs-archive").outcomes == []
        again = {**attributes, dlq.DELIVERY_COUNT: str(attempts), dlq.SOURCE_SUBSCRIPTION: "gcs-archive"}
        again[dlq.SOURCE_PROJECT] = project
        _publish(lane.wiring.dead_letter_topic, data, again)
        assert dlq.replay(project, "gcs-archive").replayed == 1
        deadline = time.monotonic() + 60
        while not any("already archived" in line["message"] for line in lane.lines()):
            assert time.monotonic() < deadline, lane.lines()
            time.sleep(0.2)
        assert _objects(missing) == objects

        # Replays went to the function only: nothing new was published to the events topic.
        assert len(drain(watch)) == 1


def _publish(topic: str, data: bytes, attributes: dict[str, str]) -> str:
    from google.cloud import pubsub_v1

    return str(pubsub_v1.PublisherClient().publish(topic, data, **attributes).result(timeout=30))  # type: ignore[arg-type]


class _Endpoint:
    """A stand-in push endpoint: records what Pub/Sub pushes; refuses bodies containing ``refuse``."""

    def __init__(self, refuse: bytes) -> None:
        self.received: list[dict[str, Any]] = []
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.received.append(body)
                data = base64.b64decode(body["message"]["data"])
                self.send_response(500 if refuse in data else 200)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/"

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def endpoint() -> Iterator[_Endpoint]:
    server = _Endpoint(refuse=b"REFUSE-ME")
    yield server
    server.stop()


PUSH_ACCOUNT = "buildkite-fanout-push@example.iam.gserviceaccount.com"


def _production_like(project: str, function: str, endpoint: str) -> tuple[str, str]:
    """Topic, subscriptions and labels as Terraform makes them (before replay topics existed)."""
    from google.cloud import pubsub_v1

    publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
    topic = publisher.create_topic(name=f"projects/{project}/topics/{TOPIC}").name
    dead = publisher.create_topic(name=f"projects/{project}/topics/{TOPIC}-{function}-dead-letter").name
    subscriber.create_subscription(name=dead.replace("/topics/", "/subscriptions/"), topic=dead)
    subscriber.create_subscription(
        request={
            "name": f"projects/{project}/subscriptions/{TOPIC}-{function}",
            "topic": topic,
            "labels": {"function": function},
            "ack_deadline_seconds": 120,
            "push_config": {
                "push_endpoint": endpoint,
                "oidc_token": {"service_account_email": PUSH_ACCOUNT, "audience": endpoint},
            },
            "dead_letter_policy": {"dead_letter_topic": dead, "max_delivery_attempts": 5},
            "retry_policy": {"minimum_backoff": {"seconds": 0}, "maximum_backoff": {"seconds": 1}},
        }
    )
    subscriber.close()
    return topic, dead


def test_replay_goes_through_the_functions_own_replay_subscription_and_failures_come_back(
    pubsub_emulator: Service, endpoint: _Endpoint
) -> None:
    from google.cloud import pubsub_v1

    project = f"dlq-{uuid.uuid4().hex[:10]}"
    topic, dead_topic = _production_like(project, "github-status", endpoint.url)
    sent = {}
    for index, marker in enumerate(["one", "REFUSE-ME", "three"]):
        data = json.dumps({"event": "build.finished", "build": {"number": index, "message": marker}}).encode()
        attributes = {
            "event_type": "build.finished",
            dlq.DELIVERY_COUNT: "5",
            dlq.SOURCE_SUBSCRIPTION: f"{TOPIC}-github-status",
            dlq.SOURCE_PROJECT: project,
            dlq.SOURCE_PUBLISH_TIME: f"2025-06-12T03:4{index}:00.000Z",
        }
        sent[_publish(dead_topic, data, attributes)] = marker

    (listing,) = dlq.list_queues(project, ["github-status"])
    assert listing.queue is not None
    assert listing.queue.dead_letter_subscription.endswith(f"/{TOPIC}-github-status-dead-letter")
    assert listing.queue.service_account == PUSH_ACCOUNT
    assert sorted(m.message_id for m in listing.messages) == sorted(sent)

    dry = dlq.replay(project, "github-status", dry_run=True)
    assert (dry.left, dry.created, endpoint.received) == (3, [], [])
    report = dlq.replay(project, "github-status")
    assert (report.replayed, report.failed) == (3, 0)

    # The replay subscription is the function's: same endpoint, token, deadline, retries and
    # dead-letter queue, and the only reader of its topic.
    subscriber = pubsub_v1.SubscriberClient()
    replay_sub = subscriber.get_subscription(
        subscription=f"projects/{project}/subscriptions/{TOPIC}-github-status-replay"
    )
    assert replay_sub.topic == report.topic == f"projects/{project}/topics/{TOPIC}-github-status-replay"
    assert replay_sub.push_config.push_endpoint == endpoint.url
    assert replay_sub.push_config.oidc_token.service_account_email == PUSH_ACCOUNT
    assert (replay_sub.ack_deadline_seconds, replay_sub.dead_letter_policy.dead_letter_topic) == (120, dead_topic)
    assert replay_sub.dead_letter_policy.max_delivery_attempts == 5
    assert dict(replay_sub.labels) == {"function": "github-status", "delivery": "replay"}
    subscriber.close()

    # The two it accepts are handled once; the refused one returns to the queue after its attempts.
    deadline = time.monotonic() + 90
    while True:
        (left,) = dlq.list_queues(project, ["github-status"])
        if left.messages or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert [m.data for m in left.messages if b"REFUSE-ME" in m.data] and len(left.messages) == 1
    assert left.messages[0].source_subscription == replay_sub.name
    bodies = [body for body in endpoint.received if b"REFUSE-ME" not in base64.b64decode(body["message"]["data"])]
    assert len(bodies) == 2
    for body in endpoint.received:
        assert body["subscription"] == replay_sub.name
        assert body["message"]["attributes"] == {"event_type": "build.finished"}  # no dead-letter bookkeeping
    assert len(drain_topic_watch(project, topic)) == 0  # nothing went back to the events topic

    # A second replay reuses the route and creates nothing.
    assert dlq.replay(project, "github-status").created == []


def drain_topic_watch(project: str, topic: str) -> list[dict[str, Any]]:
    """Every message a fresh pull subscription on ``topic`` can see (none published since it exists)."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    name = f"projects/{project}/subscriptions/watch-{uuid.uuid4().hex[:6]}"
    subscriber.create_subscription(name=name, topic=topic)
    subscriber.close()
    return drain(name)


def test_replay_refuses_a_replay_topic_someone_else_reads(pubsub_emulator: Service, endpoint: _Endpoint) -> None:
    from google.cloud import pubsub_v1

    project = f"dlq-{uuid.uuid4().hex[:10]}"
    _, dead_topic = _production_like(project, "slack-notify", endpoint.url)
    _publish(dead_topic, b'{"event": "build.finished"}', {"event_type": "build.finished"})
    replay_topic = f"projects/{project}/topics/{TOPIC}-slack-notify-replay"
    pubsub_v1.PublisherClient().create_topic(name=replay_topic)
    subscriber = pubsub_v1.SubscriberClient()
    subscriber.create_subscription(name=f"projects/{project}/subscriptions/eavesdropper", topic=replay_topic)
    subscriber.close()
    with pytest.raises(dlq.DlqError, match=r"must have .*slack-notify-replay as its only subscription"):
        dlq.replay(project, "slack-notify")
    (listing,) = dlq.list_queues(project, ["slack-notify"])
    assert len(listing.messages) == 1  # nothing was acknowledged


def test_list_reads_the_last_error_from_cloud_logging_through_gcloud(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    entries = [
        {"timestamp": "2026-01-01T00:00:01Z", "jsonPayload": {"function": "slack-notify", "event_key": "k1",
         "outcome": "retry", "message": "retry: Slack answered 503"}},
        {"timestamp": "2026-01-01T00:00:09Z", "jsonPayload": {"function": "slack-notify", "event_key": "k1",
         "outcome": "config_error", "message": "config_error: invalid_auth"}},
    ]  # fmt: skip
    gcloud = tmp_path / "gcloud"
    log = tmp_path / "argv"
    gcloud.write_text(f"#!/bin/sh\necho \"$@\" > {log}\ncat <<'EOF'\n{json.dumps(entries)}\nEOF\n")
    gcloud.chmod(gcloud.stat().st_mode | stat.S_IXUSR)
    monkeypatch.setenv("PATH", f"{tmp_path}{os.pathsep}{os.environ['PATH']}")

    lines = dlq.cloud_log_lines("my-project", "slack-notify")
    last = dlq.errors_from_lines(lines, "slack-notify")
    assert last["k1"]["message"] == "config_error: invalid_auth"
    assert 'jsonPayload.function="slack-notify"' in log.read_text()
    assert "--project=my-project" in log.read_text()


def test_replay_refuses_what_has_no_dead_letter_queue(pubsub_emulator: Service, capsys: Any) -> None:
    project = f"dlq-{uuid.uuid4().hex[:10]}"
    assert dlq.main(["--project", project, "replay", "ingress"]) == 2
    assert "not a Pub/Sub function" in capsys.readouterr().err
    assert dlq.main(["--project", project, "replay", "no-such-function"]) == 2
    assert "unknown function" in capsys.readouterr().err
    assert dlq.main(["--project", project, "replay", "gcs-archive"]) == 2
    assert "no push subscription with a dead-letter policy for gcs-archive" in capsys.readouterr().err
    assert dlq.main(["--project", project, "list"]) == 0
    assert "0 dead-lettered messages in all" in capsys.readouterr().out
