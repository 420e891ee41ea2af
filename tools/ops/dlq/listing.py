"""``make dlq``: peek at each function's dead-letter queue; every message is handed back."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .logs import cloud_log_lines, errors_from_lines, local_log_lines
from .queues import DeadLetter, Queue, clients, discover, leased, short_name


@dataclass
class Listing:
    function: str
    queue: Queue | None
    messages: list[DeadLetter]
    note: str = ""  # why there is no queue
    errors: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for letter in self.messages:
            row = {"function": self.function, **letter.summary()}
            error = self.errors.get(str(letter.event.get("event_key")))
            if error:
                row["last_error"] = {k: error.get(k) for k in ("time", "outcome", "message")}
            rows.append(row)
        return rows


def list_queues(
    project: str,
    functions: Sequence[str],
    *,
    logs: Path | None = None,
    cloud_logging: bool = False,
    subscriber: Any = None,
    publisher: Any = None,
) -> list[Listing]:
    """Peek at each function's dead-letter queue; every message is handed back afterwards."""
    subscriber, publisher = clients(subscriber, publisher)
    local_lines: list[dict[str, Any]] | None = None
    listings = []
    for function, queue in discover(project, functions, subscriber, publisher).items():
        if not isinstance(queue, Queue):
            listings.append(Listing(function, None, [], note=queue))
            continue
        with leased(subscriber, queue.dead_letter_subscription) as lease:
            messages = lease.pull()
        listing = Listing(function, queue, messages)
        if messages and logs:
            if local_lines is None:  # read after pulling: the last failure is logged before dead-lettering
                local_lines = list(local_log_lines(logs))
            listing.errors = errors_from_lines(local_lines, function)
        elif messages and cloud_logging:
            listing.errors = errors_from_lines(cloud_log_lines(project, function), function)
        listings.append(listing)
    return listings


def render(listings: Sequence[Listing]) -> str:
    out: list[str] = []
    for listing in listings:
        queue = listing.queue
        if queue is None:
            out.append(f"{listing.function}: {listing.note}")
            continue
        count = len(listing.messages)
        out.append(
            f"{listing.function}: {count} dead-lettered in {queue.dead_letter_subscription}"
            f" (after {queue.max_delivery_attempts} attempts on {short_name(queue.subscription)})"
        )
        for row in listing.rows():
            build = f"#{row['build_number']}" if row.get("build_number") is not None else "-"
            out.append(
                f"  {row['message_id']:<10} {row.get('event_type') or '?':<24} {row.get('pipeline') or '-':<20}"
                f" {build:<8} {row.get('build_state') or '-':<9} delivered {row.get('delivery_count') or '?'}x"
                f" via {row.get('source_subscription') or '?'}"
            )
            detail = [
                f"dead-lettered {row.get('dead_lettered_at') or '?'}",
                f"first published {row.get('published_at') or '?'}",
                f"event_key {row.get('event_key') or '-'}",
            ]
            out.append("             " + ", ".join(detail))
            if row.get("unreadable"):
                out.append(f"             unreadable: {row['unreadable']}")
            error = row.get("last_error")
            if error:
                out.append(f"             last error {error.get('time') or ''}: {error.get('message')}")
            elif listing.errors or row.get("event_key"):
                out.append(
                    f"             last error: not in the logs searched (look for event_key={row.get('event_key')})"
                )
    total = sum(len(listing.messages) for listing in listings)
    out.append(f"{total} dead-lettered message{'s' if total != 1 else ''} in all")
    return "\n".join(out)
