"""BigQuery as Terraform makes it: the client, and the dataset's tables and views from
``schemas/bigquery`` and ``queries/views``. Used by the local stack, the tests and the
operator tools alike."""

from __future__ import annotations

import json
import os
from typing import Any

from tools import ROOT

SCHEMA_DIR = ROOT / "schemas" / "bigquery"
QUERY_DIR = ROOT / "queries"
VIEW_DIR = QUERY_DIR / "views"


def bigquery_client(project: str, api_url: str | None = None) -> Any:
    """The official client: Application Default Credentials, or anonymous against an emulator."""
    from google.cloud import bigquery

    if not api_url:
        return bigquery.Client(project=project, location=os.environ.get("BIGQUERY_LOCATION") or None)
    from google.api_core.client_options import ClientOptions
    from google.auth.credentials import AnonymousCredentials

    return bigquery.Client(
        project=project, credentials=AnonymousCredentials(), client_options=ClientOptions(api_endpoint=api_url)
    )


def table_specs() -> dict[str, dict[str, Any]]:
    """``schemas/bigquery/<table>.json`` by table name."""
    return {path.stem: json.loads(path.read_text()) for path in sorted(SCHEMA_DIR.glob("*.json"))}


def render(sql: str, project: str, dataset: str) -> str:
    """Fill ``${project}`` and ``${bigquery_dataset}`` as Terraform does for the views."""
    text = sql.replace("${project}", project).replace("${bigquery_dataset}", dataset)
    if "${" in text:
        raise ValueError("SQL uses a placeholder other than ${project} and ${bigquery_dataset}")
    return text


def create_dataset(client: Any, project: str, dataset: str) -> None:
    """The dataset, its tables (schema, partitioning, clustering) and views, as Terraform makes them."""
    from google.cloud import bigquery

    client.create_dataset(f"{project}.{dataset}", exists_ok=True, timeout=30)
    for name, spec in table_specs().items():
        fields = spec["fields"] if isinstance(spec, dict) else spec
        table = bigquery.Table(
            f"{project}.{dataset}.{name}", schema=[bigquery.SchemaField.from_api_repr(f) for f in fields]
        )
        if isinstance(spec, dict):
            table.description = spec.get("description")
            partitioning = spec.get("time_partitioning")
            if partitioning:
                table.time_partitioning = bigquery.TimePartitioning(
                    type_=partitioning.get("type", "DAY"),
                    field=partitioning.get("field"),
                    expiration_ms=partitioning.get("expiration_ms"),
                )
            table.clustering_fields = spec.get("clustering")
        client.create_table(table, exists_ok=True, timeout=30)
    for path in sorted(VIEW_DIR.glob("*.sql")):
        view = bigquery.Table(f"{project}.{dataset}.{path.stem}")
        view.view_query = render(path.read_text(), project, dataset)
        client.create_table(view, exists_ok=True, timeout=30)
