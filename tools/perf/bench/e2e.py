"""End-to-end latency through the local stack, beside a bare chain on the same emulator.

- ours: a signed ``build.finished`` webhook for a failed build → the ingress (verify,
  publish) → the Pub/Sub emulator → every function's push subscription → slack-notify
  (filter, config, Firestore claim, Block Kit, slack-sdk) → ``chat.postMessage`` arrives at
  the Slack stand-in;
- bare: a functions-framework function that publishes the body as it came → the same
  emulator → one push subscription → a functions-framework function that POSTs the data
  to a recorder (``bare/main.py``: ``publish`` and ``arrive``).

Each event is timed from just before the webhook POST to the moment the stand-in (or the
recorder: the same server class) has read the request, on one clock in this process.
Events go one at a time; ours and bare alternate, and which goes first swaps every round,
so drift and background load hit both. Ours settles before the next event (every
function has logged its outcome for the message: the other five work on it too), and
each chain then pauses briefly, so that every event starts on an idle emulator.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import re
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

from tools import LOCAL_PROJECT, ROOT
from tools.local import emulators
from tools.local.stack import LocalStack
from tools.local.standin import Recorded, Reply, StandIn
from tools.local.standins import slack

BARE = Path(__file__).resolve().parent / "bare"
FAILED_BUILD = ROOT / "tests" / "fixtures" / "buildkite" / "payloads" / "build.finished.failed.json"
EVENTS = int(os.environ.get("BENCH_E2E_EVENTS", "30"))
WARMUP = 2  # per chain, not counted: first calls open channels and fill caches
TIMEOUT = 60.0
QUIET = 0.2  # seconds after each event, so that the next starts on an idle emulator (acks sent)
Send = Callable[[bytes, str], float]


@dataclass
class Arrivals:
    """Requests a server has read: when (``time.perf_counter``) and with what body."""

    seen: list[tuple[float, bytes]] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    def record(self, request: Recorded) -> None:
        with self.changed:
            self.seen.append((time.perf_counter(), request.body))
            self.changed.notify_all()

    def wait(self, marker: str, timeout: float = TIMEOUT) -> float:
        """When the first request whose body holds ``marker`` arrived."""
        needle = marker.encode()
        with self.changed:
            if not self.changed.wait_for(lambda: any(needle in body for _, body in self.seen), timeout):
                raise TimeoutError(f"nothing with {marker!r} arrived within {timeout:.0f}s")
            return next(at for at, body in self.seen if needle in body)


@contextlib.contextmanager
def observing(server: StandIn, method: str, pattern: str) -> Iterator[Arrivals]:
    """Record each request a stand-in route answers, then answer it as before."""
    arrivals = Arrivals()
    index = next(i for i, (m, regex, _) in enumerate(server.routes) if m == method and regex.pattern == pattern)
    original = server.routes[index]
    responder = original[2]

    def observed(request: Recorded) -> Reply:
        arrivals.record(request)
        return responder(request)

    server.routes[index] = (original[0], original[1], observed)
    try:
        yield arrivals
    finally:
        server.routes[index] = original


def failed_build(n: int) -> tuple[bytes, str]:
    """The failed-build fixture as build ``n`` (its own id: idempotency lets it act), and a
    marker that the Slack message and the bare data both carry."""
    body = json.loads(FAILED_BUILD.read_bytes())
    build = body["build"]
    build["id"] = f"e2e-{n}-{build['id']}"
    build["number"] = 700000 + n
    build["web_url"] = re.sub(r"/builds/\d+", f"/builds/{700000 + n}", build["web_url"])
    return json.dumps(body).encode(), f"/builds/{700000 + n}"


def _post(url: str, body: bytes, headers: dict[str, str]) -> dict[str, str]:
    request = urllib.request.Request(url, data=body, headers=headers, method="POST")
    with urllib.request.urlopen(request, timeout=30) as response:
        return dict(json.loads(response.read() or b"{}"))


@contextlib.contextmanager
def ours(stack: LocalStack) -> Iterator[Send]:
    """Send one webhook to the stack; seconds until its Slack post arrived at the stand-in."""
    assert stack.standin is not None
    with observing(stack.standin, "POST", slack.PREFIX + r"/chat\.postMessage") as arrivals:

        def send(body: bytes, marker: str) -> float:
            started = time.perf_counter()
            status, answer = stack.post_webhook(body, "build.finished")
            if status != 200:
                raise RuntimeError(f"the ingress answered {status}: {answer}")
            seconds = arrivals.wait(marker) - started
            _settle(stack, str(answer["message_id"]))
            return seconds

        yield send


def _settle(stack: LocalStack, message_id: str, timeout: float = TIMEOUT) -> None:
    """Wait until every Pub/Sub function has logged its outcome for the message."""
    deadline = time.monotonic() + timeout
    waiting = set(stack.wiring)
    while waiting:
        waiting = {n for n in waiting if all(line.get("message_id") != message_id for line in stack.outcomes(n))}
        if waiting and time.monotonic() > deadline:
            raise TimeoutError(f"{', '.join(sorted(waiting))} never handled message {message_id}")
        time.sleep(0.02)


@contextlib.contextmanager
def bare(pubsub: emulators.Service, log_dir: Path) -> Iterator[Send]:
    """The bare chain on the stack's emulator; seconds from POST until the recorder has it."""
    from google.cloud import pubsub_v1

    topic = f"projects/{LOCAL_PROJECT}/topics/bench-bare"
    with contextlib.ExitStack() as exits:
        recorder = exits.enter_context(StandIn())
        arrivals = Arrivals()

        def arrived(request: Recorded) -> Reply:
            arrivals.record(request)
            return Reply(200, {})

        recorder.route("POST", "/arrived", arrived)
        env = {**pubsub.env, "BARE_TOPIC": topic, "RECORD_URL": recorder.url + "/arrived"}
        ingress = exits.enter_context(emulators.start_function(BARE, "publish", env=env, log_dir=log_dir))
        target = exits.enter_context(emulators.start_function(BARE, "arrive", env=env, log_dir=log_dir))
        publisher, subscriber = pubsub_v1.PublisherClient(), pubsub_v1.SubscriberClient()
        publisher.create_topic(name=topic)
        subscription = f"projects/{LOCAL_PROJECT}/subscriptions/bench-bare-arrive"
        subscriber.create_subscription(
            request={"name": subscription, "topic": topic, "push_config": {"push_endpoint": target.url + "/"}}
        )
        exits.callback(subscriber.close)

        def send(body: bytes, marker: str) -> float:
            started = time.perf_counter()
            _post(ingress.url + "/", body, {"Content-Type": "application/json"})
            return arrivals.wait(marker) - started

        yield send


@dataclass
class Latencies:
    """Seconds per event for each chain, and the order the events went in."""

    ours: list[float] = field(default_factory=list)
    bare: list[float] = field(default_factory=list)
    order: list[str] = field(default_factory=list)

    def percentile(self, chain: str, q: float) -> float:
        values: list[float] = sorted(getattr(self, chain))
        return values[max(0, math.ceil(q / 100 * len(values)) - 1)]


def measure(stack: LocalStack, log_dir: Path, events: int = EVENTS, warmup: int = WARMUP) -> Latencies:
    """``events`` timed rounds (after ``warmup``), each one event through each chain."""
    result = Latencies()
    with ours(stack) as send_ours, bare(stack.services["pubsub"], log_dir) as send_bare:
        chains = [("ours", send_ours), ("bare", send_bare)]
        for round_ in range(warmup + events):
            for offset, (name, send) in enumerate(chains if round_ % 2 == 0 else chains[::-1]):
                body, marker = failed_build(2 * round_ + offset)
                seconds = send(body, marker)
                time.sleep(QUIET)
                if round_ >= warmup:
                    getattr(result, name).append(seconds)
                    result.order.append(name)
    return result
