"""Command line of ``make dlq`` and ``make replay``: see ``tools.ops.dlq``."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from pathlib import Path

from tools import ROOT

from .listing import list_queues, render
from .queues import DlqError, pubsub_functions, resolve_project
from .replay import render_replay, replay

USAGE = "Dead-letter queues: what each function gave up on, and replaying it to that function only."
LOCAL_LOGS = ROOT / ".stack" / "logs"


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.dlq", description=USAGE)
    parser.add_argument("--project", help="Google Cloud project (default: PROJECT, GOOGLE_CLOUD_PROJECT, gcloud)")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("list", help="list dead-lettered messages per function (nothing is acknowledged)")
    show.add_argument("functions", nargs="*", help="functions to look at (default: every Pub/Sub function)")
    show.add_argument("--logs", type=Path, help="directory of function log files to find each last error in")
    show.add_argument("--no-logs", action="store_true", help="do not look for the last error")
    show.add_argument("--json", action="store_true", help="one JSON object per message")
    again = commands.add_parser("replay", help="replay one function's dead-lettered messages to it")
    again.add_argument("function")
    again.add_argument("--limit", type=int, help="replay at most this many")
    again.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
    again.add_argument("--stop-after-failures", type=int, default=3, help="stop after this many failures in a row")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        project = resolve_project(args.project)
        if args.command == "list":
            known = pubsub_functions()
            unknown = [f for f in args.functions if f not in known]
            if unknown:
                raise DlqError(f"not a Pub/Sub function: {', '.join(unknown)}; known: {', '.join(known)}")
            emulator = bool(os.environ.get("PUBSUB_EMULATOR_HOST"))
            logs = args.logs or (LOCAL_LOGS if emulator and LOCAL_LOGS.is_dir() else None)
            listings = list_queues(
                project,
                args.functions or known,
                logs=None if args.no_logs else logs,
                cloud_logging=not (args.no_logs or emulator or args.logs),
            )
            if args.json:
                for listing in listings:
                    for row in listing.rows():
                        print(json.dumps(row, default=str))
            else:
                print(render(listings))
            return 0
        started = time.monotonic()
        report = replay(
            project,
            args.function,
            limit=args.limit,
            dry_run=args.dry_run,
            stop_after_failures=args.stop_after_failures,
        )
        print(render_replay(report))
        if args.dry_run:
            print(f"dry run: {report.left} message(s) would be replayed; nothing changed")
        print(f"({time.monotonic() - started:.1f}s)")
        return 0 if report.failed == 0 else 1
    except DlqError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
