"""``make bench``: every figure is a ratio against a bare baseline measured in the same run.

- cold start: process start → first 2xx on an event that makes the side effect (the run
  fails unless the function logged it done), each function's bundle as ``make package``
  builds it vs a bare functions-framework function that imports the same third-party client
  library (the manifest's ``local.client_library``) answering the same request (medians of
  alternating runs);
- per event: our plumbing around a no-op handler, one push served by functions-framework vs
  a bare functions-framework function decoding the same message, and in process vs bare
  ``base64`` + ``json.loads`` (``per_event.py``);
- ingress throughput: requests/s on loopback vs a bare functions-framework echo;
- Firestore state: import + a claim and its completion in a fresh process, ours (REST) vs
  Google's client library doing the same writes (``state.py``);
- end to end: webhook in → Slack post at the stand-in, p50 / p95, vs a bare chain
  (functions-framework publish → the emulator → a functions-framework push target), in
  interleaved events on the same emulator (``e2e.py``).
"""

from __future__ import annotations

import base64
import contextlib
import hashlib
import http.client
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path

from buildkite_events.filters import parse_filter
from buildkite_events.manifest import Manifest
from buildkite_events.message import to_message
from buildkite_events.signature import sign
from tools import LOCAL_PROJECT, LOCAL_STATE_COLLECTION, ROOT, bundle, environ
from tools.local import emulators
from tools.local.stack import WEBHOOK_TOKEN, LocalStack, local_stack
from tools.manifests import function_dir, local_support

from . import e2e, per_event
from . import state as state_bench

BARE = Path(__file__).resolve().parent / "bare"
PAYLOADS = ROOT / "tests" / "fixtures" / "buildkite" / "payloads"
COLD_RUNS = int(os.environ.get("BENCH_COLD_RUNS", "7"))
LOAD_SECONDS = float(os.environ.get("BENCH_LOAD_SECONDS", "5"))
TARGET_COLD, TARGET_OVERHEAD = 1.5, 2.0


def sample_for(m: Manifest) -> tuple[bytes, dict[str, str], str]:
    """A fixture this function acts on: (data, attributes, event); the one its local_support.py
    names (FIXTURE: an event that makes its side effect), else build.finished.failed if it can."""
    accepts = parse_filter(m.filter)
    chosen = getattr(local_support(m.name), "FIXTURE", "build.finished.failed")
    names = sorted(PAYLOADS.glob("*.json"), key=lambda p: p.stem != chosen)
    for path in names:
        body = json.loads(path.read_bytes())
        data, attributes = to_message(body, body["event"])
        if accepts.matches(attributes):
            return data, attributes, body["event"]
    raise LookupError(f"no fixture passes {m.name}'s filter")


def _request(port: int, body: bytes, headers: dict[str, str]) -> int:
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        conn.request("POST", "/", body=body, headers={"Content-Type": "application/json", **headers})
        return conn.getresponse().status
    finally:
        conn.close()


Request = Callable[[], tuple[bytes, dict[str, str]]]


def cold_start(source: Path, target: str, env: dict[str, str], request: Request, *, acts: bool = False) -> float:
    """Seconds from spawning functions-framework to the first 2xx for ``request``; ``acts``: the
    function must have logged that delivery ``done`` (its side effect made), not skipped it."""
    port = emulators.free_port()
    argv = [sys.executable, "-m", "functions_framework", "--source", str(source / "main.py"), "--target", target]
    argv += ["--port", str(port), "--host", "127.0.0.1"]
    with tempfile.TemporaryFile() as output:
        started = time.perf_counter()
        process = subprocess.Popen(
            argv, env={**os.environ, **env}, stdout=output, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            seconds = _first_2xx(process, port, target, request) - started
        finally:
            with contextlib.suppress(ProcessLookupError):  # it may have exited on its own
                os.killpg(process.pid, 15)
            process.wait(10)
        output.seek(0)
        logged = output.read().decode(errors="replace")
    if acts and '"outcome": "done"' not in logged:
        raise RuntimeError(f"{target} answered 2xx without making its side effect:\n{logged[-2000:]}")
    return seconds


def _first_2xx(process: subprocess.Popen[bytes], port: int, target: str, request: Request) -> float:
    while True:
        body, headers = request()
        with contextlib.suppress(OSError, http.client.HTTPException):
            status = _request(port, body, headers)
            if 200 <= status < 300:
                return time.perf_counter()
            raise RuntimeError(f"{target} answered {status}")
        if process.poll() is not None:
            raise RuntimeError(f"{target} exited with {process.returncode}")
        time.sleep(0.002)


def _push_requests(m: Manifest) -> Callable[[], tuple[bytes, dict[str, str]]]:
    """Push bodies for an event the function acts on, each a new build so idempotency lets it act."""
    data, attributes, _ = sample_for(m)
    counter = iter(range(10**9))

    def make() -> tuple[bytes, dict[str, str]]:
        n = next(counter)
        message = {"data": base64.b64encode(_unique(data, n)).decode(), "attributes": attributes, "messageId": f"b{n}"}
        return json.dumps({"message": message, "subscription": "projects/p/subscriptions/bench"}).encode(), {}

    return make


def _webhook_requests() -> Callable[[], tuple[bytes, dict[str, str]]]:
    body = (PAYLOADS / "ping.json").read_bytes()

    def make() -> tuple[bytes, dict[str, str]]:
        return body, {"X-Buildkite-Event": "ping", "X-Buildkite-Signature": sign(body, WEBHOOK_TOKEN, int(time.time()))}

    return make


def bench_cold(stack: LocalStack, bundles: Path) -> list[tuple[str, float, float]]:
    """Each function's bundle (what would be deployed), configured as its manifest ships it, vs
    the bare function with its client library."""
    rows, bare_source = [], as_built(BARE, bundles / "bare")
    for name, m in stack.manifests.items():
        request, bare_target = (_push_requests(m), "noop") if m.is_pubsub else (_webhook_requests(), "echo")
        source, bare_env = bundle.package(name, build_dir=bundles), {"BARE_CLIENT_LIBRARY": m.local.client_library}
        as_built(source, source)
        ours, bare = [], []
        for run in range(COLD_RUNS + 1):  # alternate, so drift hits both alike; the first pair warms up
            ours.append(cold_start(source, m.entry_point, stack.shipped_envs[name], request, acts=m.is_pubsub))
            bare.append(cold_start(bare_source, bare_target, bare_env, request))
            if run == 0:  # emulators and stand-ins answer their first calls slowly (a JIT warming up)
                ours, bare = [], []
        rows.append((name, statistics.median(ours), statistics.median(bare)))
    return rows


def as_built(source: Path, target: Path) -> Path:
    """``source`` copied to ``target`` and byte-compiled as Google's Python functions buildpack
    compiles every function's source at build time (``python3 -m compileall -f -q .``), so that
    no cold start compiles it again."""
    if source != target:
        shutil.rmtree(target, ignore_errors=True)
        shutil.copytree(source, target, ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run([sys.executable, "-m", "compileall", "-f", "-q", str(target)], check=True, stdout=subprocess.DEVNULL)
    return target


def _unique(data: bytes, n: int) -> bytes:
    """The same event as another build (id, number, commit), so that every function acts on it:
    claims are per event, GitHub's records per commit."""
    body = json.loads(data)
    if isinstance(body.get("build"), dict):
        build = body["build"]
        build["id"] = f"bench-{n}-{build.get('id')}"
        build["number"] = 900_000 + n
        build["commit"] = hashlib.sha1(f"bench-{n}-{build.get('commit')}".encode()).hexdigest()  # noqa: S324 - an id
    return json.dumps(body).encode()


def bench_per_event(stack: LocalStack) -> list[tuple[str, tuple[float, float], tuple[float, float]]]:
    """Per function: (served ours, bare), (in-process ours, bare), seconds per event."""
    rows = []
    for name, m in stack.manifests.items():
        if m.is_pubsub:
            data, attributes, _ = sample_for(m)
            rows.append((name, per_event.served(m, data, attributes), per_event.in_process(m, data, attributes)))
    return rows


def throughput(
    port: int, body: bytes, headers: Callable[[], dict[str, str]], seconds: float, workers: int = 8
) -> float:
    deadline = time.monotonic() + seconds
    counts = [0] * workers

    def worker(i: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        while time.monotonic() < deadline:
            conn.request("POST", "/", body=body, headers={"Content-Type": "application/json", **headers()})
            response = conn.getresponse()
            response.read()
            if response.status == 200:
                counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def publish_ceiling(project: str, topic: str, seconds: float, workers: int = 8) -> float:
    """Publishes/s the Pub/Sub emulator's REST endpoint takes from 8 threads, with no function in between."""
    from buildkite_events.publisher import Publisher

    publisher, deadline, counts = Publisher(project, topic), time.monotonic() + seconds, [0] * workers
    data = (PAYLOADS / "build.finished.failed.json").read_bytes()

    def worker(i: int) -> None:
        while time.monotonic() < deadline:
            publisher.publish(data, {"event_type": "build.finished"})
            counts[i] += 1

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return sum(counts) / seconds


def bench_throughput(log_dir: Path) -> tuple[float, float, float]:
    """On a Pub/Sub emulator of its own with no subscriptions, so pushes to the functions
    (the emulator ignores filters: every function gets every message) do not slow it."""
    import urllib.request

    body = (PAYLOADS / "build.finished.failed.json").read_bytes()

    def signed() -> dict[str, str]:
        return {
            "X-Buildkite-Event": "build.finished",
            "X-Buildkite-Signature": sign(body, WEBHOOK_TOKEN, int(time.time())),
        }

    project, topic = "buildkite-fanout-bench", "buildkite-events"
    with emulators.start_pubsub(log_dir) as pubsub:
        request = urllib.request.Request(f"{pubsub.url}/v1/projects/{project}/topics/{topic}", method="PUT")
        urllib.request.urlopen(request, timeout=10).close()
        env = {**pubsub.env, "GOOGLE_CLOUD_PROJECT": project, "PUBSUB_TOPIC": topic}
        env["BUILDKITE_WEBHOOK_TOKEN"] = WEBHOOK_TOKEN
        with emulators.start_function(function_dir("ingress"), "receive_webhook", env=env, log_dir=log_dir) as fn:
            ingress = throughput(fn.port, body, signed, LOAD_SECONDS)
        with emulators.start_function(BARE, "echo", log_dir=log_dir) as bare:
            echo = throughput(bare.port, body, signed, LOAD_SECONDS)
        with environ(pubsub.env):
            ceiling = publish_ceiling(project, topic, LOAD_SECONDS)
    return ingress, echo, ceiling


def main() -> int:
    log_dir = ROOT / ".stack" / "bench"
    print("Starting the local stack (emulators, stand-ins, functions)...", flush=True)
    with local_stack(log_dir) as stack:
        cold = bench_cold(stack, log_dir / "bundles")
        state_env = {**stack.services["firestore"].env, "GOOGLE_CLOUD_PROJECT": LOCAL_PROJECT}
        state_env["STATE_COLLECTION"] = LOCAL_STATE_COLLECTION
        rest, library = state_bench.measure(state_env, COLD_RUNS)
        per_event_rows = bench_per_event(stack)
        latencies = e2e.measure(stack, log_dir)
    ingress_rps, echo_rps, ceiling = bench_throughput(log_dir)
    print(
        f"\nCold start: process start → first 2xx on an event it acts on, median of {COLD_RUNS} alternating runs;"
        f" bare imports the same client library (target ≤ {TARGET_COLD}×)"
    )
    ok = all([_row(name, ours, bare, 1e3, "ms", TARGET_COLD) for name, ours, bare in cold])
    print(f"\nFirestore state: import + a claim and its completion in a fresh process, median of {COLD_RUNS} runs")
    print(
        f"  buildkite_events.state (REST) {rest * 1e3:7.1f} ms   google-cloud-firestore {library * 1e3:7.1f} ms"
        f"   saves {(library - rest) * 1e3:.0f} ms"
    )
    print(
        "\nPer event, served: one push through functions-framework, our plumbing around a no-op handler"
        f" vs a bare function decoding the message (target ≤ {TARGET_OVERHEAD}×)"
    )
    ok &= all([_row(name, *served, 1e6, "µs", TARGET_OVERHEAD) for name, served, _ in per_event_rows])
    print("\nPer event, plumbing alone: our handler around a no-op in process vs base64 + json.loads")
    for name, _, alone in per_event_rows:
        _row(name, *alone, 1e6, "µs")
    print(f"\nIngress throughput on loopback, 8 keep-alive clients, {LOAD_SECONDS:.0f} s each")
    print(f"  ingress (verify + publish to the emulator) {ingress_rps:7.0f} req/s")
    print(f"  bare functions-framework echo              {echo_rps:7.0f} req/s   ratio {ingress_rps / echo_rps:.2f}")
    share = ingress_rps / ceiling
    print(f"  emulator REST publish alone (no function)  {ceiling:7.0f} msg/s   ingress reaches {share:.0%} of it")
    print("  (the emulator answers REST publishes through an internal proxy in ~40 ms each, so it, not the")
    print("   ingress, sets this ceiling; the emulator's gRPC path answers in a few ms)")
    count = len(latencies.ours)
    print(f"\nEnd to end: webhook in → Slack post at the stand-in, {count} events each, ours and bare interleaved")
    for q in (50, 95):
        _row(f"p{q}", latencies.percentile("ours", q), latencies.percentile("bare", q), 1e3, "ms")
    print("  (ours: ingress → emulator → a push subscription per function → slack-notify → Slack stand-in;")
    print("   bare: functions-framework publish → emulator → one push subscription → functions-framework → recorder)")
    return 0 if ok else 1


def _row(name: str, ours: float, bare: float, scale: float, unit: str, target: float | None = None) -> bool:
    ratio = ours / bare
    mark = "" if target is None else "  ok" if ratio <= target else "  OVER TARGET"
    print(f"  {name:<18} {ours * scale:7.1f} {unit}   bare {bare * scale:7.1f} {unit}   {ratio:5.2f}×{mark}")
    return target is None or ratio <= target


if __name__ == "__main__":
    sys.exit(main())
