"""github-status on the local stand-ins (not shipped; see tools/manifests.py): how the fault lanes
see its side effect, and what a build's events in reverse order must leave on GitHub."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from tools.local.standins import github

if TYPE_CHECKING:
    from tests.lanes import Lane, Lanes

FIXTURE = "build.finished.failed"
SIDE_EFFECT = r"/statuses/"
TIMEOUT_VARIABLE = "GITHUB_TIMEOUT_SECONDS"
REPOSITORY = "my-great-org/my-pipeline"  # the fixtures' repository
STATES = {"failed": "failure", "passed": "success"}  # GitHub's state for a finished build


def side_effects(lanes: Lanes, lane: Lane) -> int:
    return len(github.state(lanes.standin).created)


def check_reverse_order(lanes: Lanes, build: dict[str, Any], final_state: str) -> tuple[int, str | None]:
    """Fewer statuses than in the natural order (the older states are skipped), and never a step
    back: (statuses on the commit, what is wrong or None)."""
    on_commit = github.statuses(lanes.standin, REPOSITORY, build["commit"])
    states = [status["state"] for status in on_commit]  # newest first
    if not states or states[0] != STATES[final_state]:
        return len(on_commit), f"statuses on the commit, newest first: {states}"
    return len(on_commit), None
