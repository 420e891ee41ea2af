"""Fault injection on the emulators: under failures, redelivery and reordering, nothing is lost or done twice.

Every Pub/Sub function runs in its own lane (tests/lanes.py: its manifest's subscription,
retry and dead-letter policy on the Pub/Sub emulator, the function under functions-framework,
and a fault-injecting proxy in front of what it calls). The lanes run side by side; in each,
one fresh event at a time goes through these scenarios:

- clean: no fault; its side effects are the baseline every other scenario must match;
- the call that makes the side effect answers 500, 429 + Retry-After, times out (the proxy
  holds the request past the client's timeout) or drops the connection, for its first N
  attempts (N large enough to need a Pub/Sub redelivery, not only in-process retries) →
  the side effect happens exactly once after recovery;
- the message is published twice, and the same push is POSTed twice at once (a redelivery
  racing the first delivery) → exactly once;
- the dependency never recovers → the message is in the dead-letter queue after the
  manifest's max_delivery_attempts with no side effect; once the dependency is back,
  ``tools.ops.dlq.replay`` makes the side effect happen exactly once;
- a build's events in reverse order (finished, running, scheduled) → GitHub keeps the
  finished state (no regression), and every other function does what the natural order does.

A summary table is printed (``pytest -s`` or the captured output of a failure shows it).
A function's probe (the one thing a lane cannot read from the manifest: how to observe its
side effect) is in its ``local_support.py``; ``test_every_pubsub_function_has_a_probe`` says so.

The Pub/Sub emulator loses messages when two or more fail on one push subscription at once
with a retry policy's minimum backoff over 0; lanes set it to 0, and the dead-letter
scenario still sends one message at a time.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import threading
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from buildkite_events.message import to_message
from tests.lanes import (
    CLIENT_TIMEOUT_SECONDS,
    Lane,
    Lanes,
    accepted_fixtures,
    open_lanes,
    pubsub_manifests,
    set_ack_deadline,
)
from tests.support import payload
from tools.local.emulators import Service
from tools.manifests import local_support
from tools.ops import dlq

Count = Callable[[Lanes, Lane], int]


@dataclass(frozen=True)
class Probe:
    """How to see one function's side effect, and which upstream call makes it: what the
    function's ``local_support.py`` says (tools/manifests.py lists the names)."""

    fixture: str  # a fixture event this function acts on
    path: str  # regex: the upstream request that makes the side effect (faults are injected there)
    count: Count  # side effects observed so far
    method: str = "POST"
    timeout_hold: float = CLIENT_TIMEOUT_SECONDS + 1  # past the function's client timeout
    # Checks a build's events in reverse order, when doing what the natural order does is not the rule:
    # (side effects, what is wrong or None) from (lanes, the build, its final state).
    reverse_order: Callable[[Lanes, dict[str, Any], str], tuple[int, str | None]] | None = None


def probe(name: str) -> Probe | None:
    support = local_support(name)
    if support is None or not hasattr(support, "side_effects"):
        return None
    return Probe(
        support.FIXTURE,
        support.SIDE_EFFECT,
        support.side_effects,
        getattr(support, "METHOD", "POST"),
        getattr(support, "TIMEOUT_HOLD", CLIENT_TIMEOUT_SECONDS + 1),
        getattr(support, "check_reverse_order", None),
    )


@dataclass
class Row:
    function: str
    scenario: str
    published: int
    expected: int
    observed: int
    unsettled: int = 0  # messages neither acked nor dead-lettered in time: lost
    faults_left: int = 0  # injected faults never reached: the scenario did not test what it says
    note: str = ""

    @property
    def duplicates(self) -> int:
        return max(0, self.observed - self.expected)

    @property
    def lost(self) -> int:
        return max(0, self.expected - self.observed) + self.unsettled

    @property
    def ok(self) -> bool:
        return self.duplicates == 0 and self.lost == 0 and self.faults_left == 0


_numbers = itertools.count(70_000)


def fresh(fixture: str, build: dict[str, Any] | None = None) -> tuple[bytes, dict[str, str], dict[str, Any]]:
    """The fixture as a new build (id, number, commit): a new event to every function's idempotency."""
    body = payload(fixture)
    if build is None:
        number = next(_numbers)
        build = {
            "id": str(uuid.uuid4()),
            "number": number,
            "commit": hashlib.sha256(f"commit-{number}-{uuid.uuid4()}".encode()).hexdigest()[:40],
        }
    if isinstance(body.get("build"), dict):
        body["build"].update(build)
    data, attributes = to_message(body, body["event"])
    return data, attributes, build


@dataclass
class Runner:
    """One lane's scenarios, one fresh event at a time."""

    lanes: Lanes
    lane: Lane
    probe: Probe
    rows: list[Row] = field(default_factory=list)
    baseline: int = 0
    last_ids: list[str] = field(default_factory=list)

    def effects(self) -> int:
        return self.probe.count(self.lanes, self.lane)

    def settle(self) -> None:
        """Side effects are made before the ack; give a stand-in's bookkeeping a moment all the same."""
        time.sleep(0.2)

    def scenario(self, name: str, faults: list[dict[str, Any]] | None = None, copies: int = 1) -> Row:
        before = self.effects()
        for fault in faults or []:
            self.lane.proxy.fail(self.probe.path, method=self.probe.method, **fault)
        data, attributes, _ = fresh(self.probe.fixture)
        ids = self.last_ids = [self.lane.publish(data, attributes) for _ in range(copies)]
        acked = self.lane.wait_acked(ids, timeout=120)
        self.settle()
        row = Row(self.lane.name, name, len(ids), self.baseline, self.effects() - before)
        row.unsettled = 0 if acked else len(ids)
        row.faults_left = self.lane.proxy.pending()
        self.lane.proxy.clear()
        self.rows.append(row)
        return row

    def racing_pushes(self) -> Row:
        """The same push body POSTed twice at once; a non-2xx answer is re-sent, as Pub/Sub would."""
        before = self.effects()
        data, attributes, _ = fresh(self.probe.fixture)
        body = {
            "message": {
                "data": base64.b64encode(data).decode(),
                "attributes": attributes,
                "messageId": f"race-{uuid.uuid4().hex[:8]}",
                "publishTime": "2025-06-12T03:40:00.000Z",
            },
            "subscription": self.lane.wiring.subscription,
        }
        answers: list[int] = []

        def push() -> None:
            for _ in range(20):
                status = _post(self.lane.endpoint, body)
                answers.append(status)
                if 200 <= status < 300:
                    return
                time.sleep(0.5)

        threads = [threading.Thread(target=push) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        self.settle()
        row = Row(self.lane.name, "same push twice at once", 2, self.baseline, self.effects() - before)
        row.unsettled = 2 - sum(200 <= s < 300 for s in answers)
        self.rows.append(row)
        return row

    def slow_call(self, ack_deadline: int = 10, delay: float = 12.0) -> Row:
        """The side-effect call takes longer than the ack deadline: the emulator redelivers meanwhile."""
        set_ack_deadline(self.lane.wiring.subscription, ack_deadline)
        try:
            row = self.scenario(
                f"call outlives the {ack_deadline} s ack deadline", [{"kind": "slow", "delay": delay, "times": 1}]
            )
            message_id = self.last_ids[0]
            deadline = time.monotonic() + delay + 10
            while len(self.lane.outcomes(message_id)) < 2 and time.monotonic() < deadline:
                time.sleep(0.3)  # the first, slow delivery logs last
            deliveries = len(self.lane.outcomes(message_id))
            row.note = f"{deliveries} deliveries: {', '.join(self.lane.outcomes(message_id))}"
            if deliveries < 2:
                row.faults_left += 1  # no redelivery while it ran: the race was not exercised
        finally:
            set_ack_deadline(self.lane.wiring.subscription, self.lane.manifest.delivery.ack_deadline_seconds)
        return row

    def never_recovers(self) -> Row:
        """Dead-lettered after max_delivery_attempts with no side effect; replayed once fixed."""
        attempts = self.lane.manifest.delivery.max_delivery_attempts
        before = self.effects()
        self.lane.proxy.fail(self.probe.path, "status", times=10**6, status=503, method=self.probe.method)
        data, attributes, _ = fresh(self.probe.fixture)
        self.lane.publish(data, attributes)
        listing = _wait_listed(self.lane, timeout=180)
        dead = len(listing.messages)
        during = self.effects() - before
        self.lane.proxy.clear()
        counts = [m.delivery_count for m in listing.messages]
        report = dlq.replay(self.lane.project, self.lane.name) if dead else None
        self.settle()
        after = self.effects() - before
        row = Row(self.lane.name, "never recovers → dead-letter → replay", 1, self.baseline, after)
        row.unsettled = 0 if dead == 1 and report and report.replayed == 1 else 1
        row.note = f"dead-lettered after {counts} of {attempts} attempts, {during} side effects before the replay"
        if during or counts != [attempts]:
            row.unsettled = 1
        self.rows.append(row)
        return row

    def build_in_order(self, order: list[str], label: str) -> tuple[int, dict[str, Any]]:
        """Publish a build's events one after another (each acked first); (side effects, build)."""
        before, build = self.effects(), None
        for fixture in order:
            data, attributes, build = fresh(fixture, build)
            message_id = self.lane.publish(data, attributes)
            if not self.lane.wait_acked([message_id], timeout=90):
                self.rows.append(Row(self.lane.name, label, len(order), 0, 0, unsettled=1))
        self.settle()
        assert build is not None
        return self.effects() - before, build


def _post(url: str, body: dict[str, Any]) -> int:
    request = urllib.request.Request(
        url, data=json.dumps(body).encode(), headers={"Content-Type": "application/json"}, method="POST"
    )
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(request, timeout=120) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except OSError:
        return 0


def _wait_listed(lane: Lane, timeout: float) -> dlq.Listing:
    deadline = time.monotonic() + timeout
    while True:
        (listing,) = dlq.list_queues(lane.project, [lane.name])
        if listing.messages or time.monotonic() > deadline:
            return listing
        time.sleep(1.0)


def natural_order(probe: Probe) -> list[str]:
    """A build's events as Buildkite sends them, finishing as the probe's own fixture when it is one."""
    last = probe.fixture if probe.fixture.startswith("build.finished.") else "build.finished.failed"
    return ["build.scheduled", "build.running", last]


def run_lane(lanes: Lanes, name: str) -> list[Row]:
    found = probe(name)
    assert found is not None, name
    runner = Runner(lanes, lanes[name], found)
    runner.baseline = 1  # expected of the clean run itself: at least one side effect
    clean = runner.scenario("clean")
    runner.baseline = clean.expected = max(clean.observed, 1)
    hold = runner.probe.timeout_hold
    runner.scenario("500 for the first 3 attempts", [{"kind": "status", "status": 500, "times": 3}])
    runner.scenario("429 + Retry-After: 1 s, twice", [{"kind": "status", "status": 429, "retry_after": 1, "times": 2}])
    runner.scenario(f"times out ({hold:g} s) once", [{"kind": "timeout", "delay": hold, "times": 1}])
    runner.scenario("connection dropped 3 times", [{"kind": "drop", "times": 3}])
    runner.scenario("published twice", copies=2)
    runner.racing_pushes()
    runner.slow_call()
    runner.never_recovers()

    order = natural_order(runner.probe)
    natural, _ = runner.build_in_order(order, "natural order")
    reverse, build = runner.build_in_order(list(reversed(order)), "reverse order")
    row = Row(name, "build events in reverse order", 3, natural, reverse)
    if runner.probe.reverse_order is not None:
        final = payload(order[-1])["build"]["state"]
        row.expected, wrong = runner.probe.reverse_order(lanes, build, final)
        row.observed = row.expected
        row.unsettled, row.note = (1, wrong) if wrong else (0, f"{natural} in order, {reverse} in reverse; {final}")
    elif natural == 0:
        row.unsettled, row.note = 1, "no side effect in either order: the scenario proves nothing"
    runner.rows.append(row)
    return runner.rows


def render(rows: list[Row]) -> str:
    out = [
        "",
        "Fault injection on the emulators",
        f"{'function':<17} {'scenario':<40} {'msgs':>4} {'effects':>7} {'expect':>6} {'dup':>3} {'lost':>4}  ok",
    ]
    for r in rows:
        out.append(
            f"{r.function:<17} {r.scenario:<40} {r.published:>4} {r.observed:>7} {r.expected:>6}"
            f" {r.duplicates:>3} {r.lost:>4}  {'✓' if r.ok else '✗'}{'  ' + r.note if r.note else ''}"
            f"{f'  ({r.faults_left} injected faults never reached)' if r.faults_left else ''}"
        )
    published = sum(r.published for r in rows)
    out.append(
        f"{len(rows)} scenarios, {published} messages published, {sum(r.observed for r in rows)} side effects"
        f" observed, duplicates {sum(r.duplicates for r in rows)}, lost {sum(r.lost for r in rows)}"
    )
    return "\n".join(out)


@pytest.fixture
def every_lane(
    tmp_path: Path,
    pubsub_emulator: Service,
    firestore_emulator: Service,
    gcs_server: Service,
    bigquery_emulator: Service,
    bigquery_dataset: str,
) -> Iterator[Lanes]:
    services = {"pubsub": pubsub_emulator, "firestore": firestore_emulator, "gcs": gcs_server}
    services["bigquery"] = bigquery_emulator
    env = {"RETRY_MAX_ATTEMPTS": "2", "RETRY_BUDGET_SECONDS": "5", "JIRA_MAX_RETRIES": "0"}
    with open_lanes(
        sorted(pubsub_manifests()), log_dir=tmp_path, services=services, env=env, bigquery_dataset=bigquery_dataset
    ) as lanes:
        yield lanes


def test_every_pubsub_function_has_a_probe() -> None:
    for name, manifest in pubsub_manifests().items():
        found = probe(name)
        assert found is not None, (
            f"functions/{name}/local_support.py must say how to see its side effect (FIXTURE, SIDE_EFFECT,"
            " side_effects(lanes, lane)): tools/manifests.py describes it"
        )
        assert found.fixture in accepted_fixtures(manifest), (name, found.fixture)


def test_faults_redelivery_and_reordering_lose_nothing_and_do_nothing_twice(
    every_lane: Lanes, capsys: pytest.CaptureFixture[str]
) -> None:
    names = sorted(every_lane.lanes)
    with ThreadPoolExecutor(max_workers=len(names)) as pool:
        results = list(pool.map(lambda name: run_lane(every_lane, name), names))
    rows = [row for rows in results for row in rows]
    table = render(rows)
    with capsys.disabled():
        print(table)
    assert all(row.ok for row in rows), table
    assert {row.function for row in rows} == set(pubsub_manifests())
