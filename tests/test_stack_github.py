"""End to end on the local stack: every sample webhook through the ingress and Pub/Sub to
github-status, reporting check runs (``GITHUB_REPORT=checks``) as a GitHub App made for the stand-in."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tools.local import stack as local
from tools.local.standins import github as gh_standin

REPO = "my-great-org/my-pipeline"


def _builds(webhooks: list[tuple[str, bytes]]) -> dict[int, dict[str, Any]]:
    """The last build object of each build number the sample webhooks carry."""
    builds: dict[int, dict[str, Any]] = {}
    for _, body in webhooks:
        build = json.loads(body).get("build") or {}
        if build.get("number"):
            builds[build["number"]] = build
    return builds


def test_check_runs_on_the_local_stack(tmp_path: Path) -> None:
    with local.local_stack(tmp_path, extra_env={"GITHUB_REPORT": "checks"}) as stack:
        assert stack.standin is not None
        webhooks = local.sample_webhooks()
        assert [stack.post_webhook(body, event)[0] for event, body in webhooks] == [200] * len(webhooks)
        assert local.wait_settled(stack, len(webhooks))
        assert {line["outcome"] for line in stack.outcomes("github-status")} <= {"done", "skipped", "filtered"}

        runs = gh_standin.check_runs(stack.standin, REPO)
        by_build = {run["external_id"]: run for run in runs}
        builds = _builds(webhooks)
        on_github = [b for b in builds.values() if len(b.get("commit") or "") == 40]  # not the UI build on HEAD
        assert len(runs) == len(by_build) == len(on_github)  # one run per build
        shown = {b["number"]: (by_build[b["id"]]["status"], by_build[b["id"]]["conclusion"]) for b in on_github}
        assert shown == {
            2041: ("completed", "success"),
            2042: ("completed", "failure"),
            2043: ("in_progress", None),  # blocked, waiting to be unblocked
            2045: ("completed", "skipped"),
            2047: ("completed", "failure"),  # stopped on a failed block step
            2048: ("completed", "success"),
            2049: ("in_progress", None),
            2050: ("completed", "success"),  # fixed main after #2047
        }
        failed = by_build[builds[2042]["id"]]
        assert "RSpec" in failed["output"]["summary"] and failed["output"]["title"].endswith("· 1 failed job")
        assert stack.standin.recorded(r"/statuses/") == []  # checks only
        creates = len(stack.standin.recorded(r"/check-runs$", "POST"))
        assert creates == len(runs)

        # Every webhook again: each event is the same event, so nothing new reaches GitHub.
        log = list(gh_standin.state(stack.standin).check_run_log)
        for event, body in webhooks:
            stack.post_webhook(body, event)
        assert local.wait_settled(stack, 2 * len(webhooks))
        assert gh_standin.state(stack.standin).check_run_log == log
        assert len(stack.standin.recorded(r"/check-runs$", "POST")) == creates
        assert stack.dead_lettered["github-status"] == 0
