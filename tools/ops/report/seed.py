"""The rows bigquery-metrics writes for a list of webhook bodies (the fixtures, the synthetic
history), and loading them into a dataset: what ``make report`` and the tests seed with."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

from buildkite_events import BuildkiteEvent, parse_delivery
from buildkite_events.filters import parse_filter
from buildkite_events.message import message_attributes
from buildkite_events.timeutil import isoformat
from tools import ROOT
from tools.bigquery import insert_rows, metrics_rows
from tools.manifests import manifest
from tools.ops.report.history import HISTORY_END

FIXTURES = ROOT / "tests" / "fixtures" / "buildkite" / "payloads"


def fixture_bodies() -> list[dict[str, Any]]:
    return [json.loads(path.read_text()) for path in sorted(FIXTURES.glob("*.json"))]


def as_event(body: Mapping[str, Any], message_id: str) -> BuildkiteEvent:
    """The event the function would see for ``body``: published a second after it happened."""
    event = parse_delivery(dict(body))
    when = event.occurred_at or HISTORY_END
    message = {
        "data": base64.b64encode(json.dumps(body).encode()).decode(),
        "messageId": message_id,
        "publishTime": isoformat(when + timedelta(seconds=1)),
        "attributes": message_attributes(event),
    }
    return parse_delivery({"message": message})


@dataclass
class Seeded:
    tables: dict[str, list[tuple[str, dict[str, Any]]]] = field(default_factory=dict)  # table -> (insertId, row)
    duplicates: int = 0

    def rows(self, table: str) -> list[tuple[str, dict[str, Any]]]:
        return self.tables.get(table, [])


def seed_rows(bodies: Iterable[Mapping[str, Any]], *, duplicate_every: int = 0) -> Seeded:
    """The rows bigquery-metrics writes for ``bodies`` (events its filter rejects are skipped).

    ``duplicate_every=n`` repeats every n-th event's rows a minute later, as a redelivery that
    slipped past the idempotency claim would: the views must hide them.
    """
    rows_for = metrics_rows().rows_for
    accepts = parse_filter(manifest("bigquery-metrics").filter).matches
    seeded = Seeded()
    for index, body in enumerate(bodies):
        event = as_event(body, message_id=f"seed-{index}")
        if not accepts(event.attributes):
            continue
        written = (event.occurred_at or HISTORY_END) + timedelta(seconds=2)
        for table, row in rows_for(event, now=written).tables.items():
            target = seeded.tables.setdefault(table, [])
            target.append((event.key_hash, row))
            if duplicate_every and index % duplicate_every == 0:
                target.append((event.key_hash, {**row, "inserted_at": isoformat(written + timedelta(minutes=1))}))
                seeded.duplicates += 1
    return seeded


def seed(client: Any, project: str, dataset: str, seeded: Seeded) -> None:
    for table, rows in seeded.tables.items():
        insert_rows(client, f"{project}.{dataset}.{table}", rows)
