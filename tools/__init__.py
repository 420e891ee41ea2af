"""Project tooling, in rooms by audience:

- ``tools/local``: the local simulation (emulators, topology, third-party stand-ins, fault
  proxy, the whole stack for ``make demo`` / ``make run-local``);
- ``tools/ops``: operator commands that touch a real project (deploy, dead-letter queues, report,
  backfill);
- ``tools/perf``: benchmarks and load (``make bench``, ``make load``);
- ``tools/terraform``: the offline Terraform toolchain (``make terraform-check``).

Modules at this level (manifests, bundles, BigQuery set-up, these constants) serve every room; rooms
never import each other except through them (ops and perf may start local emulators).
"""

import contextlib
import os
from collections.abc import Iterator, Mapping
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
LOCAL_PROJECT = "buildkite-fanout-local"  # the local stack's Google Cloud project on the emulators
TOPIC = "buildkite-events"
LOCAL_STATE_COLLECTION = "buildkite-fanout-state-local"  # fills ${state_collection} on the emulators


@contextlib.contextmanager
def environ(values: Mapping[str, str]) -> Iterator[None]:
    """``values`` in this process's environment for the block; what was there before, after."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
