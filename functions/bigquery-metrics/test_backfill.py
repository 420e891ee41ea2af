"""`make backfill` on fake-gcs-server and bqemulator: the archive gcs-archive wrote, replayed into
empty tables, gives the rows bigquery-metrics wrote; a second run adds nothing."""

from __future__ import annotations

import importlib
import io
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from buildkite_events import parse_delivery
from tests.support import cloud_event, envelope, load_function, payload, payload_names
from tools.bigquery import bigquery_client, create_dataset, insert_rows, metrics_rows, select
from tools.local.emulators import Service
from tools.ops import backfill
from tools.ops.report.history import synthetic_history

archive = load_function("gcs-archive")
DELIVERY_ONLY = {"message_id", "publish_time", "inserted_at"}  # how it arrived, not what happened


@pytest.fixture
def bucket(gcs_server: Service, gcp_project: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    storage: Any = importlib.import_module("google.cloud.storage")  # untyped: Any keeps mypy strict elsewhere
    credentials: Any = importlib.import_module("google.auth.credentials")

    client = storage.Client(project=gcp_project, credentials=credentials.AnonymousCredentials())
    created = client.create_bucket(f"archive-{uuid.uuid4().hex[:12]}")
    monkeypatch.setenv("ARCHIVE_BUCKET", created.name)
    monkeypatch.setenv("ARCHIVE_PREFIX", "buildkite/events")
    _fresh_archive()
    yield created
    _fresh_archive()


def _fresh_archive() -> None:
    archive._bucket.cache_clear()
    archive.archive_build_data.instance.reset()


@pytest.fixture
def datasets(bigquery_emulator: Service, gcp_project: str) -> Iterator[Any]:
    """Make empty datasets as Terraform does; drop them afterwards."""
    client = bigquery_client(gcp_project, bigquery_emulator.url)
    made: list[str] = []

    def make() -> str:
        name = f"backfill_{uuid.uuid4().hex[:10]}"
        create_dataset(client, gcp_project, name)
        made.append(name)
        return name

    yield client, make
    for name in made:
        client.delete_dataset(f"{gcp_project}.{name}", delete_contents=True, not_found_ok=True, timeout=30)


def deliveries() -> list[dict[str, Any]]:
    """Every fixture and a day of synthetic history (builds, jobs, agents), as Pub/Sub pushes."""
    bodies = [payload(name) for name in payload_names()] + synthetic_history(seed=5, days=1)
    return [envelope(body, message_id=f"m{index}") for index, body in enumerate(bodies)]


def table(client: Any, dataset: str, name: str, key: str) -> dict[str, dict[str, Any]]:
    rows = select(client, f"SELECT * FROM `{dataset}.{name}`")  # noqa: S608 - names the test made
    return {row[key]: {k: v for k, v in row.items() if k not in DELIVERY_ONLY} for row in rows}


def test_backfill_reproduces_the_tables_from_the_archive_and_a_second_run_adds_nothing(
    bucket: Any, datasets: Any, gcp_project: str
) -> None:
    client, make = datasets
    pushes = deliveries()
    for push in pushes:  # gcs-archive writes the archive...
        archive.archive_build_data(cloud_event(push))
    # ... while bigquery-metrics writes its rows (test_main.py holds the function to rows_for).
    written, rows_for = make(), metrics_rows().rows_for
    rows: dict[str, list[tuple[str, dict[str, Any]]]] = {}
    for push in pushes:
        event = parse_delivery(push)
        for name, row in rows_for(event).tables.items():
            rows.setdefault(name, []).append((event.key_hash, row))
    for name, keyed in rows.items():
        insert_rows(client, f"{gcp_project}.{written}.{name}", keyed)
    # Something that is not an event, and something that is not an archive object at all.
    bucket.blob("buildkite/events/org/svc/2025/06/12/1/broken-0000.json").upload_from_string(b"{not json")
    bucket.blob("buildkite/events/README.txt").upload_from_string(b"hello")

    replayed = make()
    out = io.StringIO()
    assert backfill.main(["--project", gcp_project, "--dataset", replayed], out=out) == 0
    summary = out.getvalue()
    assert f"Backfill gs://{bucket.name}/buildkite/events/ -> {gcp_project}.{replayed}" in summary
    assert f"objects: {len(pushes) + 1} listed, {len(pushes)} read, 0 outside the window, 1 unreadable" in summary
    assert "unreadable (1): message data is not JSON" in summary
    assert "(e.g. buildkite/events/org/svc/2025/06/12/1/broken-0000.json)" in summary

    for name, key in (("events", "event_key"), ("builds_latest", "build_id"), ("jobs_latest", "job_id")):
        expected = table(client, f"{gcp_project}.{written}", name, key)
        actual = table(client, f"{gcp_project}.{replayed}", name, key)
        assert actual.keys() == expected.keys(), name
        for identity, row in expected.items():
            if name == "events" and row["event_type"] in ("ping", "cluster_token.registration_blocked"):
                row, actual[identity] = _without(row, "occurred_at"), _without(actual[identity], "occurred_at")
            assert actual[identity] == row, (name, identity)
    counts = row_counts(client, f"{gcp_project}.{replayed}")
    assert counts == {"events_raw": len(pushes), "builds": _typed(pushes, "build"), "jobs": _typed(pushes, "job")}

    again = io.StringIO()
    assert backfill.main(["--project", gcp_project, "--dataset", replayed], out=again) == 0
    assert f"events_raw: 0 rows written, {len(pushes)} already there" in again.getvalue()
    assert row_counts(client, f"{gcp_project}.{replayed}") == counts  # rows, not keys: no duplicate either


def row_counts(client: Any, dataset: str) -> dict[str, int]:
    return {
        name: len(select(client, f"SELECT event_key FROM `{dataset}.{name}`"))  # noqa: S608 - names the test made
        for name in ("events_raw", "builds", "jobs")
    }


def _typed(pushes: list[dict[str, Any]], kind: str) -> int:
    typed = {"build": ("build.finished", "build.skipped"), "job": ("job.finished",)}[kind]
    return sum(parse_delivery(push).event_type in typed for push in pushes)


def _without(row: dict[str, Any], key: str) -> dict[str, Any]:
    return {k: v for k, v in row.items() if k != key}


def test_backfill_takes_only_the_window_it_is_given(bucket: Any, datasets: Any, gcp_project: str) -> None:
    client, make = datasets
    pushes = [envelope(payload(name), message_id=name) for name in payload_names()]
    for push in pushes:
        archive.archive_build_data(cloud_event(push))
    target = make()
    out = io.StringIO()
    window = ["--since", "2025-06-12T03:35:00Z", "--until", "2025-06-12T04:00:00Z"]
    assert backfill.main(["--project", gcp_project, "--dataset", target, *window], out=out) == 0
    events = [parse_delivery(payload(name)) for name in payload_names()]  # their own times, not the publish time
    since, until = datetime(2025, 6, 12, 3, 35, tzinfo=UTC), datetime(2025, 6, 12, 4, tzinfo=UTC)
    inside = {e.key_hash for e in events if e.occurred_at and since <= e.occurred_at < until}
    assert 0 < len(inside) < len(events)
    assert table(client, f"{gcp_project}.{target}", "events_raw", "event_key").keys() == inside
    assert "from 2025-06-12 03:35 until 2025-06-12 04:00 UTC" in out.getvalue()


def test_backfill_says_what_is_missing(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.delenv("ARCHIVE_BUCKET", raising=False)
    monkeypatch.delenv("BIGQUERY_PROJECT", raising=False)
    assert backfill.main([]) == 2
    assert "set ARCHIVE_BUCKET and BIGQUERY_PROJECT" in capsys.readouterr().err


def test_a_missing_table_is_named(bucket: Any, datasets: Any, gcp_project: str, capsys: Any) -> None:
    assert backfill.main(["--project", gcp_project, "--dataset", "no_such_dataset"]) == 2
    assert "create them with Terraform" in capsys.readouterr().err


def test_the_progress_bar_shows_on_long_runs_only() -> None:
    quiet, lines = io.StringIO(), io.StringIO()
    short = backfill.Progress(10, quiet)
    for _ in range(10):
        short.advance()
    assert quiet.getvalue() == ""
    long = backfill.Progress(1000, lines)
    for _ in range(1000):
        long.advance()
    long.close()
    assert lines.getvalue().splitlines() == [f"{n}/1000 objects" for n in (1, *range(100, 1001, 100))]


class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_on_a_terminal_the_progress_bar_redraws_one_line() -> None:
    screen = _Terminal()
    bar = backfill.Progress(400, screen)
    for _ in range(400):
        bar.advance()
    bar.close()
    assert screen.getvalue().endswith("\r[" + "#" * 30 + "] 400/400 objects\n")
    assert screen.getvalue().count("\n") == 1


@pytest.mark.parametrize(
    ("name", "day"),
    [
        ("org/web/2025/06/12/2042/build.finished-abc.json", "2025-06-12"),
        ("prefix/org/_agents/2025/01/31/agent-1/agent.lost-abc.json", "2025-01-31"),
        ("org/_ping/undated/ping-abc.json", None),
        ("org/web/2025/13/40/1/x.json", None),
    ],
)
def test_the_day_an_object_is_filed_under(name: str, day: str | None) -> None:
    found = backfill.day_in_path(name)
    assert (found.isoformat() if found else None) == day
