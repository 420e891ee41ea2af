"""What our Firestore state saves a cold start: a claim and its completion in a fresh process,
``buildkite_events.state`` (REST on one keep-alive connection) beside Google's client library
(gRPC) doing the same two writes, on the same emulator, alternately.

Each child first loads what a function process holds already (functions-framework, and our
package, whose handler every function imports), then times itself from the state's first
import to the second write.
"""

from __future__ import annotations

import os
import statistics
import subprocess
import sys
import uuid

LOADED = """
import time
import functions_framework
import buildkite_events
started = time.perf_counter()
"""

OURS = """
from buildkite_events.idempotency import IdempotencyStore
store = IdempotencyStore(scope="bench-state")
store.complete(store.claim(KEY), ts="1")
print((time.perf_counter() - started) * 1000)
"""

LIBRARY = """
from google.cloud import firestore
client = firestore.Client()
ref = client.collection(COLLECTION).document(KEY)
ref.create({"state": "pending", "claimed_at": firestore.SERVER_TIMESTAMP}, retry=None, timeout=10)
ref.update({"state": "done", "completed_at": firestore.SERVER_TIMESTAMP}, retry=None, timeout=10)
print((time.perf_counter() - started) * 1000)
"""


def _run(code: str, env: dict[str, str]) -> float:
    key = f"bench-{uuid.uuid4().hex}"
    source = f"KEY = {key!r}\nCOLLECTION = {env['STATE_COLLECTION']!r}\n{LOADED}{code}"
    result = subprocess.run(
        [sys.executable, "-c", source], env={**os.environ, **env}, capture_output=True, text=True, timeout=120
    )
    if result.returncode:
        raise RuntimeError(f"the state benchmark failed:\n{result.stderr[-2000:]}")
    return float(result.stdout.split()[-1]) / 1000


def measure(env: dict[str, str], runs: int) -> tuple[float, float]:
    """Median seconds of (ours, Google's client) for import + claim + completion; ``env`` points
    both at the emulator, a project and the state collection. A first pair warms up."""
    ours, library = [], []
    for _ in range(runs + 1):
        ours.append(_run(OURS, env))
        library.append(_run(LIBRARY, env))
    return statistics.median(ours[1:]), statistics.median(library[1:])
