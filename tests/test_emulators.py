"""Each local stand-in starts, answers, and stops without leaving a process behind."""

from __future__ import annotations

import os
import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest
import requests

from tools.local import emulators
from tools.local.emulators import EmulatorError, Service


def assert_gone(service: Service) -> None:
    assert emulators.group_members(service.pgid) == []
    assert service.process.returncode is not None  # the leader was reaped


@pytest.mark.parametrize(
    ("start", "path", "body", "env_name"),
    [
        (emulators.start_pubsub, "/", b"Ok", "PUBSUB_EMULATOR_HOST"),
        (emulators.start_firestore, "/", b"Ok", "FIRESTORE_EMULATOR_HOST"),
        (emulators.start_gcs, "/_internal/healthcheck", None, "STORAGE_EMULATOR_HOST"),
    ],
    ids=["pubsub", "firestore", "gcs"],
)
def test_emulator_starts_answers_and_stops(
    start: Callable[[Path], Service],
    path: str,
    body: bytes | None,
    env_name: str,
    tmp_path: Path,
) -> None:
    service = start(tmp_path)
    try:
        assert emulators.group_members(service.pgid)
        assert env_name in service.env
        resp = requests.get(service.url + path, timeout=5)
        assert resp.status_code == 200
        if body is not None:
            assert resp.content.strip() == body
        assert service.log_path.exists()
    finally:
        service.stop()
    assert_gone(service)
    with pytest.raises(requests.ConnectionError):
        requests.get(service.url + path, timeout=2)


def test_firestore_wrapper_child_is_stopped_too(tmp_path: Path) -> None:
    # The Firestore script runs Java as a child: both must go.
    service = emulators.start_firestore(tmp_path)
    try:
        assert len(emulators.group_members(service.pgid)) >= 2
    finally:
        service.stop()
    assert_gone(service)


def test_pubsub_emulator_serves_the_rest_api(tmp_path: Path) -> None:
    with emulators.start_pubsub(tmp_path) as service:
        # Like real Pub/Sub, it refuses topic ids shorter than 3 characters.
        topic = f"{service.url}/v1/projects/p/topics/buildkite-events"
        assert requests.put(topic, json={}, timeout=10).status_code == 200
        assert requests.get(topic, timeout=10).json()["name"] == "projects/p/topics/buildkite-events"
    assert_gone(service)


def test_gcs_works_with_the_official_client(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from google.api_core.exceptions import PreconditionFailed
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage  # type: ignore[attr-defined]

    with emulators.start_gcs(tmp_path) as service:
        for name, value in service.env.items():
            monkeypatch.setenv(name, value)
        client = storage.Client(project="p", credentials=AnonymousCredentials())  # type: ignore[no-untyped-call]
        bucket = client.create_bucket("archive")
        bucket.blob("a/b.json").upload_from_string(b"{}", if_generation_match=0)
        with pytest.raises(PreconditionFailed):
            bucket.blob("a/b.json").upload_from_string(b"{}", if_generation_match=0)
        # A small chunk size forces a resumable upload (Location header round trip).
        big = bucket.blob("big.bin", chunk_size=256 * 1024)
        big.upload_from_string(b"x" * (600 * 1024), if_generation_match=0)
        assert bucket.get_blob("big.bin").size == 600 * 1024
        public = bucket.blob("a/b.json").public_url
        assert requests.get(public, timeout=5).content == b"{}"
    assert_gone(service)


def test_function_runs_and_stops(tmp_path: Path) -> None:
    source = tmp_path / "fn"
    source.mkdir()
    (source / "main.py").write_text(
        textwrap.dedent(
            """
            import os
            import functions_framework

            @functions_framework.http
            def hello(request):
                return os.environ["GREETING"]
            """
        )
    )
    service = emulators.start_function(source, "hello", env={"GREETING": "hi there"}, log_dir=tmp_path / "logs")
    with emulators.running(service):
        assert requests.get(service.url, timeout=5).text == "hi there"
    assert_gone(service)


def test_function_that_cannot_start_reports_its_log(tmp_path: Path) -> None:
    (tmp_path / "main.py").write_text("def something_else(request):\n    return ''\n")
    with pytest.raises(EmulatorError) as excinfo:
        emulators.start_function(tmp_path, "missing_target", log_dir=tmp_path / "logs")
    message = str(excinfo.value)
    assert "exited with code" in message
    assert "missing_target" in message  # functions-framework's own complaint, from the log


def test_running_stops_earlier_services_when_a_later_one_fails(tmp_path: Path) -> None:
    started: list[Service] = []

    def gcs() -> Service:
        started.append(emulators.start_gcs(tmp_path))
        return started[-1]

    def broken() -> Service:
        raise EmulatorError("boom")

    with pytest.raises(EmulatorError), emulators.running(gcs, broken):
        pass
    assert len(started) == 1
    assert_gone(started[0])


def test_free_port_does_not_repeat() -> None:
    ports = {emulators.free_port() for _ in range(20)}
    assert len(ports) == 20


def test_session_fixtures_export_client_env(
    pubsub_emulator: Service, gcs_server: Service, firestore: object, gcp_project: str
) -> None:
    assert os.environ["PUBSUB_EMULATOR_HOST"] == pubsub_emulator.host
    assert os.environ["STORAGE_EMULATOR_HOST"] == gcs_server.url
    assert os.environ["FIRESTORE_EMULATOR_HOST"].startswith("127.0.0.1:")
    assert os.environ["GOOGLE_CLOUD_PROJECT"] == gcp_project
