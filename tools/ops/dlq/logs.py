"""A function's last error for each dead-lettered event: from the local stack's log files or Cloud Logging.

Pub/Sub does not keep the function's error with the message, so ``make dlq`` looks it up
by ``event_key`` in what the function logged.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path
from typing import Any

from buildkite_events.errors import ACKED_OUTCOMES

from .queues import DlqError


def errors_from_lines(lines: Iterable[Mapping[str, Any]], function: str) -> dict[str, Mapping[str, Any]]:
    """event_key → the last non-acked ``outcome`` line ``function`` logged for it."""
    last: dict[str, Mapping[str, Any]] = {}
    for line in lines:
        key = line.get("event_key")
        if line.get("function") != function or not key or "outcome" not in line:
            continue
        if line["outcome"] in ACKED_OUTCOMES:
            continue
        if key not in last or str(line.get("time", "")) >= str(last[key].get("time", "")):
            last[key] = line
    return last


def local_log_lines(log_dir: Path) -> Iterator[dict[str, Any]]:
    """JSON lines of every ``*.log`` in ``log_dir`` (the local stack writes one per process)."""
    for path in sorted(Path(log_dir).glob("*.log")):
        with path.open(errors="replace") as handle:
            for raw in handle:
                if raw.startswith("{") and '"outcome"' in raw:
                    try:
                        value = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        yield value


def cloud_log_lines(project: str, function: str, days: int = 7) -> list[dict[str, Any]]:
    """The function's failed-delivery lines from Cloud Logging, via ``gcloud logging read``."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise DlqError("gcloud is not on PATH (needed to read Cloud Logging; --no-logs skips it)")
    acked = " OR ".join(json.dumps(outcome) for outcome in sorted(ACKED_OUTCOMES))
    query = f'jsonPayload.function="{function}" AND jsonPayload.outcome:* AND NOT jsonPayload.outcome=({acked})'
    argv = [gcloud, "logging", "read", query, f"--project={project}", f"--freshness={days}d"]
    argv += ["--limit=2000", "--format=json"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise DlqError(f"gcloud logging read failed: {result.stderr.strip()[-500:]}")
    entries = json.loads(result.stdout or "[]")
    return [
        e["jsonPayload"] | {"time": e.get("timestamp", "")} for e in entries if isinstance(e.get("jsonPayload"), dict)
    ]
