"""``make load``: the ingress under rising load on loopback, against a bare functions-framework echo.

Both run under functions-framework (one process, its default gunicorn threads), the ingress
publishing to a Pub/Sub emulator of its own. Each step offers a fixed request rate for a
bounded time, open loop: request *i* is due at ``start + i / rate`` whatever happened to the
earlier ones, and its latency counts from when it was due, so a server that falls behind
shows it in p99 instead of quietly slowing the client down. The requests are a realistic
mix of the fixture webhooks (mostly job events, then build, agent and ping events), half
token-authenticated and half HMAC-signed. The echo gets the same requests.

For the ingress every step ends by counting what reached the topic on a pull subscription:
it must equal the requests the ingress accepted (200), or the run fails.

    python -m tools.perf.load [--rates 25,50,100,200,400] [--seconds 5] [--clients 32]
"""

from __future__ import annotations

import argparse
import http.client
import json
import random
import statistics
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildkite_events.signature import sign
from tools import ROOT
from tools.local import emulators
from tools.manifests import function_dir

PAYLOADS = ROOT / "tests" / "fixtures" / "buildkite" / "payloads"
BARE = ROOT / "tools" / "perf" / "bench" / "bare"
PROJECT, TOPIC, SUBSCRIPTION = "buildkite-fanout-load", "buildkite-events", "load-count"
TOKEN = "load-webhook-token-0123456789"  # noqa: S105 - a local-only value
# What a busy Buildkite organisation sends: several jobs per build, each job scheduled,
# started and finished; builds a handful of transitions; agents now and then; pings rarely.
MIX = {"job.": 60, "build.": 25, "agent.": 14, "ping": 1}
Request = tuple[bytes, dict[str, str]]


def fixture_mix(seed: int = 7, size: int = 1000) -> list[tuple[str, bytes]]:
    """(event, body) in the proportions of ``MIX``, shuffled deterministically."""
    by_kind: dict[str, list[tuple[str, bytes]]] = {kind: [] for kind in MIX}
    for path in sorted(PAYLOADS.glob("*.json")):
        body = path.read_bytes()
        event = str(json.loads(body)["event"])
        kind = next(k for k in MIX if event.startswith(k))
        by_kind[kind].append((event, body))
    rng = random.Random(seed)  # noqa: S311 - a reproducible mix, not a secret
    kinds = rng.choices(list(MIX), weights=list(MIX.values()), k=size)
    return [rng.choice(by_kind[kind]) for kind in kinds]


def make_requests(mix: Sequence[tuple[str, bytes]], token: str = TOKEN) -> Callable[[int], Request]:
    def request(i: int) -> Request:
        event, body = mix[i % len(mix)]
        headers = {"Content-Type": "application/json", "X-Buildkite-Event": event}
        if i % 2:
            headers["X-Buildkite-Signature"] = sign(body, token, int(time.time()))
        else:
            headers["X-Buildkite-Token"] = token
        return body, headers

    return request


@dataclass
class Step:
    target: str
    rate: float
    seconds: float
    sent: int = 0
    ok: int = 0
    errors: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    latencies: list[float] = field(default_factory=list)  # seconds, from when each request was due
    elapsed: float = 0.0
    published: int | None = None  # ingress only: messages counted on the topic

    @property
    def throughput(self) -> float:
        return self.ok / self.elapsed if self.elapsed else 0.0

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        if len(self.latencies) == 1:
            return self.latencies[0]
        return statistics.quantiles(self.latencies, n=100, method="inclusive")[round(q) - 1]


def drive(port: int, request: Callable[[int], Request], rate: float, seconds: float, clients: int) -> Step:
    """Offer ``rate`` requests/s for ``seconds`` from ``clients`` keep-alive connections (open loop)."""
    total = max(1, round(rate * seconds))
    step = Step("", rate, seconds)
    lock = threading.Lock()
    start = time.perf_counter() + 0.05
    give_up = start + seconds * 3 + 10  # bounded even when the server stalls

    def client(k: int) -> None:
        conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        for i in range(k, total, clients):
            due = start + i / rate
            now = time.perf_counter()
            if now > give_up:
                break
            if due > now:
                time.sleep(due - now)
            body, headers = request(i)
            try:
                conn.request("POST", "/", body=body, headers=headers)
                response = conn.getresponse()
                response.read()
                status = str(response.status)
            except (OSError, http.client.HTTPException) as err:
                conn.close()
                conn = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
                status = type(err).__name__
            latency = time.perf_counter() - due
            with lock:
                step.sent += 1
                step.statuses[status] = step.statuses.get(status, 0) + 1
                if status == "200":
                    step.ok += 1
                    step.latencies.append(latency)
                else:
                    step.errors += 1
        conn.close()

    threads = [threading.Thread(target=client, args=(k,), daemon=True) for k in range(min(clients, total))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    step.elapsed = max(time.perf_counter() - start, 1e-9)
    return step


# --- counting what reached the topic ----------------------------------------------------------


def _rest(pubsub: str, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(f"http://{pubsub}/v1/{path}", data=data, method=method)
    request.add_header("Content-Type", "application/json")
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    with opener.open(request, timeout=30) as response:
        result: dict[str, Any] = json.loads(response.read() or b"{}")
        return result


def create_topic(pubsub: str, project: str = PROJECT) -> None:
    topic = f"projects/{project}/topics/{TOPIC}"
    _rest(pubsub, "PUT", topic)
    _rest(pubsub, "PUT", f"projects/{project}/subscriptions/{SUBSCRIPTION}", {"topic": topic})


def count_published(pubsub: str, expected: int, project: str = PROJECT, settle: float = 10.0) -> int:
    """Pull and ack until ``expected`` messages arrived, or nothing more came for ``settle`` seconds."""
    path = f"projects/{project}/subscriptions/{SUBSCRIPTION}"
    counted, quiet_since = 0, time.monotonic()
    while counted < expected or time.monotonic() - quiet_since < 0.5:
        answer = _rest(pubsub, "POST", f"{path}:pull", {"maxMessages": 1000, "returnImmediately": True})
        received = answer.get("receivedMessages") or []
        if received:
            _rest(pubsub, "POST", f"{path}:acknowledge", {"ackIds": [m["ackId"] for m in received]})
            counted += len(received)
            quiet_since = time.monotonic()
        elif time.monotonic() - quiet_since > settle:
            break
        else:
            time.sleep(0.05)
    return counted


# --- the run ------------------------------------------------------------------------------------


def run(
    rates: Sequence[float],
    seconds: float,
    clients: int,
    log_dir: Path,
    *,
    pubsub: emulators.Service | None = None,
    project: str = PROJECT,
) -> list[Step]:
    """Every rate against the ingress, then against the echo; ``pubsub``: reuse a running emulator."""
    mix = make_requests(fixture_mix())
    steps: list[Step] = []
    own = pubsub is None
    emulator = emulators.start_pubsub(log_dir) if pubsub is None else pubsub
    try:
        create_topic(emulator.host, project)
        env = {
            **emulator.env,
            "GOOGLE_CLOUD_PROJECT": project,
            "PUBSUB_TOPIC": TOPIC,
            "BUILDKITE_WEBHOOK_TOKEN": TOKEN,
            "LOG_LEVEL": "WARNING",  # one INFO line per request would measure the log pipe
        }
        with emulators.start_function(function_dir("ingress"), "receive_webhook", env=env, log_dir=log_dir) as fn:
            drive(fn.port, mix, 20, 0.5, clients)  # warm up: imports, connections
            count_published(emulator.host, 10**9, project, settle=0.5)
            for rate in rates:
                step = drive(fn.port, mix, rate, seconds, clients)
                step.target = "ingress"
                step.published = count_published(emulator.host, step.ok, project)
                steps.append(step)
                print(_row(step), flush=True)
        with emulators.start_function(BARE, "echo", log_dir=log_dir) as bare:
            drive(bare.port, mix, 20, 0.5, clients)
            for rate in rates:
                step = drive(bare.port, mix, rate, seconds, clients)
                step.target = "bare echo"
                steps.append(step)
                print(_row(step), flush=True)
    finally:
        if own:
            emulator.stop()
    return steps


HEADER = (
    f"{'target':<10} {'offered':>8} {'achieved':>9} {'p50 ms':>8} {'p99 ms':>8}"
    f" {'sent':>6} {'errors':>6} {'published':>9}"
)


def _row(step: Step) -> str:
    published = "-" if step.published is None else str(step.published)
    return (
        f"{step.target:<10} {step.rate:>8.0f} {step.throughput:>9.1f} {step.percentile(50) * 1000:>8.1f}"
        f" {step.percentile(99) * 1000:>8.1f} {step.sent:>6} {step.errors:>6} {published:>9}"
    )


def summary(steps: Sequence[Step]) -> tuple[str, bool]:
    """The comparison table and whether every accepted request reached the topic."""
    lines = ["", "offered req/s: ingress vs bare echo (achieved req/s, p50 / p99 ms)"]
    ingress = {s.rate: s for s in steps if s.target == "ingress"}
    echo = {s.rate: s for s in steps if s.target == "bare echo"}
    for rate in sorted(ingress):
        a, b = ingress[rate], echo.get(rate)
        line = f"  {rate:>6.0f}: {a.throughput:7.1f} ({a.percentile(50) * 1000:.0f} / {a.percentile(99) * 1000:.0f})"
        if b:
            line += f"  vs {b.throughput:7.1f} ({b.percentile(50) * 1000:.0f} / {b.percentile(99) * 1000:.0f})"
        lines.append(line)
    lost = [(s.rate, s.ok, s.published) for s in ingress.values() if s.published != s.ok]
    errors = sum(s.errors for s in ingress.values())
    lines.append(f"ingress errors: {errors}; accepted = published at every rate: {'yes' if not lost else 'NO'}")
    for rate, ok, published in lost:
        lines.append(f"  ! at {rate:.0f} req/s the ingress accepted {ok} but {published} reached the topic")
    return "\n".join(lines), not lost


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.perf.load", description=__doc__.split("\n\n")[0])
    parser.add_argument("--rates", default="25,50,100,200,400", help="offered requests/s, comma-separated")
    parser.add_argument("--seconds", type=float, default=5.0, help="duration of each step")
    parser.add_argument("--clients", type=int, default=32, help="concurrent keep-alive connections")
    args = parser.parse_args(argv)
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    if not rates or min(rates) <= 0 or args.seconds <= 0 or args.clients <= 0:
        parser.error("rates, seconds and clients must be positive")
    log_dir = ROOT / ".stack" / "load"
    print(f"{len(rates)} steps of {args.seconds:g} s, {args.clients} clients, on loopback; logs in {log_dir}")
    print(HEADER)
    steps = run(rates, args.seconds, args.clients, log_dir)
    text, complete = summary(steps)
    print(text)
    return 0 if complete else 1


if __name__ == "__main__":
    sys.exit(main())
