"""jira-update on the local stand-ins (not shipped; see tools/manifests.py): how the fault lanes see
its side effect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.local.standins import jira

if TYPE_CHECKING:
    from tests.lanes import Lane, Lanes

FIXTURE = "build.finished.passed.jira-key"  # a build whose message names a Jira issue
SIDE_EFFECT = r"/comment$"
TIMEOUT_VARIABLE = "JIRA_TIMEOUT_SECONDS"


def side_effects(lanes: Lanes, lane: Lane) -> int:
    return sum(len(jira.new_comments(lanes.standin, key)) for key in list(jira.state(lanes.standin).issues))
