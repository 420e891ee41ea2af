"""`make report` and the bqemulator it runs on: both modes, start and stop."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import ROOT
from tools.bigquery import bigquery_client
from tools.local import emulators
from tools.local.emulators import Service
from tools.ops import report


def test_spatial_extension_install_is_idempotent() -> None:
    emulators.install_duckdb_spatial()
    emulators.install_duckdb_spatial()
    assert list(Path.home().glob(".duckdb/extensions/v*/*/spatial.duckdb_extension"))


def test_report_reads_a_configured_dataset(
    bigquery_dataset: str, bigquery_emulator: Service, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    project, dataset = bigquery_dataset.split(".")
    client = bigquery_client(project, bigquery_emulator.url)
    report.seed(client, project, dataset, report.seed_rows(report.fixture_bodies()))
    monkeypatch.setenv("BIGQUERY_PROJECT", project)
    monkeypatch.setenv("BIGQUERY_DATASET", dataset)
    monkeypatch.setenv("BIGQUERY_API_URL", bigquery_emulator.url)
    assert report.main(["--until", "2025-06-13T00:00:00Z", "--days", "2", "--no-charts"]) == 0
    out = capsys.readouterr().out
    assert f"BigQuery {project}.{dataset}: builds and jobs that finished from 2025-06-11 00:00" in out
    health = out.split("(queries/build_health.sql)")[1].splitlines()[3]
    # builds, passed, failed (one stopped on a block step that set it to failed), failure rate
    assert health.split()[:6] == ["my-pipeline", "main", "7", "2", "2", "50.0%"]
    assert "features" in out.split("(queries/slowest_steps.sql)")[1]


def test_report_without_a_project_seeds_its_own_emulator_draws_charts_and_stops_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    for name in ("BIGQUERY_PROJECT", "BIGQUERY_DATASET", "BIGQUERY_API_URL"):
        monkeypatch.delenv(name, raising=False)
    started: list[Service] = []

    def start_and_remember(*args: Any, **kwargs: Any) -> Service:
        service = start_bigquery(*args, **kwargs)
        started.append(service)
        assert emulators.group_members(service.pgid)
        assert service.env == {"BIGQUERY_EMULATOR_HOST": service.host}
        assert requests.get(f"{service.url}/readyz", timeout=5).json()["status"] == "ok"
        return service

    start_bigquery = emulators.start_bigquery
    monkeypatch.setattr(emulators, "start_bigquery", start_and_remember)
    assert report.main(["--charts", str(tmp_path), "--history-days", "7", "--days", "7"]) == 0

    out = capsys.readouterr().out
    assert "Seeded buildkite-fanout-local.buildkite" in out
    assert "from 2025-06-06 00:00 to 2025-06-13 00:00 UTC" in out
    for question in report.QUESTIONS:
        assert f"(queries/{question.name}.sql)" in out
    health = out.split("(queries/build_health.sql)")[1]
    assert "web-app" in health and "mobile" in health and "my-pipeline" in health
    charts = sorted(p.name for p in tmp_path.glob("*.png"))
    assert charts == [f"duration-trend-{p}.png" for p in ("api", "mobile", "my-pipeline", "web-app")]
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in tmp_path.glob("*.png"))

    (service,) = started  # ... and it is gone again
    assert emulators.group_members(service.pgid) == []
    assert service.process.returncode is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{service.url}/readyz", timeout=2)


def test_make_report_runs_the_report() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nreport: venv ## " in makefile
    assert "$(PY) -m tools.ops.report" in makefile
