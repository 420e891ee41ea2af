"""teams-notify on the local stand-ins (not shipped; see tools/manifests.py): how the fault lanes see
its side effect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.local.standins import teams

if TYPE_CHECKING:
    from tests.lanes import Lane, Lanes

FIXTURE = "build.finished.failed"
SIDE_EFFECT = r"^/teams/"
TIMEOUT_VARIABLE = "TEAMS_TIMEOUT_SECONDS"


def side_effects(lanes: Lanes, lane: Lane) -> int:
    """Workflow runs that succeeded: the webhook answers 202 before its run posts the card."""
    return sum(run["status"] == "Succeeded" for run in teams.runs(lanes.standin))
