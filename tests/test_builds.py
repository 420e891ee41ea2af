"""buildkite_events.builds: what a build and its branch remember, on the Firestore emulator."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

from buildkite_events import BuildkiteEvent, InvalidEvent, TransientError, parse_delivery
from buildkite_events.builds import (
    BRANCH_KIND,
    BUILD_KIND,
    BranchStanding,
    FailedJob,
    branch_history,
    failed_jobs,
    mark_shown,
    note_build,
    recall,
    record_post,
    release_post,
    remember_job,
)
from buildkite_events.state import document
from tests.support import envelope, payload

BUILD = "01976230-e966-4d3e-a32e-520a9c211ecd"  # #2042 in the fixtures
RSPEC = "01976231-09c2-4011-85cf-f156cf57f41d"  # its failed RSpec job
FIRST_CAPYBARA = "01976231-09c5-4d7c-9dc1-aeba69afb3be"  # retried automatically...
RETRIED_CAPYBARA = "01976232-baa4-4faa-848c-1903dfab37b2"  # ...and passed


def job_event(fixture: str = "job.finished.failed", **job: Any) -> BuildkiteEvent:
    body = payload(fixture)
    body["job"].update(job)
    return parse_delivery(envelope(body))


def first_capybara(**job: Any) -> BuildkiteEvent:
    """The attempt job.finished.passed.auto-retry.json retried: it failed with exit 1."""
    fields = {
        "id": FIRST_CAPYBARA,
        "name": ":capybara: Feature specs",
        "step_key": "features",
        "web_url": f"https://buildkite.com/my-great-org/my-pipeline/builds/2042#{FIRST_CAPYBARA}",
        "finished_at": "2025-06-12T03:33:02.331Z",
        "retries_count": None,
        "retry_type": None,
        "retry_source": None,
    }
    return job_event(**(fields | job))


def build_event(name: str, **build: Any) -> BuildkiteEvent:
    body = payload(name)
    body["build"].update(build)
    return parse_delivery(envelope(body))


def finished(number: int, state: str, minute: int, branch: str = "main") -> BuildkiteEvent:
    at = f"2025-06-12T04:{minute:02d}:00.000Z"
    return build_event(
        "build.finished.failed",
        id=f"build-{number}-{minute}",
        number=number,
        state=state,
        branch=branch,
        finished_at=at,
    )


def test_a_failed_job_is_recorded_once(firestore: Any) -> None:
    assert "recorded (exit 1)" in remember_job(job_event())
    first = recall(BUILD)
    assert first is not None and first.revision == 1
    assert "already recorded" in remember_job(job_event())  # a redelivery
    again = recall(BUILD)
    assert again is not None and again.revision == 1  # nothing written
    assert failed_jobs(BUILD) == [
        FailedJob(
            id=RSPEC,
            name=":rspec: RSpec",
            web_url=f"https://buildkite.com/my-great-org/my-pipeline/builds/2042#{RSPEC}",
            exit_status=1,
            state="failed",
            finished_at="2025-06-12T03:35:40.902000+00:00",
            retries=0,
            step_key="rspec",
        )
    ]
    doc = document(BUILD_KIND, BUILD, firestore).get().to_dict()
    assert doc["expire_at"] > dt.datetime.now(dt.UTC) + dt.timedelta(days=29)  # the collection's TTL policy


def test_jobs_that_passed_or_failed_softly_cost_nothing(firestore: Any) -> None:
    assert "nothing to remember" in remember_job(job_event(state="passed", exit_status=0))
    assert "soft failure, not counted" in remember_job(job_event(soft_failed=True))
    assert "nothing to remember" in remember_job(job_event(state="broken", exit_status=None))
    assert recall(BUILD) is None  # no document written at all
    assert failed_jobs(BUILD) == []


def test_a_retried_job_counts_once_by_its_latest_attempt(firestore: Any) -> None:
    remember_job(first_capybara())
    assert [job.id for job in failed_jobs(BUILD)] == [FIRST_CAPYBARA]
    outcome = remember_job(job_event("job.finished.passed.auto-retry"))
    assert "cleared its earlier attempt" in outcome and "(0 failed in the build)" in outcome
    assert failed_jobs(BUILD) == []
    remember_job(first_capybara())  # the first attempt's event again: still retried
    assert failed_jobs(BUILD) == []


def test_a_retry_that_arrives_first_keeps_the_earlier_attempt_out(firestore: Any) -> None:
    remember_job(job_event("job.finished.passed.auto-retry"))
    assert "retried since: not counted" in remember_job(first_capybara())
    assert failed_jobs(BUILD) == []


def test_a_retry_that_failed_again_replaces_the_attempt_it_retried(firestore: Any) -> None:
    remember_job(first_capybara())
    remember_job(job_event("job.finished.passed.auto-retry", state="failed", exit_status=2))
    (job,) = failed_jobs(BUILD)
    assert (job.id, job.exit_status, job.retries) == (RETRIED_CAPYBARA, 2, 1)


def test_an_attempt_whose_payload_says_it_was_retried_is_not_counted(firestore: Any) -> None:
    late = first_capybara(retried=True, retried_in_job_id=RETRIED_CAPYBARA)
    assert "retried since: not counted" in remember_job(late)
    assert failed_jobs(BUILD) == []


def test_failed_jobs_come_in_the_order_they_finished(firestore: Any) -> None:
    remember_job(job_event())  # finished 03:35:40
    remember_job(first_capybara())  # finished 03:33:02
    remember_job(job_event(id="job-lint", name=":eslint: Lint", finished_at=None, exit_status=2))
    assert [job.name for job in failed_jobs(BUILD)] == [":capybara: Feature specs", ":rspec: RSpec", ":eslint: Lint"]


def test_a_job_event_without_a_job_or_build_is_invalid(firestore: Any) -> None:
    body = payload("job.finished.failed")
    del body["job"]
    with pytest.raises(InvalidEvent):
        remember_job(parse_delivery(envelope(body)))
    assert "not job.finished" in remember_job(build_event("build.failing"))


def test_the_branch_remembers_broken_streaks_and_fixed(firestore: Any) -> None:
    first = branch_history(finished(1, "passed", 1))
    assert (first.verdict, first.previous, first.streak, first.broken, first.fixed) == ("passed", None, 0, False, False)
    broken = branch_history(finished(2, "failed", 2))
    assert broken.broken and (broken.streak, broken.previous_build) == (1, 1)
    second = branch_history(finished(3, "failed", 3))
    assert (second.broken, second.streak, second.previous, second.previous_streak) == (False, 2, "failed", 1)
    fixed = branch_history(finished(4, "passed", 4))
    assert fixed.fixed and (fixed.streak, fixed.previous_streak, fixed.previous_build) == (0, 2, 3)
    calm = branch_history(finished(5, "passed", 5))
    assert not calm.fixed and calm.previous == "passed"
    other = branch_history(finished(6, "failed", 6, branch="feature/x"))  # a branch of its own
    assert (other.streak, other.previous, other.broken) == (1, None, False)


def test_a_redelivered_verdict_keeps_its_standing_and_writes_nothing(firestore: Any) -> None:
    branch_history(finished(1, "passed", 1))
    broken = branch_history(finished(2, "failed", 2))
    written = document(BRANCH_KIND, "my-great-org/my-pipeline@main", firestore).get().update_time
    assert branch_history(finished(2, "failed", 2)) == broken
    assert document(BRANCH_KIND, "my-great-org/my-pipeline@main", firestore).get().update_time == written


def test_a_late_older_build_never_rewrites_a_newer_verdict(firestore: Any) -> None:
    branch_history(finished(4, "passed", 4))
    late = branch_history(finished(3, "failed", 3))
    assert (late.newest, late.previous, late.streak, late.broken) == (False, None, 1, False)
    after = branch_history(finished(5, "failed", 5))
    assert after.broken and after.previous_build == 4  # #3 did not count


def test_the_same_build_finishing_again_builds_on_what_came_before_it(firestore: Any) -> None:
    branch_history(finished(7, "failed", 7))
    assert branch_history(finished(8, "failed", 8)).streak == 2
    retried = branch_history(finished(8, "passed", 9))  # a failed job retried by hand, the build passed
    assert retried.fixed and (retried.previous_build, retried.previous_streak) == (7, 1)


def test_a_failing_build_reads_its_standing_without_recording_it(firestore: Any) -> None:
    branch_history(finished(2041, "passed", 1))
    failing = branch_history(build_event("build.failing"))  # #2042, still running
    assert (failing.verdict, failing.broken, failing.streak, failing.newest) == ("failed", True, 1, False)
    held = document(BRANCH_KIND, "my-great-org/my-pipeline@main", firestore).get().to_dict()
    assert held["value"]["build"] == 2041


def test_builds_that_neither_passed_nor_failed_leave_the_branch_alone(firestore: Any) -> None:
    canceled = branch_history(build_event("build.finished.canceled"))
    assert canceled.verdict is None and not canceled.broken
    assert not document(BRANCH_KIND, "my-great-org/my-pipeline@main", firestore).get().exists


# -- the build as last seen, and its message ----------------------------------------------------

NOTIFIER = "test-notifier"


def test_one_delivery_leases_the_post_and_the_others_keep_what_they_know(firestore: Any) -> None:
    failing, finished = build_event("build.failing"), build_event("build.finished.failed")
    standing = branch_history(finished)
    memory, lease = note_build(failing, standing, NOTIFIER, post=True, channel="C0BUILDS01")
    assert lease is not None and lease.lost is None and memory.build is not None
    assert memory.build.event_type == "build.failing" and memory.revision == 1
    newer, second = note_build(finished, standing, NOTIFIER, post=True)  # another event, while posting
    assert second is None and newer.revision == 2 and newer.build is not None
    assert newer.build.event_type == "build.finished"
    with pytest.raises(TransientError, match="another delivery of this event"):
        note_build(failing, standing, NOTIFIER, post=True)  # a redelivery of the event being posted
    posted = record_post(lease, "C0BUILDS01", "1.000001", shown=1)
    message = posted.message(NOTIFIER)
    assert message is not None and (message.state, message.channel, message.ts, message.shown) == (
        "posted",
        "C0BUILDS01",
        "1.000001",
        1,
    )
    assert posted.revision == 2  # the poster sees it must update once more
    shown = mark_shown(posted.key, NOTIFIER, posted.revision)
    assert shown.message(NOTIFIER).shown == 2  # type: ignore[union-attr]
    late, none = note_build(failing, standing, NOTIFIER, post=True)  # older than what is kept
    assert none is None and late.revision == 2 and late.build and late.build.event_type == "build.finished"


def test_a_build_nobody_posts_about_is_read_not_written(firestore: Any) -> None:
    memory, lease = note_build(build_event("build.finished.passed"), BranchStanding("passed"), NOTIFIER, post=False)
    assert lease is None and memory.revision == 0
    assert recall(memory.key) is None


def test_a_post_whose_answer_was_lost_is_looked_for_by_the_next_delivery(firestore: Any) -> None:
    event = build_event("build.finished.failed")
    _, lease = note_build(event, BranchStanding("failed"), NOTIFIER, post=True, channel="C0BUILDS01")
    assert lease is not None
    release_post(lease, uncertain=True)
    _, again = note_build(event, BranchStanding("failed"), NOTIFIER, post=True)
    assert again is not None and again.lost is not None
    assert (again.lost.state, again.lost.channel) == ("unknown", "C0BUILDS01")
    release_post(again, uncertain=False)  # Slack refused it: nothing was posted
    _, third = note_build(event, BranchStanding("failed"), NOTIFIER, post=True)
    assert third is not None and third.lost is None


def test_a_poster_that_vanished_is_taken_over_after_its_lease(firestore: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from buildkite_events import builds

    failing, finished = build_event("build.failing"), build_event("build.finished.failed")
    _, first = note_build(failing, BranchStanding("failed"), NOTIFIER, post=True, channel="C0BUILDS01")
    assert first is not None
    monkeypatch.setattr(builds, "POST_LEASE_SECONDS", 0.0)  # its lease has run out
    _, second = note_build(finished, BranchStanding("failed"), NOTIFIER, post=True)
    assert second is not None and second.lost is not None and second.lost.owner == first.owner
    record_post(second, "C0BUILDS01", "2.000001", shown=2)
    kept = record_post(first, "C0BUILDS01", "1.000001", shown=1)  # the first poster comes back
    assert kept.message(NOTIFIER).ts == "2.000001"  # type: ignore[union-attr]


def test_hostile_build_fields_are_kept_as_firestore_takes_them(firestore: Any) -> None:
    event = build_event(
        "build.finished.failed",
        message="\ud800 first line\nsecond",
        branch=[["nested", ["lists"]]],
        author={"name": {"deep": {"er": 1}}, "email": "x" * 10_000},
        pull_request={"id": [1, [2]]},
    )
    memory, lease = note_build(event, BranchStanding("failed"), NOTIFIER, post=True)
    assert lease is not None
    view = memory.build
    assert view is not None and view.build is not None
    assert view.build.message == "\ufffd first line" and view.build.branch is None
    assert view.build.author is not None and view.build.author.email == "x" * 4000
