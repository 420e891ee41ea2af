"""Shared fixtures. Emulators start on first request and live for the whole session.

Process handling lives in tools/local/emulators.py; fixtures here only wire it into pytest.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tools.local import emulators
from tools.local.emulators import Service

GCP_PROJECT = "buildkite-fanout-test"


def _serve(service: Service) -> Iterator[Service]:
    """Yield a started service with its client env vars set; undo both afterwards."""
    with service, pytest.MonkeyPatch.context() as mp:
        for name, value in service.env.items():
            mp.setenv(name, value)
        yield service


@pytest.fixture(scope="session")
def emulator_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("emulator-logs")


@pytest.fixture(scope="session")
def gcp_project() -> Iterator[str]:
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GOOGLE_CLOUD_PROJECT", GCP_PROJECT)
        yield GCP_PROJECT


@pytest.fixture(scope="session")
def pubsub_emulator(emulator_log_dir: Path) -> Iterator[Service]:
    yield from _serve(emulators.start_pubsub(emulator_log_dir))


@pytest.fixture(scope="session")
def firestore_emulator(emulator_log_dir: Path) -> Iterator[Service]:
    yield from _serve(emulators.start_firestore(emulator_log_dir))


@pytest.fixture(scope="session")
def gcs_server(emulator_log_dir: Path) -> Iterator[Service]:
    yield from _serve(emulators.start_gcs(emulator_log_dir))


@pytest.fixture
def firestore(firestore_emulator: Service, gcp_project: str) -> Iterator[Any]:
    """A Firestore client on an emptied emulator database."""
    emulators.wipe_firestore(firestore_emulator.host, gcp_project)
    from google.cloud import firestore as firestore_module

    client: Any = firestore_module.Client(project=gcp_project)
    yield client
    client.close()


# --- BigQuery: bqemulator, for functions/bigquery-metrics and tools/ops (report, backfill) ----


@pytest.fixture(scope="session")
def bigquery_emulator(emulator_log_dir: Path) -> Iterator[Service]:
    yield from _serve(emulators.start_bigquery(emulator_log_dir, project=GCP_PROJECT))


@pytest.fixture
def bigquery_dataset(bigquery_emulator: Service, gcp_project: str) -> Iterator[str]:
    """A new dataset holding every table of schemas/bigquery and view of queries/views: "<project>.<dataset>".

    Made as Terraform makes it with no deploy_pipelines (test_dora.py makes its own with some)."""
    import uuid

    from tools.bigquery import bigquery_client, create_dataset

    client = bigquery_client(gcp_project, bigquery_emulator.url)
    dataset = f"test_{uuid.uuid4().hex[:12]}"
    create_dataset(client, gcp_project, dataset)
    yield f"{gcp_project}.{dataset}"
    client.delete_dataset(f"{gcp_project}.{dataset}", delete_contents=True, not_found_ok=True, timeout=30)
