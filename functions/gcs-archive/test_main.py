"""gcs-archive on fake-gcs-server with the official client: once per event, never overwritten."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from buildkite_events import Nack, parse_delivery
from tests.support import cloud_event, envelope, load_function, log_lines, mcncl, outcomes, payload, payload_names
from tools.local.faultproxy import FaultProxy

archive = load_function("gcs-archive")


@pytest.fixture
def bucket(gcs_server: Any, gcp_project: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    client = storage.Client(project=gcp_project, credentials=AnonymousCredentials())
    created = client.create_bucket(f"archive-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("ARCHIVE_BUCKET", created.name)
    archive._bucket.cache_clear()
    _reset_config()
    yield created
    archive._bucket.cache_clear()
    _reset_config()


def _reset_config() -> None:
    archive.archive_build_data.instance.reset()  # config is read once per instance: be a new one


def _objects(bucket: Any) -> dict[str, Any]:
    return {blob.name: blob for blob in bucket.client.list_blobs(bucket.name)}


@pytest.mark.parametrize("name", payload_names())
def test_every_fixture_is_archived_once_with_its_metadata(bucket: Any, name: str, capsys: Any) -> None:
    push = envelope(payload(name), message_id=f"m-{name}")
    archive.archive_build_data(cloud_event(push))
    archive.archive_build_data(cloud_event(push))  # redelivery

    objects = _objects(bucket)
    assert len(objects) == 1
    (path, blob) = next(iter(objects.items()))
    event = parse_delivery(push)
    assert path == archive.archive_path(event)
    assert path.endswith(f"{event.event_type}-{event.key_hash}.json")
    assert blob.content_type == "application/json"
    assert blob.metadata["event_type"] == event.event_type
    stored = json.loads(blob.download_as_bytes())
    assert stored["event_type"] == event.event_type
    assert stored["event"] == payload(name)["event"]
    assert outcomes(capsys) == ["done", "done"]  # the second one found the object and wrote nothing


def test_paths_are_organised_by_org_pipeline_day_and_build(bucket: Any) -> None:
    event = parse_delivery(envelope(payload("build.finished.failed")))
    assert archive.archive_path(event).startswith("my-great-org/my-pipeline/2025/06/12/2042/build.finished-")
    agent = parse_delivery(envelope(payload("agent.lost")))
    assert archive.archive_path(agent).startswith("my-great-org/_agents/2025/06/12/ip-10-0-3-17-1/agent.lost-")
    assert archive.archive_path(event, "team/a/").startswith("team/a/my-great-org/")


def test_null_finished_at_falls_back_to_other_timestamps_then_publish_time(bucket: Any) -> None:
    body = payload("build.scheduled")  # finished_at and started_at are null
    event = parse_delivery(envelope(body))
    assert "/2025/06/12/" in archive.archive_path(event)
    for key in ("created_at", "scheduled_at", "started_at", "finished_at", "failing_at"):
        body["build"][key] = None
    event = parse_delivery(envelope(body, publish_time="2024-02-29T23:59:59Z"))
    assert "/2024/02/29/" in archive.archive_path(event)


def test_hostile_names_cannot_escape_their_folder(bucket: Any) -> None:
    body = payload("build.finished.failed")
    body["pipeline"]["slug"] = "../../etc/passwd"
    body["pipeline"]["url"] = "https://api.buildkite.com/v2/organizations/..%2F..%2Fx/pipelines/p"
    body["build"]["number"] = "1/../../2"
    path = archive.archive_path(parse_delivery(envelope(body)))
    assert ".." not in path.split("/")
    assert all(part and not part.startswith(".") for part in path.split("/"))


def test_mcncl_messages_are_archived_verbatim(bucket: Any) -> None:
    data, attributes = mcncl("build.finished.failed")
    archive.archive_build_data(cloud_event(envelope(data, attributes)))
    (blob,) = _objects(bucket).values()
    assert blob.download_as_bytes() == data
    assert blob.metadata["source_format"] == "mcncl"


@pytest.mark.parametrize(
    "data",
    [b"not json", b"\xff\xfe", b"[1, 2]", b'{"no_event": true}', json.dumps({"event": 42}).encode()],
    ids=["not-json", "not-utf8", "array", "no-event", "event-not-string"],
)
def test_bad_messages_are_acked_and_not_archived(bucket: Any, data: bytes, capsys: Any) -> None:
    archive.archive_build_data(cloud_event(envelope(data, {})))
    assert _objects(bucket) == {}
    assert outcomes(capsys) == ["invalid"]


def test_missing_bucket_is_a_config_error_and_nacks(gcs_server: Any, gcp_project: str, monkeypatch: Any) -> None:
    monkeypatch.setenv("ARCHIVE_BUCKET", f"missing-{uuid.uuid4().hex[:8]}")
    archive._bucket.cache_clear()
    _reset_config()
    with pytest.raises(Nack, match="does not exist"):
        archive.archive_build_data(cloud_event(envelope(payload("ping"))))


def test_unset_bucket_names_the_variable(monkeypatch: Any, capsys: Any) -> None:
    monkeypatch.delenv("ARCHIVE_BUCKET", raising=False)
    _reset_config()
    with pytest.raises(Nack, match="ARCHIVE_BUCKET"):
        archive.archive_build_data(cloud_event(envelope(payload("ping"))))
    assert outcomes(capsys) == ["config_error"]


# -- Cloud Storage's answers, through a fault proxy in front of fake-gcs-server ---------------------

UPLOAD = r"^/upload/storage/v1/b/"
READ = r"^/storage/v1/b/[^/]+/o/"


@pytest.fixture
def proxied(bucket: Any, gcs_server: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[Any, FaultProxy]]:
    """(bucket, proxy): the function reaches fake-gcs-server through the proxy; the test reads it directly."""
    with FaultProxy(gcs_server.url) as proxy:
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", proxy.url)
        monkeypatch.setenv("RETRY_BUDGET_SECONDS", "1")
        archive._bucket.cache_clear()
        _reset_config()
        yield bucket, proxy
        archive._bucket.cache_clear()


def _deliver(name: str = "build.finished.failed") -> None:
    archive.archive_build_data(cloud_event(envelope(payload(name))))


def test_an_archived_event_is_found_before_any_write(proxied: tuple[Any, FaultProxy], capsys: Any) -> None:
    bucket, proxy = proxied
    _deliver()
    _deliver()  # redelivery: a read (objectViewer) finds it; no create is even tried
    assert len(proxy.forwarded(UPLOAD, "POST")) == 1
    assert [s.method for s in proxy.seen if re.search(READ, s.path)] == ["GET", "GET"]
    assert len(_objects(bucket)) == 1
    assert outcomes(capsys) == ["done", "done"]


def test_a_403_on_a_create_that_lost_a_race_is_acked_not_retried(proxied: tuple[Any, FaultProxy], capsys: Any) -> None:
    """Real Cloud Storage may answer a create-only write on an existing name with 403 when the writer holds
    objectCreator only. The object appeared between our read and our write (another delivery wrote it)."""
    bucket, proxy = proxied
    event = parse_delivery(envelope(payload("build.finished.failed")))
    proxy.fail(READ, "status", status=404, method="GET")  # our first look: not there yet
    bucket.blob(archive.archive_path(event)).upload_from_string(event.payload)  # the racing delivery
    proxy.fail(UPLOAD, "status", status=403, method="POST")
    _deliver()
    assert outcomes(capsys) == ["done"]
    assert len(proxy.injected(UPLOAD)) == 1  # one refused create, then a look that found the object


@pytest.mark.parametrize(
    ("path", "status", "outcome", "reason"),
    [
        (UPLOAD, 403, "config_error", "roles/storage.objectCreator"),
        (READ, 403, "config_error", "roles/storage.objectViewer"),
        (UPLOAD, 400, "config_error", "refused to write to"),
        (UPLOAD, 413, "invalid", "larger than Cloud Storage accepts"),
        (UPLOAD, 503, "retry", "gave up for now"),
        (READ, 429, "retry", "gave up for now"),
    ],
    ids=["create-forbidden", "read-forbidden", "bad-request", "too-large", "unavailable", "rate-limited"],
)
def test_storage_errors_by_kind(
    proxied: tuple[Any, FaultProxy], capsys: Any, path: str, status: int, outcome: str, reason: str
) -> None:
    bucket, proxy = proxied
    proxy.fail(path, "status", status=status, times=100)
    if outcome in ("invalid",):
        _deliver()
    else:
        with pytest.raises(Nack, match=reason):
            _deliver()
    lines = [line for line in log_lines(capsys.readouterr().out) if "outcome" in line]
    assert [line["outcome"] for line in lines] == [outcome]
    assert reason in lines[0]["message"]
    retried = len(proxy.injected(path)) > 1
    assert retried == (outcome == "retry")  # a permanent answer is never retried in process
    assert _objects(bucket) == {}
