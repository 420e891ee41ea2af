"""buildkite_events.notify: what Slack and Teams decide alike."""

from __future__ import annotations

import pytest

from buildkite_events import BuildkiteEvent, InvalidEvent, Skip, parse_delivery
from buildkite_events.builds import BranchStanding, FailedJob
from buildkite_events.notify import (
    FINISHED_STATES,
    NOTIFY_STATES,
    BuildGlob,
    headline,
    job_detail,
    look,
    notified,
    notified_build,
    notify_states,
    where,
)
from buildkite_events.text import fit, ordinal, plural
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
    assert notify_states(("all",), "X") == frozenset(NOTIFY_STATES) > frozenset(FINISHED_STATES)
    assert notify_states((" Failed ", "blocked", "FIXED"), "X") == {"failed", "blocked", "fixed"}
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


BROKE = BranchStanding("failed", previous="passed", previous_build=2249, streak=1)
SECOND = BranchStanding("failed", previous="failed", previous_build=2250, streak=2, previous_streak=1)
FIXED = BranchStanding("passed", previous="failed", previous_build=2251, previous_streak=2)
CALM = BranchStanding("passed", previous="passed", previous_build=2252)


def test_broken_and_fixed_add_builds_to_the_states_chosen() -> None:
    states = frozenset({"failed", "fixed"})
    assert notified("passed", FIXED, states) and not notified("passed", CALM, states)
    assert notified("failed", None, states) and not notified("passed", None, states)
    assert notified("failed", BROKE, frozenset({"broken"})) and not notified("failed", SECOND, frozenset({"broken"}))
    with pytest.raises(Skip, match="state passed not notified"):
        notified_build(event("build.finished.passed"), states, CALM)
    assert notified_build(event("build.finished.passed"), states, FIXED).number == 2041


@pytest.mark.parametrize(
    ("state", "standing", "expected"),
    [
        ("failed", SECOND, ("🔴", "#2042 failed (2nd failure in a row on main)")),
        ("failed", BranchStanding("failed", streak=12), ("🔴", "#2042 failed (12th failure in a row on main)")),
        ("failed", BROKE, ("🔴", "#2042 failed (broke main)")),
        ("failing", BROKE, ("🔴", "#2042 is failing (breaking main)")),
        ("failing", SECOND, ("🔴", "#2042 is failing (2nd failure in a row on main)")),
        ("passed", FIXED, ("✅", "#2042 fixed main (passed after 2 failures)")),
        (
            "passed",
            BranchStanding("passed", previous="failed", previous_streak=1),
            ("✅", "#2042 fixed main (passed after 1 failure)"),
        ),
        ("passed", CALM, ("✅", "#2042 passed")),
        ("failed", BranchStanding("failed", streak=1, newest=False), ("🔴", "#2042 failed")),
        ("canceled", SECOND, ("⛔", "#2042 was canceled")),
        ("failed", None, ("🔴", "#2042 failed")),
    ],
)
def test_headlines_say_where_the_build_stands(
    state: str, standing: BranchStanding | None, expected: tuple[str, str]
) -> None:
    build = event("build.finished.failed", state=state).build
    assert build is not None
    shown, text = headline(build, standing)
    assert (shown.icon, text) == expected


def test_a_hostile_branch_in_a_headline_is_cleaned_and_short() -> None:
    build = event("build.finished.failed", branch="x\u202e" + "b" * 200).build
    assert build is not None
    text = headline(build, SECOND)[1]
    assert "\u202e" not in text and text.endswith("on x" + "b" * 59 + ")")


def test_failed_job_details_and_ordinals() -> None:
    job = FailedJob("j", "RSpec", None, 1, "failed", None)
    assert job_detail(job) == "exit 1"
    assert job_detail(FailedJob("j", "RSpec", None, None, "timed_out", None, retries=2)) == "timed out after 2 retries"
    assert job_detail(FailedJob("j", "RSpec", None, 3, "failed", None, retries=1)) == "exit 3 after 1 retry"
    assert [ordinal(n) for n in (1, 2, 3, 4, 11, 12, 13, 21, 22, 101, 111)] == [
        "1st",
        "2nd",
        "3rd",
        "4th",
        "11th",
        "12th",
        "13th",
        "21st",
        "22nd",
        "101st",
        "111th",
    ]
    assert (plural(1, "failure"), plural(2, "failure"), plural(3, "retry", "retries")) == (
        "1 failure",
        "2 failures",
        "3 retries",
    )
