"""`make report`: both modes, the bqemulator it runs on, and the page it writes, rendered in headless Chromium."""

from __future__ import annotations

import contextlib
import io
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests

from tests.support import ROOT
from tools.bigquery import bigquery_client
from tools.local import emulators
from tools.local.emulators import Service
from tools.ops.report import __main__ as report
from tools.ops.report import chromium
from tools.ops.report.page import BAND_COLOURS, SECTIONS
from tools.ops.report.questions import QUESTIONS
from tools.ops.report.seed import fixture_bodies, seed, seed_rows


def test_spatial_extension_install_is_idempotent() -> None:
    emulators.install_duckdb_spatial()
    emulators.install_duckdb_spatial()
    assert list(Path.home().glob(".duckdb/extensions/v*/*/spatial.duckdb_extension"))


def test_report_reads_a_configured_dataset(
    bigquery_dataset: str, bigquery_emulator: Service, monkeypatch: pytest.MonkeyPatch, capsys: Any, tmp_path: Path
) -> None:
    project, dataset = bigquery_dataset.split(".")
    client = bigquery_client(project, bigquery_emulator.url)
    seed(client, project, dataset, seed_rows(fixture_bodies()))
    monkeypatch.setenv("BIGQUERY_PROJECT", project)
    monkeypatch.setenv("BIGQUERY_DATASET", dataset)
    monkeypatch.delenv("BIGQUERY_API_URL", raising=False)  # BIGQUERY_EMULATOR_HOST (set by the fixture) will do
    page = tmp_path / "index.html"
    assert report.main(["--until", "2025-06-13T00:00:00Z", "--days", "2", "--no-charts", "--page", str(page)]) == 0
    out = capsys.readouterr().out
    assert f"BigQuery {project}.{dataset}: builds, jobs and events from 2025-06-11 00:00" in out
    health = out.split("(queries/build_health.sql)")[1].splitlines()[3]
    # builds, passed, failed (one stopped on a block step that set it to failed), failure rate
    assert health.split()[:7] == ["my-pipeline", "main", "7", "2", "2", "50.0%", "0"]
    assert "features" in out.split("(queries/slowest_steps.sql)")[1]
    agents = out.split("(queries/agent_health.sql)")[1].splitlines()[3].split()
    assert agents[:7] == ["default", "1", "1", "1", "0", "1", "0"]  # connected, disconnected, stopped, lost, blocked
    html = page.read_text()
    assert f"BigQuery {project}.{dataset}" in html and "No deployments in this window" in html


@dataclass
class Seeded:
    out: str
    charts: Path
    page: Path
    service: Service


@pytest.fixture(scope="module")
def seeded_report(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Seeded]:
    """One run of `make report` without a project: its own emulator, seeded, then stopped."""
    out_dir = tmp_path_factory.mktemp("report")
    started: list[Service] = []
    start_bigquery = emulators.start_bigquery

    def start_and_remember(*args: Any, **kwargs: Any) -> Service:
        service = start_bigquery(*args, **kwargs)
        started.append(service)
        assert emulators.group_members(service.pgid)
        assert service.env == {"BIGQUERY_EMULATOR_HOST": service.host}
        assert requests.get(f"{service.url}/readyz", timeout=5).json()["status"] == "ok"
        return service

    buffer = io.StringIO()
    with pytest.MonkeyPatch.context() as mp, contextlib.redirect_stdout(buffer):
        for name in ("BIGQUERY_PROJECT", "BIGQUERY_DATASET", "BIGQUERY_API_URL"):
            mp.delenv(name, raising=False)
        mp.setattr(emulators, "start_bigquery", start_and_remember)
        page = out_dir / "index.html"
        assert report.main(["--charts", str(out_dir), "--page", str(page), "--history-days", "14", "--days", "14"]) == 0
    (service,) = started
    yield Seeded(buffer.getvalue(), out_dir, out_dir / "index.html", service)


def test_report_without_a_project_seeds_its_own_emulator_draws_charts_and_stops_it(seeded_report: Seeded) -> None:
    out = seeded_report.out
    assert "Seeded buildkite-fanout-local.buildkite" in out
    assert "Window: 2025-05-30 00:00 to 2025-06-13 00:00 UTC" in out
    for question in QUESTIONS:
        assert f"(queries/{question.name}.sql)" in out
    health = out.split("(queries/build_health.sql)")[1]
    assert "web-app" in health and "mobile" in health and "my-pipeline" in health
    frequency = out.split("(queries/dora_deployment_frequency.sql)")[1].splitlines()[3].split()
    assert frequency[0] == "(all)" and frequency[-1] in ("elite", "high", "medium", "low")
    charts = sorted(p.name for p in seeded_report.charts.glob("*.png"))
    pipelines = ("api", "api-deploy", "mobile", "my-pipeline", "web-app", "web-app-deploy")
    assert charts == sorted(f"duration-trend-{p}.png" for p in pipelines)
    assert all(p.read_bytes().startswith(b"\x89PNG\r\n\x1a\n") for p in seeded_report.charts.glob("*.png"))

    service = seeded_report.service  # ... and it is gone again
    assert emulators.group_members(service.pgid) == []
    assert service.process.returncode is not None
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{service.url}/readyz", timeout=2)


def test_the_page_is_one_self_contained_file(seeded_report: Seeded) -> None:
    html = seeded_report.page.read_text()
    assert html.startswith("<!doctype html>")
    assert '<meta name="viewport" content="width=device-width, initial-scale=1">' in html
    assert "<script" not in html.lower()
    assert not re.search(r"""(src|href)\s*=\s*["']?(https?:)?//""", html), "no remote assets"
    assert "url(" not in html and "@import" not in html
    for key, title in SECTIONS:
        assert f'<section id="{key}"><h2>{title}</h2>' in html
    assert html.count("<svg") >= 8  # trend charts, agent charts, meters


def test_the_page_renders_in_headless_chromium_on_a_phone(seeded_report: Seeded, tmp_path: Path) -> None:
    """Debian's chromium (`make test` installs it): the DOM has every section, the screenshot is not blank."""
    import numpy as np
    from PIL import Image

    dom = chromium.dom(seeded_report.page, width=390, height=844)
    for key, title in SECTIONS:
        section = re.search(rf'<section id="{key}"><h2>{re.escape(title)}</h2>(.*?)</section>', dom, re.S)
        assert section and len(section[1]) > 200, f"section {key} is missing or empty"
    assert re.search(r'class="value">[^<-]+</p>', dom), "the four keys show a figure"

    png = chromium.screenshot(seeded_report.page, tmp_path / "phone.png", width=390, height=2400)
    pixels = np.asarray(Image.open(png).convert("RGB")).astype(int)
    assert pixels.shape == (2400, 390, 3)
    ink = float((pixels.sum(axis=2) < 600).mean())
    assert 0.02 < ink < 0.6, f"{ink:.1%} of the page is ink: blank or broken"
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # text, badges and charts, not one flat colour
    # The band badges are drawn in their colours near the top (the four keys come first).
    top = {tuple(p) for p in np.unique(pixels[:900].reshape(-1, 3), axis=0)}
    assert top & {tuple(int(colour[i : i + 2], 16) for i in (1, 3, 5)) for colour in BAND_COLOURS.values()}


def test_make_report_and_make_test_know_their_tools() -> None:
    makefile = (ROOT / "Makefile").read_text()
    assert "\nreport: venv ## " in makefile
    assert "$(PY) -m tools.ops.report" in makefile
    assert "\nbackfill: venv ## " in makefile
    assert "chromium" in makefile.split("\ntest:")[1].split("\n\n")[0]  # make test installs what it needs
