"""slack-notify on the local stand-ins (not shipped; see tools/manifests.py): how the fault lanes see
its side effect."""

from __future__ import annotations

from typing import TYPE_CHECKING

from tools.local.standins import slack

if TYPE_CHECKING:
    from tests.lanes import Lane, Lanes

FIXTURE = "build.finished.failed"
SIDE_EFFECT = r"/chat\.postMessage"
TIMEOUT_VARIABLE = "SLACK_TIMEOUT_SECONDS"


def side_effects(lanes: Lanes, lane: Lane) -> int:
    return len(slack.posted(lanes.standin))
