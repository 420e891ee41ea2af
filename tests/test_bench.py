"""`make bench` on a tiny scale: what it times is what it says it times.

Times are measured, never asserted on: what is checked is that each timed event really
travelled its chain to the end (a Slack post per event at the stand-in, an arrival at the
bare recorder) and that the two chains took turns; that a cold start only counts when the
function made its side effect; that the bare baseline loads the client library it is given;
and that the state benchmark makes the same writes with our client and Google's.
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Any

import pytest

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


def test_a_cold_start_that_makes_no_side_effect_is_not_timed() -> None:
    from tools.manifests import manifest
    from tools.perf.bench import __main__ as bench

    request = bench._push_requests(manifest("slack-notify"))
    assert bench.cold_start(bench.BARE, "noop", {}, request) > 0  # the bare baseline only answers
    with pytest.raises(RuntimeError, match="without making its side effect"):
        bench.cold_start(bench.BARE, "noop", {}, request, acts=True)


def test_the_bare_baseline_imports_the_client_library_it_is_told_to(tmp_path: Path) -> None:
    from tools.manifests import manifest
    from tools.perf.bench import __main__ as bench

    request = bench._push_requests(manifest("slack-notify"))
    with pytest.raises(RuntimeError, match="exited"):
        bench.cold_start(bench.BARE, "noop", {"BARE_CLIENT_LIBRARY": "no_such_client_library"}, request)


def test_the_state_benchmark_makes_the_same_writes_both_ways(firestore: Any, gcp_project: str) -> None:
    from buildkite_events.state import DEFAULT_COLLECTION
    from tools.perf.bench import state

    env = {"FIRESTORE_EMULATOR_HOST": os.environ["FIRESTORE_EMULATOR_HOST"], "GOOGLE_CLOUD_PROJECT": gcp_project}
    ours, library = state.measure({**env, "STATE_COLLECTION": DEFAULT_COLLECTION}, runs=1)
    assert ours > 0 and library > 0
    documents = [doc.to_dict() for doc in firestore.collection(DEFAULT_COLLECTION).stream()]
    assert sorted(doc["state"] for doc in documents) == ["done"] * 4  # a claim and its completion, twice each way


@pytest.mark.parametrize("way", ["served", "in_process"])
def test_per_event_times_the_whole_path_and_refuses_a_short_cut(way: str) -> None:
    from tools.manifests import manifest
    from tools.perf.bench import __main__ as bench
    from tools.perf.bench import per_event

    m = manifest("slack-notify")
    data, attributes, _ = bench.sample_for(m)
    ours, bare = getattr(per_event, way)(m, data, attributes, number=2)
    assert ours > 0 and bare > 0
    # An event the function's filter turns away costs less: it must not be what is timed.
    with pytest.raises(RuntimeError, match="did not run to the end"):
        getattr(per_event, way)(m, data, {**attributes, "event_type": "agent.connected"}, number=2)
