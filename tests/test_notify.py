"""buildkite_events.notify: what Slack and Teams decide alike."""

from __future__ import annotations

import pytest

from buildkite_events import BuildkiteEvent, InvalidEvent, Skip, parse_delivery
from buildkite_events.notify import FINISHED_STATES, BuildGlob, look, notified_build, notify_states, where
from buildkite_events.text import fit
from tests.support import envelope, payload


def event(name: str, **build: object) -> BuildkiteEvent:
    body = payload(name)
    body["build"].update(build)
    return parse_delivery(envelope(body))


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("deploy-*", BuildGlob("deploy-*")),
        (" deploy-* @ main ", BuildGlob("deploy-*", "main")),
        ("*@release/*", BuildGlob("*", "release/*")),
        ("@main", None),
        ("deploy@", None),
        ("", None),
    ],
)
def test_build_globs_parse(text: str, expected: BuildGlob | None) -> None:
    assert BuildGlob.parse(text) == expected


def test_build_globs_match_pipeline_and_branch_case_sensitively() -> None:
    glob = BuildGlob("deploy-*", "release/*")
    assert glob.matches("deploy-web", "release/2.4")
    assert not glob.matches("Deploy-web", "release/2.4")
    assert not glob.matches("deploy-web", None)  # a branch glob needs a branch
    assert BuildGlob("*").matches(None, None)


def test_notified_builds_and_why_others_are_skipped() -> None:
    failed = frozenset({"failed"})
    assert notified_build(event("build.finished.failed"), failed).number == 2042
    assert notified_build(event("build.finished.blocked.failed"), failed).number == 2047  # the verdict counts
    with pytest.raises(Skip, match="state blocked not notified"):
        notified_build(event("build.finished.blocked"), failed)
    with pytest.raises(Skip, match=r"build\.running is not build\.finished"):
        notified_build(event("build.running"), failed)
    with pytest.raises(InvalidEvent):
        notified_build(BuildkiteEvent(event_type="build.finished", data={}), failed)


def test_notify_states() -> None:
    assert notify_states(("all",), "X") == frozenset(FINISHED_STATES)
    assert notify_states((" Failed ", "blocked"), "X") == {"failed", "blocked"}
    with pytest.raises(ValueError, match="Buildkite spells it canceled"):
        notify_states(("cancelled",), "X_STATES")


def test_every_finished_state_has_a_look_and_others_show_as_themselves() -> None:
    assert {state for state in FINISHED_STATES if look(state).icon == "ℹ️"} == set()
    assert look("weird\u202estate").verb == "weirdstate"
    assert look("").verb == "finished"


def test_where_names_pipeline_and_branch_cleanly() -> None:
    assert where(event("build.finished.failed", branch="feat/\u202ex\ny")) == "my-pipeline@feat/x y"
    assert where(BuildkiteEvent(event_type="build.finished", data={})) == "?@?"


def test_fit_is_linear_enough_for_a_huge_line() -> None:
    """Bisection over the clusters: a megabyte commit title is cut without re-escaping every prefix."""
    text = "<&>" * 300_000
    out = fit(text, 3000, lambda t: t.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
    assert len(out) <= 3000 and out.endswith("…")
