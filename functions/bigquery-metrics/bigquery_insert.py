"""Rows into BigQuery with ``tabledata.insertAll`` over REST (google-auth's session and requests),
every answer mapped onto the ack/nack contract.

The official client would add ~0.3 s of imports to every cold start for this one call.
"""

from __future__ import annotations

import contextvars
import re
from collections.abc import Mapping
from functools import cache
from typing import Any, Protocol
from urllib.parse import quote

from buildkite_events import ConfigError, TransientError
from buildkite_events.http import json_object, raise_for

# project.dataset.table; a domain-scoped project ("example.com:proj") contains a dot itself.
TABLE_ID = re.compile(r"^(?P<project>[a-z0-9.:-]+)\.(?P<dataset>\w+)\.(?P<table>[\w-]+)$", re.IGNORECASE)
_RATE_LIMIT_REASONS = frozenset({"rateLimitExceeded", "quotaExceeded"})  # 403s that mean "slow down"


class Destination(Protocol):
    """Where rows go (the function's config)."""

    @property
    def api_url(self) -> str: ...  # an emulator's endpoint; empty: Google's API
    @property
    def timeout_seconds(self) -> float: ...
    def table_id(self, table: str) -> str: ...


_GOOGLE_API = "https://bigquery.googleapis.com"
_SCOPES = ("https://www.googleapis.com/auth/bigquery.insertdata",)


def insert_rows(rows: list[tuple[str, Mapping[str, Any]]], row_id: str, config: Destination, done: set[str]) -> None:
    """Each table's row, side by side (a typed row and its events_raw row cost one round trip of
    waiting, not two); every table that took its row joins ``done``, then the first failure is
    raised (a configuration error before a transient one: retrying would not fix it)."""

    def insert(table: str, row: Mapping[str, Any]) -> None:
        insert_row(config.table_id(table), row, row_id, config)
        done.add(table)

    if len(rows) < 2:
        for table, row in rows:
            insert(table, row)
        return
    from concurrent.futures import ThreadPoolExecutor  # loaded already by the server's threaded workers

    with ThreadPoolExecutor(len(rows)) as pool:  # each in a copy of this delivery's context: its log fields, its span
        futures = [pool.submit(contextvars.copy_context().run, insert, table, row) for table, row in rows]
    errors = [error for future in futures if (error := future.exception()) is not None]
    if errors:
        raise next((e for e in errors if isinstance(e, ConfigError)), errors[0])


def insert_row(table: str, row: Mapping[str, Any], row_id: str, config: Destination) -> None:
    """Stream one row with ``tabledata.insertAll``; map every failure onto the ack/nack contract.

    Plain REST on google-auth's session: the official client would add ~0.3 s of imports to
    every cold start for this one call. One request per attempt: the handler retries a
    ``TransientError`` within its budget (the client's default retry waits up to ~600 s).
    """
    import requests
    from google.auth import exceptions as auth_exc

    match = TABLE_ID.match(table)
    if not match:
        raise ConfigError(f"{table!r} is not project.dataset.table")
    project, dataset, name = (quote(match[k], safe=":") for k in ("project", "dataset", "table"))
    base = (config.api_url or _GOOGLE_API).rstrip("/")
    url = f"{base}/bigquery/v2/projects/{project}/datasets/{dataset}/tables/{name}/insertAll"
    # ignoreUnknownValues false: a field the table lacks is refused, not silently dropped.
    body = {"rows": [{"insertId": row_id, "json": row}], "skipInvalidRows": False, "ignoreUnknownValues": False}
    try:
        response = _session(config.api_url).post(url, json=body, timeout=config.timeout_seconds)
    except (auth_exc.DefaultCredentialsError, auth_exc.RefreshError) as err:
        raise ConfigError(f"no usable Google credentials for BigQuery: {type(err).__name__}") from None
    except (requests.RequestException, auth_exc.TransportError) as err:  # timeouts, resets, refused
        raise TransientError(f"BigQuery insert into {table} failed: {type(err).__name__}") from None
    _check(response, table)


def _check(response: Any, table: str) -> None:
    answer = json_object(response)
    if response.status_code == 200 and answer.get("insertErrors"):
        # A row BigQuery refuses (a field the table lacks, a wrong type) is refused again on every
        # retry: nack, so the message waits in the dead-letter queue until the schema is fixed.
        raise ConfigError(f"BigQuery refused the row for {table}: {describe_insert_errors(answer['insertErrors'])}")
    error: Mapping[str, Any] = answer["error"] if isinstance(answer.get("error"), Mapping) else {}
    reasons = {str(e["reason"]) for e in error.get("errors") or [] if isinstance(e, Mapping) and e.get("reason")}
    raise_for(
        response.status_code,
        f"BigQuery (insert into {table})",
        headers=response.headers,
        detail=f"({', '.join(sorted(reasons))})" if reasons else "",
        transient={response.status_code} if reasons & _RATE_LIMIT_REASONS else (),  # a 403 that means "slow down"
        config={
            404: f"{table} does not exist (create it with Terraform)",
            400: f"the insert was rejected: {str(error.get('message', ''))[:300]}",
            range(401, 404): "no permission to insert into it",
        },
    )


def describe_insert_errors(errors: Any) -> str:
    """``insertErrors`` → "invalid at number: Cannot convert value to integer; ..." (no row values)."""
    parts: list[str] = []
    for entry in errors if isinstance(errors, list) else []:
        for error in entry.get("errors", []) if isinstance(entry, Mapping) else []:
            if not isinstance(error, Mapping):
                continue
            where = f" at {error['location']}" if error.get("location") else ""
            parts.append(f"{error.get('reason', 'error')}{where}: {error.get('message', '')}".strip(": "))
    return "; ".join(dict.fromkeys(parts))[:800] or "unknown error"


@cache
def _session(api_url: str) -> Any:
    """One HTTP session per instance: keep-alive, and (for Google's API) a refreshed token."""
    import requests

    if api_url:  # an emulator takes no credentials
        session = requests.Session()
    else:
        import google.auth
        from google.auth.transport.requests import AuthorizedSession

        credentials, _ = google.auth.default(scopes=_SCOPES)
        session = AuthorizedSession(credentials)  # type: ignore[no-untyped-call]
    session.headers["User-Agent"] = "buildkite-fanout-bigquery-metrics"
    return session
