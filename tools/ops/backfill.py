"""``make backfill``: replay the Cloud Storage archive into BigQuery.

gcs-archive keeps every event, once, at ``[<prefix>/]<org>/<pipeline>/<yyyy>/<mm>/<dd>/<build>/
<event>-<key>.json`` (agents under ``_agents/``, pings and the rest under ``_<kind>/``); each
object holds the message data exactly as it arrived. This reads those objects and writes the
rows bigquery-metrics would have written (its own ``metrics_rows.py`` builders) into
``events_raw``, ``builds`` and ``jobs``. For new tables after a schema change, for history from
before bigquery-metrics was deployed, for recovery after an outage.

Idempotent: event keys already in a table are skipped, so a second run adds nothing. Uses the
official clients; ``STORAGE_EMULATOR_HOST`` and ``BIGQUERY_EMULATOR_HOST`` (or
``BIGQUERY_API_URL``) point them at fake-gcs-server and bqemulator, without credentials.

    python -m tools.ops.backfill [--since 2025-06-01] [--until 2025-06-08] [--bucket B] [--prefix P]
"""

from __future__ import annotations

import argparse
import base64
import os
import re
import sys
import time
from collections import Counter
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from typing import Any, TextIO

from buildkite_events import BuildkiteEvent, InvalidEvent, parse_delivery
from buildkite_events.timeutil import isoformat
from tools.bigquery import bigquery_client, emulator_url, metrics_rows, select

_DAY_IN_PATH = re.compile(r"/(\d{4})/(\d{2})/(\d{2})/")
_BATCH_ROWS, _BATCH_BYTES = 500, 5_000_000  # insertAll takes at most 10 MB a request
_DOWNLOADERS = 8


@dataclass
class Summary:
    listed: int = 0
    read: int = 0
    outside: int = 0
    unreadable: Counter[str] = field(default_factory=Counter)
    examples: dict[str, str] = field(default_factory=dict)  # reason -> one object with it
    written: Counter[str] = field(default_factory=Counter)
    skipped: Counter[str] = field(default_factory=Counter)
    refused: Counter[str] = field(default_factory=Counter)
    refusals: list[str] = field(default_factory=list)

    def lines(self, tables: Sequence[str]) -> list[str]:
        out = [
            f"objects: {self.listed} listed, {self.read} read, {self.outside} outside the window,"
            f" {sum(self.unreadable.values())} unreadable"
        ]
        for table in tables:
            refused = f", {self.refused[table]} refused" if self.refused[table] else ""
            out.append(f"{table}: {self.written[table]} rows written, {self.skipped[table]} already there{refused}")
        for reason, count in self.unreadable.most_common():
            out.append(f"unreadable ({count}): {reason} (e.g. {self.examples[reason]})")
        out += [f"refused: {line}" for line in self.refusals[:10]]
        return out


class Progress:
    """A one-line bar on a terminal; a line per tenth on anything else. Quiet for short runs."""

    def __init__(self, total: int, out: TextIO, *, what: str = "objects", minimum: int = 200) -> None:
        self.total, self.out, self.what = total, out, what
        self.enabled = total >= minimum
        self.tty = out.isatty()
        self.done, self.shown, self.last = 0, -1, 0.0

    def advance(self, step: int = 1) -> None:
        self.done += step
        if not self.enabled:
            return
        tenth = self.done * 10 // max(1, self.total)
        now = time.monotonic()
        if self.tty and (now - self.last >= 0.1 or self.done == self.total):
            filled = self.done * 30 // max(1, self.total)
            self.out.write(f"\r[{'#' * filled}{'.' * (30 - filled)}] {self.done}/{self.total} {self.what}")
            self.out.flush()
            self.last = now
        elif not self.tty and tenth != self.shown:
            print(f"{self.done}/{self.total} {self.what}", file=self.out, flush=True)
            self.shown = tenth

    def close(self) -> None:
        if self.enabled and self.tty:
            self.out.write("\n")


def day_in_path(name: str) -> date | None:
    """The UTC day gcs-archive filed the object under (None for ``undated``)."""
    match = _DAY_IN_PATH.search(name)
    if not match:
        return None
    try:
        return date(int(match[1]), int(match[2]), int(match[3]))
    except ValueError:
        return None


def event_of(data: bytes, written_at: datetime | None) -> BuildkiteEvent:
    """The event an archived object holds, as the function saw it (its publish time: when it was archived)."""
    message: dict[str, Any] = {
        "data": base64.b64encode(data).decode(),
        "attributes": {},
        "publishTime": isoformat(written_at),
    }
    return parse_delivery(message)


@dataclass
class Backfill:
    bucket: Any  # google.cloud.storage Bucket
    bigquery: Any  # google.cloud.bigquery Client
    dataset: str  # project.dataset
    since: datetime | None = None
    until: datetime | None = None
    prefix: str = ""
    summary: Summary = field(default_factory=Summary)
    tables: tuple[str, ...] = ("events_raw", "builds", "jobs")

    def run(self, progress_out: TextIO = sys.stderr) -> Summary:
        present = {table: self._keys(table) for table in self.tables}
        blobs = [blob for blob in self.bucket.list_blobs(prefix=self.prefix or None) if self._may_hold_window(blob)]
        self.summary.listed += len(blobs)
        pending: dict[str, list[tuple[str, dict[str, Any]]]] = {table: [] for table in self.tables}
        size = 0
        progress = Progress(len(blobs), progress_out)
        now = datetime.now(UTC)
        rows_for = metrics_rows().rows_for
        for blob, data in self._download(blobs):
            progress.advance()
            event = self._event(blob, data)
            if event is None:
                continue
            for table, row in rows_for(event, now=now).tables.items():
                if event.key_hash in present[table]:
                    self.summary.skipped[table] += 1
                    continue
                present[table].add(event.key_hash)
                pending[table].append((event.key_hash, row))
                size += len(str(row))
                if len(pending[table]) >= _BATCH_ROWS or size >= _BATCH_BYTES:
                    self._flush(pending)
                    size = 0
        self._flush(pending)
        progress.close()
        return self.summary

    def _may_hold_window(self, blob: Any) -> bool:
        if not blob.name.endswith(".json"):
            return False
        day = day_in_path(blob.name[len(self.prefix) :])
        if day is None:
            return True  # undated: read it and look
        inside = (self.since is None or day >= self.since.date()) and (self.until is None or day <= self.until.date())
        if not inside:
            self.summary.outside += 1
        return inside

    def _download(self, blobs: Sequence[Any]) -> Iterator[tuple[Any, bytes | Exception]]:
        def fetch(blob: Any) -> bytes | Exception:
            try:
                return bytes(blob.download_as_bytes(retry=None, timeout=60))
            except Exception as err:  # reported per object; the run goes on
                return err

        with ThreadPoolExecutor(_DOWNLOADERS) as pool:
            yield from zip(blobs, pool.map(fetch, blobs), strict=True)

    def _event(self, blob: Any, data: bytes | Exception) -> BuildkiteEvent | None:
        if isinstance(data, Exception):
            self._unreadable(blob, f"could not read it: {type(data).__name__}")
            return None
        try:
            event = event_of(data, blob.time_created)
        except InvalidEvent as err:
            self._unreadable(blob, str(err)[:200])
            return None
        self.summary.read += 1
        when = event.occurred_at
        outside = when is not None and (
            (self.since is not None and when < self.since) or (self.until is not None and when >= self.until)
        )
        if outside or (when is None and (self.since or self.until)):
            self.summary.outside += 1
            return None
        return event

    def _unreadable(self, blob: Any, reason: str) -> None:
        self.summary.unreadable[reason] += 1
        self.summary.examples.setdefault(reason, blob.name)

    def _keys(self, table: str) -> set[str]:
        rows = select(self.bigquery, f"SELECT DISTINCT event_key FROM `{self.dataset}.{table}`")  # noqa: S608
        return {str(row["event_key"]) for row in rows}

    def _flush(self, pending: dict[str, list[tuple[str, dict[str, Any]]]]) -> None:
        from google.cloud import bigquery

        for table, rows in pending.items():
            if not rows:
                continue
            errors = self.bigquery.insert_rows_json(
                f"{self.dataset}.{table}",
                [row for _, row in rows],
                row_ids=[key for key, _ in rows],
                retry=bigquery.DEFAULT_RETRY.with_deadline(60),
                timeout=60,
            )
            refused = {e["index"]: e.get("errors") or [] for e in errors if isinstance(e, dict) and "index" in e}
            self.summary.written[table] += len(rows) - len(refused)
            self.summary.refused[table] += len(refused)
            for index, reasons in sorted(refused.items())[:10]:  # BigQuery names the field, never its value
                why = "; ".join(
                    f"{r.get('reason')} at {r.get('location') or '-'}" for r in reasons if isinstance(r, dict)
                )
                self.summary.refusals.append(f"{table} event {rows[index][0]}: {why or 'no reason given'}")
            rows.clear()


def _parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m tools.ops.backfill", description="Replay the Cloud Storage archive into BigQuery."
    )
    parser.add_argument("--bucket", default=os.environ.get("ARCHIVE_BUCKET", ""), help="default: $ARCHIVE_BUCKET")
    parser.add_argument("--prefix", default=os.environ.get("ARCHIVE_PREFIX", ""), help="default: $ARCHIVE_PREFIX")
    parser.add_argument("--project", default=os.environ.get("BIGQUERY_PROJECT", ""), help="default: $BIGQUERY_PROJECT")
    parser.add_argument("--dataset", default=os.environ.get("BIGQUERY_DATASET", "buildkite"))
    parser.add_argument("--since", type=_when, help="events that happened at or after this (ISO-8601 date or time)")
    parser.add_argument("--until", type=_when, help="events that happened before this")
    return parser.parse_args(argv)


def _when(text: str) -> datetime:
    value = datetime.fromisoformat(text.replace("Z", "+00:00"))
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def main(argv: Sequence[str] | None = None, out: TextIO | None = None) -> int:
    from google.api_core import exceptions as gexc
    from google.cloud import storage

    out = out or sys.stdout
    args = _parse_args(argv)
    if not args.bucket or not args.project:
        print("set ARCHIVE_BUCKET and BIGQUERY_PROJECT (and BIGQUERY_DATASET, default buildkite)", file=sys.stderr)
        return 2
    prefix = "/".join(part for part in args.prefix.split("/") if part.strip("./"))
    prefix = f"{prefix}/" if prefix else ""
    bucket = storage.Client(project=args.project).bucket(args.bucket)
    dataset = f"{args.project}.{args.dataset}"
    job = Backfill(bucket, bigquery_client(args.project, emulator_url()), dataset, args.since, args.until, prefix)
    window = f" ({_span(args.since, args.until)})" if args.since or args.until else ""
    print(f"Backfill gs://{args.bucket}/{prefix} -> {dataset}{window}", file=out)
    try:
        summary = job.run()
    except gexc.NotFound as err:
        print(f"not found: {err.message} (the bucket, or a table: create them with Terraform)", file=sys.stderr)
        return 2
    for line in summary.lines(job.tables):
        print(f"  {line}", file=out)
    return 1 if sum(summary.refused.values()) else 0


def _span(since: datetime | None, until: datetime | None) -> str:
    parts = [f"from {since:%Y-%m-%d %H:%M}" if since else "", f"until {until:%Y-%m-%d %H:%M}" if until else ""]
    return " ".join(part for part in parts if part) + " UTC"


if __name__ == "__main__":
    sys.exit(main())
