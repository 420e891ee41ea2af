"""`make bench`'s end-to-end latency on a tiny scale: every event goes through both chains, interleaved.

Times are measured, never asserted on: what is checked is that each timed event really
travelled its chain to the end (a Slack post per event at the stand-in, an arrival at the
bare recorder) and that the two chains took turns.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from tools.local import stack as local
from tools.local.standins import slack
from tools.perf.bench import e2e


def test_the_end_to_end_measurement_runs_both_chains_in_turn(tmp_path: Path) -> None:
    with local.local_stack(tmp_path) as stack:
        assert stack.standin is not None
        routes = list(stack.standin.routes)
        latencies = e2e.measure(stack, tmp_path, events=2, warmup=1)
        posted = slack.posted(stack.standin)
        assert stack.standin.routes == routes  # the stand-in answers as before once measured

    assert len(latencies.ours) == len(latencies.bare) == 2
    assert latencies.order == ["bare", "ours", "ours", "bare"]  # the round after the warm-up starts with bare
    assert all(seconds > 0 for seconds in latencies.ours + latencies.bare)
    # One Slack post per webhook of ours (warm-up included), each for its own build: no event
    # was timed by another's post.
    builds = [set(re.findall(r"/builds/(7\d{5})\b", json.dumps(message))) for message in posted]
    assert [len(found) for found in builds] == [1, 1, 1], posted
    assert len(set.union(*builds)) == 3


def test_percentiles_are_nearest_rank() -> None:
    latencies = e2e.Latencies(ours=[0.5, 0.1, 0.4, 0.2, 0.3], bare=[0.1] * 19 + [2.0])
    assert latencies.percentile("ours", 50) == 0.3
    assert latencies.percentile("ours", 95) == 0.5
    assert latencies.percentile("bare", 95) == 0.1  # the 19th of 20
    assert latencies.percentile("bare", 100) == 2.0


def test_each_event_is_its_own_build_and_carries_its_marker() -> None:
    first, second = e2e.failed_build(3), e2e.failed_build(4)
    for body, marker in (first, second):
        build = json.loads(body)["build"]
        assert marker in build["web_url"] and build["number"] == int(marker.rsplit("/", 1)[1])
    assert json.loads(first[0])["build"]["id"] != json.loads(second[0])["build"]["id"]
