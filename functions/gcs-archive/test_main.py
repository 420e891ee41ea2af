"""gcs-archive on fake-gcs-server with the official client: once per event, never overwritten."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from buildkite_events import Nack, parse_delivery
from tests.support import cloud_event, envelope, load_function, mcncl, outcomes, payload, payload_names
from tools.local.standin import Fault, StandIn

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
    assert outcomes(capsys) == ["done", "done"]  # the second one found the object (412)


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


@pytest.mark.parametrize(
    ("status", "expected"), [(403, "no permission"), (503, "gave up for now")], ids=["forbidden", "unavailable"]
)
def test_storage_errors_nack(monkeypatch: Any, gcp_project: str, status: int, expected: str) -> None:
    """A local server answering like Cloud Storage does when access is denied or it is down."""
    with StandIn() as gcs:
        gcs.fail(r"/upload/storage/v1/b/.*", Fault(status=status, remaining=100, body={"error": {"code": status}}))
        monkeypatch.setenv("STORAGE_EMULATOR_HOST", gcs.url)
        monkeypatch.setenv("ARCHIVE_BUCKET", "denied")
        monkeypatch.setenv("RETRY_BUDGET_SECONDS", "1")
        archive._bucket.cache_clear()
        _reset_config()
        with pytest.raises(Nack, match=expected):
            archive.archive_build_data(cloud_event(envelope(payload("ping"))))
        archive._bucket.cache_clear()
        assert gcs.recorded("/upload/")  # the real client really tried
