"""jira-update with the real ``jira`` library against the Jira stand-in, claims on the Firestore emulator."""

from __future__ import annotations

import base64
import contextlib
import sys
import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from buildkite_events import Nack, parse_delivery
from tests.support import cloud_event, envelope, firestore_calls, load_function, mcncl, outcomes, payload
from tools.local import emulators
from tools.local.faultproxy import FaultProxy
from tools.local.standin import Fault, StandIn
from tools.local.standins import jira as jira_standin

fn = load_function("jira-update")
api = sys.modules["jira_api"]  # the module beside main.py that talks to Jira

TOKEN = "jira-api-token-for-tests"
USER = "buildkite-bot@example.com"
MARKER_2048 = "buildkite-fanout:my-great-org/my-pipeline/2048/passed"


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    standin = StandIn()
    jira_standin.register(standin)
    with standin:
        yield standin


def _fresh_instance() -> None:
    fn.update_jira_tickets.instance.reset()  # config, client and project list are per instance
    fn._jira.cache_clear()
    fn._projects.clear()
    api._without_comment_list.clear()


@pytest.fixture
def jira(server: StandIn, firestore: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    server.reset()
    jira_standin.allow_token(server, TOKEN)
    monkeypatch.setenv("JIRA_SERVER", f"{server.url}/jira")
    monkeypatch.setenv("JIRA_USER", USER)
    monkeypatch.setenv("JIRA_TOKEN", TOKEN)
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "0")
    for name in ("JIRA_PROJECTS", "JIRA_FAILURE_TRANSITION", "JIRA_MAX_ISSUES", "JIRA_MAX_RETRIES"):
        monkeypatch.delenv(name, raising=False)
    _fresh_instance()
    yield server
    _fresh_instance()


def build(
    message: str | None = "PROJ-123 Add rate limiting",
    branch: str | None = "main",
    state: str = "passed",
    number: int = 2048,
) -> dict[str, Any]:
    body = payload("build.finished.passed.jira-key")
    body["build"].update(message=message, branch=branch, state=state, number=number)
    body["build"]["id"] = f"build-{number}"
    body["build"]["web_url"] = f"https://buildkite.com/my-great-org/my-pipeline/builds/{number}"
    return body


def deliver(body: dict[str, Any] | str, message_id: str = "1000") -> None:
    event = payload(body) if isinstance(body, str) else body
    fn.update_jira_tickets(cloud_event(envelope(event, message_id=message_id)))


def authorization(request: Any) -> str:
    return str(next(v for k, v in request.headers.items() if k.lower() == "authorization"))


def issue_requests(server: StandIn) -> list[Any]:
    return server.recorded(r"/rest/api/2/issue/")


# -- the happy path ---------------------------------------------------------------------------


def test_the_fixture_comments_once_on_its_issue(jira: StandIn, capsys: Any) -> None:
    deliver("build.finished.passed.jira-key")
    (comment,) = jira_standin.new_comments(jira, "PROJ-123")
    assert comment.splitlines() == [
        "(/) Buildkite build [My Pipeline #2048|https://buildkite.com/my-great-org/my-pipeline/builds/2048] *passed*",
        "Pipeline: my-pipeline · Branch: feature/PROJ-123-login-rate-limit · Commit: 9e1d7c4 · Took 3m45s",
        "{color:#97a0af}" + MARKER_2048 + "{color}",
    ]
    assert jira_standin.issue(jira, "PROJ-123").status == "In Progress"  # passed: not moved
    assert jira_standin.issue(jira, "PROJ-123").transitions == []
    out = capsys.readouterr().out
    assert '"outcome": "done"' in out and "PROJ-123 commented" in out


def test_basic_auth_with_a_user_and_bearer_without(jira: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(build(number=1), "1")
    basic = "Basic " + base64.b64encode(f"{USER}:{TOKEN}".encode()).decode()
    assert {authorization(r) for r in jira.requests} == {basic}
    jira.requests.clear()
    monkeypatch.delenv("JIRA_USER")  # Data Center: a personal access token
    _fresh_instance()
    deliver(build(number=2), "2")
    assert {authorization(r) for r in jira.requests} == {f"Bearer {TOKEN}"}
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 2


def test_a_redelivered_message_never_comments_twice(
    jira: StandIn, firestore_emulator: Any, gcp_project: str, capsys: Any
) -> None:
    deliver("build.finished.passed.jira-key", "a")
    deliver("build.finished.passed.jira-key", "a")  # the claim says: done
    emulators.wipe_firestore(firestore_emulator.host, gcp_project)  # no claim left: the marker must hold
    _fresh_instance()
    deliver("build.finished.passed.jira-key", "b")
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if '"outcome"' in line and "already commented" in line]


def test_racing_deliveries_comment_once(jira: StandIn) -> None:
    def run() -> None:
        with contextlib.suppress(Nack):  # lost the race for the claim; Pub/Sub redelivers it later
            deliver("build.finished.passed.jira-key")

    threads = [threading.Thread(target=run) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    deliver("build.finished.passed.jira-key")
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1


def test_another_outcome_of_the_same_build_is_a_new_comment(jira: StandIn) -> None:
    deliver(build(state="failed"), "1")
    deliver(build(state="passed"), "2")  # a failed job retried: the build finished again, passed
    comments = jira_standin.new_comments(jira, "PROJ-123")
    assert [c.split("*")[1] for c in comments] == ["failed", "passed"]


# -- transitions ------------------------------------------------------------------------------


def test_a_failed_build_moves_the_issue_then_comments(jira: StandIn) -> None:
    deliver(build(message="PROJ-124 Lock accounts", state="failed"))
    issue = jira_standin.issue(jira, "PROJ-124")
    assert issue.transitions == [("To Do", "Needs Review")]
    (comment,) = jira_standin.new_comments(jira, "PROJ-124")
    assert comment.startswith("(x) Buildkite build")
    assert "Moved to *Needs Review* because the build failed." in comment
    posts = [r.path.rsplit("/", 1)[-1] for r in jira.recorded(r"/issue/PROJ-124/", "POST")]
    assert posts == ["transitions", "comment"]  # a comment found later means the move happened too


def test_a_build_its_block_step_set_to_failed_is_commented_and_moved_as_a_failure(jira: StandIn) -> None:
    body = payload("build.finished.blocked.failed")  # state "passed", blocked, blocked_state "failed"
    body["build"]["message"] = "PROJ-124 Release 2.4.1"
    deliver(body)
    assert jira_standin.issue(jira, "PROJ-124").transitions == [("To Do", "Needs Review")]
    (comment,) = jira_standin.new_comments(jira, "PROJ-124")
    assert comment.startswith("(x) Buildkite build") and "*failed*" in comment
    assert "Moved to *Needs Review* because the build failed." in comment
    assert "my-great-org/my-pipeline/2047/failed" in comment


@pytest.mark.parametrize("name", ["needs review", "NEEDS REVIEW", "Needs Review"])
def test_the_transition_name_matches_without_case(jira: StandIn, monkeypatch: pytest.MonkeyPatch, name: str) -> None:
    monkeypatch.setenv("JIRA_FAILURE_TRANSITION", name)
    _fresh_instance()
    deliver(build(state="failed"))
    assert jira_standin.issue(jira, "PROJ-123").status == "Needs Review"


def test_the_transition_may_be_named_after_its_target_status(jira: StandIn) -> None:
    jira_standin.state(jira).workflow = [("71", "Send for review", "Needs Review"), ("41", "Done", "Done")]
    deliver(build(state="failed"))
    assert jira_standin.issue(jira, "PROJ-123").transitions == [("In Progress", "Needs Review")]


def test_a_missing_transition_is_logged_and_the_comment_still_made(
    jira: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("JIRA_FAILURE_TRANSITION", "Escalate to the CEO")
    _fresh_instance()
    deliver(build(state="failed"))
    assert jira_standin.issue(jira, "PROJ-123").transitions == []
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    out = capsys.readouterr().out
    assert "no transition 'Escalate to the CEO' available on PROJ-123" in out
    assert '"outcome": "done"' in out


def test_an_issue_already_in_the_target_status_is_not_moved(jira: StandIn) -> None:
    jira_standin.issue(jira, "PROJ-123").status = "Needs Review"
    deliver(build(state="failed"))
    assert jira_standin.issue(jira, "PROJ-123").transitions == []
    assert jira.recorded(r"/transitions") == []


def test_an_empty_transition_setting_never_moves(jira: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_FAILURE_TRANSITION", "")
    _fresh_instance()
    deliver(build(state="failed"))
    assert jira.recorded(r"/transitions") == []
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1


def test_canceled_builds_comment_without_moving(jira: StandIn) -> None:
    deliver(build(state="canceled"))
    assert jira.recorded(r"/transitions") == []
    assert jira_standin.new_comments(jira, "PROJ-123")[0].startswith("(!) Buildkite build")


# -- which keys -------------------------------------------------------------------------------

PROJECTS = frozenset({"PROJ", "OPS", "UTF", "SHA", "ISO"})  # even if such projects existed


@pytest.mark.parametrize(
    ("message", "branch", "expected"),
    [
        ("PROJ-123 Add rate limiting\n\nRefs: OPS-7", "main", ["PROJ-123", "OPS-7"]),
        (None, "feature/PROJ-124-lockout", ["PROJ-124"]),
        ("Fix the login page", "bugfix/proj-124-lowercase-branch", ["PROJ-124"]),
        ("PROJ-1 PROJ-1, again PROJ-1", "feature/PROJ-1-x", ["PROJ-1"]),
        ("Decode UTF-8, hash with SHA-256, dates in ISO-8601", "main", []),
        ("PROJ-0 is never an issue, nor PROJ-00 or PROJ-", "main", []),
        ("ABC-12 is in no known project; XPROJ-5 neither", "main", []),
        ("(PROJ-5), [OPS-6]: PROJ-7.", "PROJ-8_fix", ["PROJ-5", "OPS-6", "PROJ-7", "PROJ-8"]),
        ("PROJ-12abc is not a key, PROJ-13 is", "main", ["PROJ-13"]),
        ("lowercase proj-9 in a message is not a key", "main", []),
        ("", "", []),
    ],
)
def test_issue_keys(message: str | None, branch: str, expected: list[str]) -> None:
    assert fn.issue_keys(fn.candidate_keys(message, branch), PROJECTS) == expected


def test_listed_projects_are_trusted_even_when_they_look_like_standards() -> None:
    candidates = fn.candidate_keys("Follow ISO-8601 and PROJ-3", None)
    assert fn.issue_keys(candidates, frozenset({"ISO", "PROJ"}), trusted=True) == ["ISO-8601", "PROJ-3"]
    assert fn.issue_keys(candidates, frozenset({"ISO", "PROJ"})) == ["PROJ-3"]


def test_keys_in_the_branch_only(jira: StandIn) -> None:
    deliver(build(message="Add alerting", branch="bugfix/OPS-7-queue-alerts"))
    assert len(jira_standin.new_comments(jira, "OPS-7")) == 1


def test_a_null_message_and_no_keys_make_no_request(
    jira: StandIn, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = firestore_calls(monkeypatch)
    deliver(build(message=None, branch="main"))
    assert jira.requests == []
    assert "no Jira issue keys" in capsys.readouterr().out
    assert calls == []  # turned away before the claim: not even Firestore is asked


def test_false_keys_are_never_looked_up(jira: StandIn, capsys: Any) -> None:
    deliver(build(message="Use UTF-8 and SHA-256; ISO-8601 dates; PROJ-0; NOPE-4", branch="main"))
    assert issue_requests(jira) == []
    assert [r.path for r in jira.requests] == ["/jira/rest/api/2/project"]
    assert "no keys of known Jira projects" in capsys.readouterr().out


def test_many_keys_are_all_commented(jira: StandIn) -> None:
    keys = [f"PROJ-{n}" for n in range(1, 16)]
    for key in keys:
        jira_standin.add_issue(jira, key)
    deliver(build(message="Batch: " + ", ".join(keys)))
    assert all(len(jira_standin.new_comments(jira, key)) == 1 for key in keys)


def test_too_many_keys_are_capped(jira: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("JIRA_MAX_ISSUES", "3")
    _fresh_instance()
    keys = [f"PROJ-{n}" for n in range(1, 7)]
    for key in keys:
        jira_standin.add_issue(jira, key)
    deliver(build(message=" ".join(keys)))
    assert [len(jira_standin.new_comments(jira, key)) for key in keys] == [1, 1, 1, 0, 0, 0]
    assert "6 issue keys; updating the first 3" in capsys.readouterr().out


def test_projects_are_listed_once_per_instance(jira: StandIn) -> None:
    for number in (1, 2, 3):
        deliver(build(number=number), str(number))
    assert len(jira.recorded(r"/project$")) == 1


def test_configured_projects_are_used_without_listing(jira: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_PROJECTS", "proj")
    _fresh_instance()
    deliver(build(message="PROJ-123 and OPS-7"))
    assert jira.recorded(r"/project$") == []
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    assert jira_standin.new_comments(jira, "OPS-7") == []


# -- busy issues: the marker may be many pages back --------------------------------------------


@pytest.mark.parametrize("with_marker", [True, False])
def test_comments_are_paged_through_on_a_busy_issue(jira: StandIn, with_marker: bool) -> None:
    jira_standin.add_issue(jira, "PROJ-500", "A very busy issue")
    if with_marker:
        jira_standin.add_comment(jira, "PROJ-500", "(/) earlier report\n{color:#97a0af}" + MARKER_2048 + "{color}")
    for n in range(236):
        jira_standin.add_comment(jira, "PROJ-500", f"chatter {n}")
    deliver(build(message="PROJ-500 busy"))
    pages = jira.recorded(r"/issue/PROJ-500/comment$", "GET")
    assert len(pages) == 5  # 237 comments, 50 a page whatever the client asks for
    assert [p.query.split("&")[0] for p in pages] == [f"startAt={n}" for n in (0, 50, 100, 150, 200)]
    assert len(jira_standin.new_comments(jira, "PROJ-500")) == (0 if with_marker else 1)


# -- Jira's error answers ------------------------------------------------------------------------


def test_an_unknown_issue_is_skipped_and_the_others_commented(jira: StandIn, capsys: Any) -> None:
    deliver(build(message="PROJ-999 and PROJ-123"))
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    out = capsys.readouterr().out
    assert "skipping PROJ-999" in out and '"outcome": "done"' in out


def test_a_partly_failed_message_is_retried_without_commenting_twice(jira: StandIn, capsys: Any) -> None:
    jira.fail(r"/issue/PROJ-124/comment$", Fault(status=503, remaining=1000))
    body = build(message="PROJ-123 PROJ-124 OPS-7")
    with pytest.raises(Nack, match="PROJ-124 failed"):
        deliver(body)
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    assert len(jira_standin.new_comments(jira, "OPS-7")) == 1  # one failing key does not block the others
    jira.faults.clear()
    deliver(body)  # Pub/Sub redelivers: the claim was released, the markers remain
    assert [len(jira_standin.new_comments(jira, k)) for k in ("PROJ-123", "PROJ-124", "OPS-7")] == [1, 1, 1]
    assert outcomes(capsys) == ["retry", "done"]


def test_rate_limits_are_retried_by_the_client_within_bounds(jira: StandIn, capsys: Any) -> None:
    jira.fail(r"/issue/PROJ-123/comment$", Fault(status=429, retry_after=1, remaining=1))
    started = time.monotonic()
    deliver(build())
    assert time.monotonic() - started < 6
    # the first comment search met the 429; the library waited, asked again, then commented
    assert [r.method for r in jira.recorded(r"/issue/PROJ-123/comment$")] == ["GET", "GET", "POST"]
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    assert outcomes(capsys) == ["done"]


def test_rate_limits_beyond_the_retries_nack_with_the_servers_hint(jira: StandIn, monkeypatch: Any) -> None:
    monkeypatch.setenv("JIRA_MAX_RETRIES", "0")
    _fresh_instance()
    jira.fail(r"/issue/PROJ-123$", Fault(status=429, retry_after=120, remaining=10))
    with pytest.raises(Nack, match="429"):
        deliver(build())


def test_an_unreachable_jira_nacks(jira: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("JIRA_SERVER", "http://127.0.0.1:9/jira")
    monkeypatch.setenv("JIRA_MAX_RETRIES", "0")
    _fresh_instance()
    with pytest.raises(Nack, match="could not list Jira projects"):
        deliver(build())


@pytest.mark.parametrize("projects", ["", "PROJ"], ids=["listing-projects", "looking-up-issues"])
def test_bad_credentials_are_a_config_error(
    jira: StandIn, monkeypatch: pytest.MonkeyPatch, projects: str, capsys: Any
) -> None:
    monkeypatch.setenv("JIRA_TOKEN", "a-revoked-token")
    monkeypatch.setenv("JIRA_PROJECTS", projects)
    _fresh_instance()
    with pytest.raises(Nack):
        deliver(build(message="PROJ-123 PROJ-124"))
    out = capsys.readouterr().out
    assert '"outcome": "config_error"' in out and "a-revoked-token" not in out
    assert len(issue_requests(jira)) <= 1  # stops at the first 401


def test_a_forbidden_issue_nacks_after_the_others(jira: StandIn, capsys: Any) -> None:
    jira_standin.state(jira).forbidden.add("PROJ-124")
    with pytest.raises(Nack, match="403"):
        deliver(build(message="PROJ-124 PROJ-123"))
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    assert outcomes(capsys) == ["config_error"]


def test_a_refused_comment_is_acked_with_a_warning(jira: StandIn, capsys: Any) -> None:
    jira.fail(r"/issue/PROJ-123/comment$", Fault(status=400, remaining=1, body={"errors": {"comment": "too long"}}))
    deliver(build())
    out = capsys.readouterr().out
    assert "skipping PROJ-123: Jira answered 400" in out and '"outcome": "done"' in out


# -- events that are not for us -----------------------------------------------------------------


def test_blocked_builds_are_not_commented_yet(jira: StandIn, capsys: Any) -> None:
    body = payload("build.finished.blocked")
    body["build"]["message"] = "PROJ-123 Release"
    deliver(body)
    assert jira.requests == []
    assert "is blocked on a block step" in capsys.readouterr().out


def test_other_events_are_filtered(jira: StandIn, capsys: Any) -> None:
    for name in ("build.running", "build.failing", "job.finished.failed", "ping"):
        deliver(name)
    assert jira.requests == []
    assert outcomes(capsys) == ["filtered"] * 4


def test_mcncl_messages_are_understood(jira: StandIn, capsys: Any) -> None:
    data, attributes = mcncl("build.finished.failed")
    fn.update_jira_tickets(cloud_event(envelope(data, attributes)))
    assert jira.requests == []  # "Refactor session store" on main mentions no issue
    assert outcomes(capsys) == ["skipped"]


# -- the comment's text -------------------------------------------------------------------------


def test_untrusted_text_cannot_format_link_or_mention() -> None:
    body = build(branch="PROJ-1-[evil|https://evil.test]-{color:red}x{color}")
    body["pipeline"]["name"] = "[~accountid:5b10a2844c20165700ede21g] *loud* !https://evil.test/p.png!"
    event = parse_delivery(envelope(body))
    text = fn.comment_body(event, fn.build_marker(event))
    first, second = text.splitlines()[:2]
    assert "\\[\\~accountid:5b10a2844c20165700ede21g\\]" in first
    assert "\\*loud\\*" in first and "\\!https://evil.test/p.png\\!" in first
    assert "\\[evil\\|https://evil.test\\]" in second and "\\{color:red\\}" in second
    assert "[~" not in text.replace("\\[~", "")


def test_markers_name_the_build_and_its_outcome() -> None:
    event = parse_delivery(envelope(build(state="not_run", number=7)))
    assert fn.build_marker(event) == "buildkite-fanout:my-great-org/my-pipeline/7/not_run"


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"JIRA_SERVER": ""}, "JIRA_SERVER is required"),
        ({"JIRA_SERVER": "jira.example.com"}, "JIRA_SERVER must be an http"),
        ({"JIRA_TOKEN": ""}, "JIRA_TOKEN is required"),
        ({"JIRA_PROJECTS": "PROJ,1BAD"}, "JIRA_PROJECTS holds 1BAD"),
        ({"JIRA_MAX_ISSUES": "0"}, "JIRA_MAX_ISSUES must be at least 1"),
        ({"JIRA_TIMEOUT_SECONDS": "0"}, "JIRA_TIMEOUT_SECONDS must be more than 0"),
        ({"JIRA_TIMEOUT_SECONDS": "-5"}, "JIRA_TIMEOUT_SECONDS must be more than 0"),
    ],
)
def test_configuration_errors_name_the_variable(
    jira: StandIn, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str, capsys: Any
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _fresh_instance()
    with pytest.raises(Nack, match=message):
        deliver(build())
    assert outcomes(capsys) == ["config_error"]
    assert jira.requests == []


def test_candidate_keys_are_bounded_and_the_branch_still_counts() -> None:
    """40,000 keys in a commit message: once each, in order, at most MAX_CANDIDATE_KEYS of them, then the branch's."""
    message = " ".join(f"PROJ-{n}" for n in range(1, 40_001)) + " PROJ-1" * 1000
    keys = fn.candidate_keys(message, "feature/OPS-7-alerts")
    assert keys[: fn.MAX_CANDIDATE_KEYS] == [f"PROJ-{n}" for n in range(1, fn.MAX_CANDIDATE_KEYS + 1)]
    assert keys[fn.MAX_CANDIDATE_KEYS :] == ["OPS-7"]
    assert fn.candidate_keys("PROJ-1 " * 50_000, "PROJ-1") == ["PROJ-1"]


# -- the marker: a comment property first, the text as a fallback --------------------------------


def test_our_comment_carries_the_marker_as_a_comment_property(jira: StandIn) -> None:
    deliver("build.finished.passed.jira-key")
    assert jira_standin.comment_properties(jira, "PROJ-123") == [{api.PROPERTY_KEY: {"marker": MARKER_2048}}]


def test_an_edited_comment_still_counts_as_done(jira: StandIn, firestore_emulator: Any, gcp_project: str) -> None:
    """Someone tidied our comment in Jira (or Jira rendered it back differently): the text marker is
    gone, the property stays, and a redelivery without its claim does not comment again."""
    deliver("build.finished.passed.jira-key", "a")
    jira_standin.edit_comment(jira, "PROJ-123", "(/) build 2048 passed, see Buildkite")
    emulators.wipe_firestore(firestore_emulator.host, gcp_project)
    _fresh_instance()
    deliver("build.finished.passed.jira-key", "b")
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    assert jira.recorded(r"/comment/list$", "POST")  # found through the property lookup


def test_a_text_marker_escaped_by_a_renderer_is_still_found(jira: StandIn) -> None:
    """Comments from before properties carry only the text, which Jira may hand back with escapes."""
    jira_standin.add_comment(
        jira, "PROJ-123", "(/) earlier {color:#97A0AF}" + MARKER_2048.replace("-", "\\-") + "{color}"
    )
    deliver("build.finished.passed.jira-key")
    assert jira_standin.new_comments(jira, "PROJ-123") == []


def test_without_comment_properties_the_text_marker_decides(jira: StandIn, capsys: Any) -> None:
    """Jira Data Center has no POST comment/list: looked for once per instance, then the text marker alone."""
    jira.fail(r"/comment/list$", Fault(status=404, remaining=1000, body={"errorMessages": ["null for uri"]}))
    deliver(build(number=1), "1")
    deliver(build(number=1), "2")
    deliver(build(number=2), "3")
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 2
    assert len(jira.recorded(r"/comment/list$")) == 1
    assert "cannot list comment properties" in capsys.readouterr().out


def test_the_stand_in_renders_comments_back_not_byte_for_byte(jira: StandIn) -> None:
    jira_standin.add_comment(jira, "PROJ-124", "Build   my\\_pipeline \\: done  \n{color:#97A0AF}x{color}  ")
    (comment,) = [c for c in jira_standin.issue(jira, "PROJ-124").comments]
    assert comment["body"] == "Build my_pipeline : done\n{color:#97a0af}x{color}"


def test_a_comment_post_whose_answer_is_lost_is_not_sent_twice(
    jira: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The POST reached Jira and the comment exists, but the connection dropped before the answer:
    the jira library would re-send the POST itself. Sent once; the retry finds the marker first."""
    with FaultProxy(jira.url) as proxy:
        monkeypatch.setenv("JIRA_SERVER", f"{proxy.url}/jira")
        monkeypatch.setenv("JIRA_MAX_RETRIES", "3")  # the library's own retries are on
        monkeypatch.setenv("RETRY_BUDGET_SECONDS", "10")
        _fresh_instance()
        proxy.fail(r"/issue/PROJ-123/comment$", "lost", method="POST")
        deliver(build())
        assert len(proxy.forwarded(r"/issue/PROJ-123/comment$", "POST")) == 1
    assert len(jira_standin.new_comments(jira, "PROJ-123")) == 1
    assert outcomes(capsys) == ["done"]
