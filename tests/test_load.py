"""`make load` on a small scale: the ingress publishes every request it accepts, the echo answers all."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

from tools.local.emulators import Service
from tools.perf import load


def test_a_short_load_run_publishes_exactly_what_the_ingress_accepted(tmp_path: Path, pubsub_emulator: Service) -> None:
    project = f"load-{uuid.uuid4().hex[:10]}"
    steps = load.run([30], 1.0, 4, tmp_path, pubsub=pubsub_emulator, project=project)
    ingress, echo = steps
    assert (ingress.target, echo.target) == ("ingress", "bare echo")
    assert ingress.sent == echo.sent == 30
    assert ingress.errors == echo.errors == 0, (ingress.statuses, echo.statuses)
    assert ingress.published == ingress.ok == 30
    assert len(ingress.latencies) == 30 and ingress.percentile(99) >= ingress.percentile(50) > 0
    text, complete = load.summary(steps)
    assert complete and "accepted = published at every rate: yes" in text


def test_the_summary_flags_accepted_requests_that_never_reached_the_topic() -> None:
    step = load.Step("ingress", 100, 1, sent=100, ok=100, elapsed=1.0, latencies=[0.01] * 100, published=99)
    text, complete = load.summary([step])
    assert not complete
    assert "accepted 100 but 99 reached the topic" in text


def test_the_mix_is_mostly_job_events_and_every_request_authenticates() -> None:
    mix = load.fixture_mix()
    kinds = Counter(next(k for k in load.MIX if event.startswith(k)) for event, _ in mix)
    assert kinds["job."] > kinds["build."] > kinds["agent."] > kinds["ping"] > 0
    make = load.make_requests(mix)
    assert "X-Buildkite-Token" in make(0)[1] and "X-Buildkite-Signature" in make(1)[1]
