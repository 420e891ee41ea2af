"""github-status with real ``requests`` against the GitHub stand-in and the ledger on the Firestore emulator.

Every status body the function sends is validated against the request schema from GitHub's
published OpenAPI description (testdata/, extracted from npm @octokit/openapi).
"""

from __future__ import annotations

import contextlib
import copy
import importlib
import itertools
import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import requests
from hypothesis import given
from hypothesis import strategies as st

from buildkite_events import Nack, parse_delivery
from tests.support import (
    cloud_event,
    deliver_to,
    envelope,
    firestore_calls,
    fresh_first_delivery,
    load_function,
    log_lines,
    mcncl,
    outcomes,
    payload,
)
from tools.local.standin import Fault, StandIn
from tools.local.standins import github as gh_standin

fn = load_function("github-status")
api = importlib.import_module("github_api")  # beside main.py, on the path load_function set
statuses = importlib.import_module("github_statuses")

TOKEN = "ghp_test-token-0123456789"
REPO = "my-great-org/my-pipeline"
SHA_2041 = "5a741616cdf07dc87c5adafe784321eeeb639e33"
SHA_2042 = "b7c3e2d94f1a60c58e2d7f3a9b4c1e0d6f8a2b3c"
SCHEMAS = json.loads((Path(__file__).with_name("testdata") / "github-api.schema.json").read_text())
REQUEST_SCHEMA = {**SCHEMAS["create_status"]["request"], "additionalProperties": False}
APP_ID, INSTALLATION = "123456", "987654"


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    standin = StandIn()
    gh_standin.register(standin)
    with standin:
        yield standin


def _fresh_instance() -> None:
    fn.update_github_status.instance.reset()  # config and caches are per instance: be a new one
    fn._github.cache_clear()
    fn._records.cache_clear()
    fn._check_runs.cache_clear()


@pytest.fixture
def github(server: StandIn, firestore: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    server.reset()
    gh_standin.allow_token(server, TOKEN)
    monkeypatch.setenv("GITHUB_API_URL", f"{server.url}/github")
    monkeypatch.setenv("GITHUB_TOKEN", TOKEN)
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "6")
    for name in ("GITHUB_APP_ID", "GITHUB_APP_INSTALLATION_ID", "GITHUB_APP_PRIVATE_KEY", "GITHUB_BLOCKED_STATE"):
        monkeypatch.delenv(name, raising=False)
    _fresh_instance()
    yield server
    _fresh_instance()


def deliver(body: dict[str, Any] | str, message_id: str = "1000") -> None:
    deliver_to(fn.update_github_status, body, message_id)


def posts(server: StandIn) -> list[Any]:
    return server.recorded(r"/statuses/", "POST")


def bodies(server: StandIn) -> list[dict[str, Any]]:
    """The status bodies sent, each checked against GitHub's published request schema."""
    sent = [request.json for request in posts(server)]
    for body in sent:
        jsonschema.validate(body, REQUEST_SCHEMA)
        assert len(body.get("description") or "") <= 140
    return sent


def latest(server: StandIn, sha: str, context: str = "buildkite/my-pipeline") -> dict[str, Any]:
    """The status GitHub shows for ``context`` (the newest one created)."""
    return next(s for s in gh_standin.statuses(server, REPO, sha) if s["context"] == context)


# -- what each build event becomes -----------------------------------------------------------

SHA_2043, SHA_2045 = "c91e4b2a7d3f5068e1b9a2c4d6f8e0a1b3c5d7e9", "0c4e7a1d9b3f5e2c8a6d4b1f9e7c5a3d1b8f6e20"
SHA_2047 = "4f2d8b6e1a9c3075d2e8b4f6a1c3e5d7b9f0a2c4"
SHA_2048, SHA_2049 = "9e1d7c4b2a0f8e6d4c2b0a9f7e5d3c1b9a8f6e4d", "d2b5e8f1a4c7093b6e9d2f5a8c1b4e7d0a3f6c92"
EXPECTED = {
    "build.scheduled": (SHA_2041, "pending", "Build #2041 is scheduled"),
    "build.running": (SHA_2041, "pending", "Build #2041 is running"),
    "build.running.tag": (SHA_2049, "pending", "Build #2049 is running"),
    "build.failing": (SHA_2042, "failure", "Build #2042 is failing"),
    "build.finished.passed": (SHA_2041, "success", "Build #2041 passed in 5m26s"),
    "build.finished.failed": (SHA_2042, "failure", "Build #2042 failed in 5m4s"),
    "build.finished.passed.jira-key": (SHA_2048, "success", "Build #2048 passed in 3m45s"),
    "build.finished.blocked": (SHA_2043, "pending", "Build #2043 is blocked, waiting to be unblocked"),
    "build.finished.blocked.failed": (SHA_2047, "failure", "Build #2047 failed in 7m36s"),
    "build.skipped": (SHA_2045, "error", "Build #2045 was skipped"),
}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_build_event_sets_its_status(github: StandIn, name: str, capsys: Any) -> None:
    deliver(name)
    sha, state, description = EXPECTED[name]
    (request,) = posts(github)
    assert request.path == f"/github/repos/{REPO}/statuses/{sha}"
    assert request.headers["Authorization"] == f"Bearer {TOKEN}"
    assert request.headers["Accept"] == "application/vnd.github+json"
    assert request.headers["X-GitHub-Api-Version"] == "2022-11-28"
    number = description.split()[1].lstrip("#")
    assert bodies(github) == [
        {
            "state": state,
            "description": description,
            "context": "buildkite/my-pipeline",
            "target_url": f"https://buildkite.com/my-great-org/my-pipeline/builds/{number}",
        }
    ]
    assert outcomes(capsys) == ["done"]


@pytest.mark.parametrize(
    ("state", "expected"),
    [
        ("creating", ("pending", 0)),
        ("scheduled", ("pending", 0)),
        ("running", ("pending", 1)),
        ("blocked", ("pending", 2)),
        ("failing", ("failure", 3)),
        ("canceling", ("error", 3)),
        ("passed", ("success", 4)),
        ("failed", ("failure", 4)),
        ("canceled", ("error", 4)),
        ("skipped", ("error", 4)),
        ("not_run", ("error", 4)),
        ("mystery", None),
        (None, None),
    ],
)
def test_buildkite_states_map_to_github_states(state: str | None, expected: tuple[str, int] | None) -> None:
    assert statuses.github_state(state) == expected


@pytest.mark.parametrize("blocked", ["pending", "success", "failure", "error"])
def test_the_state_of_a_blocked_build_is_configurable(
    github: StandIn, monkeypatch: pytest.MonkeyPatch, blocked: str
) -> None:
    monkeypatch.setenv("GITHUB_BLOCKED_STATE", blocked)
    _fresh_instance()
    deliver("build.finished.blocked")  # webhook style: state "passed", blocked: true
    notification = payload("build.finished.blocked")
    notification["build"].update(state="blocked", blocked=False, id="0197-blocked-notification")
    deliver(notification, message_id="2")  # notification style: state "blocked"
    assert [b["state"] for b in bodies(github)] == [blocked]  # the second is the same status: not posted again


def test_statuses_never_exceed_140_characters_even_for_odd_states() -> None:
    assert len(statuses.describe(10**30, "x" * 500, None)) == 140

    @given(st.integers(min_value=0, max_value=10**12), st.text(max_size=300), st.none() | st.floats(0, 10**9))
    def check(number: int, state: str, duration: float | None) -> None:
        assert len(statuses.describe(number, state, duration)) <= 140

    check()


# -- which repository, which commit ----------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "expected"),
    [
        ("git@github.com:my-great-org/my-pipeline.git", ("github.com", REPO)),
        ("git@github.com:my-great-org/my-pipeline", ("github.com", REPO)),
        ("https://github.com/my-great-org/my-pipeline.git", ("github.com", REPO)),
        ("https://github.com/my-great-org/my-pipeline", ("github.com", REPO)),
        ("https://github.com/my-great-org/my-pipeline/", ("github.com", REPO)),
        ("https://token@github.com/my-great-org/my-pipeline.git", ("github.com", REPO)),
        ("ssh://git@github.com/my-great-org/my-pipeline.git", ("github.com", REPO)),
        ("ssh://git@github.com:22/my-great-org/my-pipeline.git", ("github.com", REPO)),
        ("git://github.com/my-great-org/my-pipeline.git", ("github.com", REPO)),
        ("git@GitHub.com:My-Org/repo.name.git", ("github.com", "My-Org/repo.name")),
        ("git@ghe.example.test:platform/api.git", ("ghe.example.test", "platform/api")),
        ("https://ghe.example.test/platform/api", ("ghe.example.test", "platform/api")),
        ("https://gitlab.com/group/sub/project.git", None),  # subgroups: not a GitHub owner/repo
        ("https://github.com/only-owner", None),
        ("git@github.com:../etc.git", None),
        ("file:///srv/git/repo.git", None),
        ("not a url", None),
        ("", None),
    ],
)
def test_repository_urls(url: str, expected: tuple[str, str] | None) -> None:
    assert api.parse_repository(url) == expected


def _with_repository(provider: str | None, url: str, settings_repo: str | None = None) -> dict[str, Any]:
    body = payload("build.finished.passed")
    pipeline = body["pipeline"]
    pipeline["repository"] = url
    if provider is None:
        pipeline.pop("provider")
    else:
        pipeline["provider"] = {"id": provider, "settings": {"repository": settings_repo} if settings_repo else {}}
    return body


@pytest.mark.parametrize(
    ("provider", "url", "settings_repo", "posted_to"),
    [
        ("github", "git@github.com:my-great-org/my-pipeline.git", REPO, REPO),
        ("github", "git@github.com:my-great-org/my-pipeline.git", None, REPO),  # settings missing: the URL
        (None, "https://github.com/my-great-org/my-pipeline", None, REPO),  # mcncl-style: no provider
        ("private", "git@github.com:my-great-org/my-pipeline.git", None, REPO),
        ("gitlab", "git@gitlab.com:my-great-org/my-pipeline.git", None, None),
        ("bitbucket", "git@bitbucket.org:my-great-org/my-pipeline.git", None, None),
        ("private", "git@bitbucket.org:my-great-org/my-pipeline.git", None, None),
        ("github", "", None, None),
    ],
)
def test_only_github_repositories_get_statuses(
    github: StandIn, provider: str | None, url: str, settings_repo: str | None, posted_to: str | None, capsys: Any
) -> None:
    deliver(_with_repository(provider, url, settings_repo))
    assert [r.path.split("/statuses/")[0] for r in posts(github)] == (
        [f"/github/repos/{posted_to}"] if posted_to else []
    )
    assert outcomes(capsys) == ["done" if posted_to else "skipped"]  # acked either way


def test_github_enterprise_server(github: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_API_URL", f"{github.url}/github/api/v3")
    _fresh_instance()
    deliver(_with_repository("github_enterprise", "git@ghe.example.test:my-great-org/my-pipeline.git"))
    deliver(_with_repository(None, "https://ghe.example.test/my-great-org/my-pipeline"), message_id="2")
    # Host-less providers count only on this GitHub: ghe.example.test is not the API's host here.
    assert [r.path for r in posts(github)] == [f"/github/api/v3/repos/{REPO}/statuses/{SHA_2041}"]


@pytest.mark.parametrize("commit", ["HEAD", "5a74161", "", None, "5a741616cdf07dc87c5adafe784321eeeb639e3z"])
def test_commits_that_are_not_full_shas_make_no_request(github: StandIn, commit: str | None, capsys: Any) -> None:
    body = payload("build.finished.passed")
    body["build"]["commit"] = commit
    deliver(body)
    assert posts(github) == []
    assert outcomes(capsys) == ["skipped"]


def test_the_ui_build_fixture_with_commit_head_is_acked(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.canceled")
    assert posts(github) == []
    out = capsys.readouterr().out
    assert "is not a full 40-character SHA" in out


def test_mcncl_messages_set_statuses_too(github: StandIn) -> None:
    data, attributes = mcncl("build.finished.failed")
    fn.update_github_status(cloud_event(envelope(data, attributes)))
    assert [(r.path, r.json["state"]) for r in posts(github)] == [
        (f"/github/repos/{REPO}/statuses/{SHA_2042}", "failure")
    ]


def test_other_events_are_filtered_and_jobs_skipped_without_a_request(
    github: StandIn, capsys: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    calls = firestore_calls(monkeypatch)
    for name in ("job.finished.failed", "agent.connected", "ping"):
        deliver(name)
    assert github.requests == []
    assert outcomes(capsys) == ["skipped", "filtered", "filtered"]  # jobs feed check runs only
    assert calls == []  # turned away before the claim: no Firestore call at all
    deliver("build.finished.failed")
    assert calls  # a build event is claimed (the spy sees Firestore)


# -- idempotency and ordering ------------------------------------------------------------------


def test_a_redelivered_event_posts_once(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.failed", "a")
    deliver("build.finished.failed", "a")
    deliver("build.finished.failed", "b")  # the same event in another message
    assert len(posts(github)) == 1
    assert outcomes(capsys) == ["done", "duplicate", "duplicate"]


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations(["build.scheduled", "build.running", "build.finished.passed"])),
    ids=lambda order: ">".join(name.split(".")[-1] for name in order),
)
def test_reordered_deliveries_never_step_back(github: StandIn, order: tuple[str, ...]) -> None:
    for i, name in enumerate(order):
        deliver(name, message_id=str(i))
    history = [s["state"] for s in reversed(gh_standin.statuses(github, REPO, SHA_2041))]
    assert history[-1] == "success"
    assert history.count("success") == 1 and history.index("success") == len(history) - 1
    assert gh_standin.combined(github, REPO, SHA_2041)["state"] == "success"
    bodies(github)


def test_a_late_failing_event_does_not_replace_the_final_failure(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.failed", "1")
    deliver("build.failing", "2")
    assert [b["description"] for b in bodies(github)] == ["Build #2042 failed in 5m4s"]
    assert "would be a step back" in capsys.readouterr().out


def test_a_newer_build_of_the_same_commit_may_replace_a_finished_one(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.passed", "1")
    rebuild = payload("build.scheduled")
    rebuild["build"].update(number=2050, id="0197-rebuild-2050", web_url=rebuild["build"]["web_url"][:-4] + "2050")
    deliver(rebuild, "2")
    deliver("build.running", "3")  # late event of the older build 2041: must not win
    late_finish = payload("build.finished.passed")
    late_finish["build"]["finished_at"] = "2025-06-12T03:19:49.000Z"  # a distinct event, same old build
    deliver(late_finish, "4")
    assert [(b["state"], b["description"]) for b in bodies(github)] == [
        ("success", "Build #2041 passed in 5m26s"),
        ("pending", "Build #2050 is scheduled"),
    ]
    assert latest(github, SHA_2041)["description"] == "Build #2050 is scheduled"


def _unblocked(started_at: str) -> dict[str, Any]:
    """Build #2043 running again after someone unblocked it: Buildkite sends build.running anew."""
    body = payload("build.finished.blocked")
    body["event"] = "build.running"
    body["build"].update(state="running", blocked=False, blocked_state="", started_at=started_at, finished_at=None)
    return body


def test_an_unblocked_build_replaces_its_blocked_status(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.blocked", "1")  # finished 04:07:55, waiting on a block step
    deliver(_unblocked("2025-06-12T04:12:30.000Z"), "2")  # unblocked: later timestamps
    late = payload("build.finished.blocked")
    late["build"].update(state="blocked", blocked=False)  # the blocked finish again, another producer's way
    deliver(late, "3")  # older than the running now: kept off
    finished = payload("build.finished.blocked")
    finished["build"].update(
        blocked=False, blocked_state="", started_at="2025-06-12T04:12:30.000Z", finished_at="2025-06-12T04:20:00.000Z"
    )
    deliver(finished, "4")
    assert [b["description"] for b in bodies(github)] == [
        "Build #2043 is blocked, waiting to be unblocked",
        "Build #2043 is running",
        "Build #2043 passed in 7m30s",
    ]
    assert latest(github, SHA_2043)["state"] == "success"
    assert outcomes(capsys) == ["done", "done", "skipped", "done"]


def test_a_late_running_event_from_before_the_block_does_not_replace_it(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.blocked", "1")
    deliver(_unblocked("2025-06-12T04:02:05.118Z"), "2")  # the first build.running, delivered late
    assert [b["description"] for b in bodies(github)] == ["Build #2043 is blocked, waiting to be unblocked"]
    assert "would be a step back" in capsys.readouterr().out


def test_contexts_are_independent(github: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver("build.finished.passed", "1")
    monkeypatch.setenv("GITHUB_STATUS_CONTEXT", "ci/{organization}/{pipeline}")
    _fresh_instance()
    deliver("build.running", "2")
    assert [(b["context"], b["state"]) for b in bodies(github)] == [
        ("buildkite/my-pipeline", "success"),
        ("ci/my-great-org/my-pipeline", "pending"),
    ]


def test_racing_deliveries_repair_a_slow_older_post(github: StandIn, capsys: Any) -> None:
    """running is reserved first but its POST lands after finished's: it then re-posts success on top."""
    gh_standin.slow_down(github, "pending", 1.0)
    errors: list[BaseException] = []

    def run(name: str, message_id: str) -> None:
        try:
            deliver(name, message_id)
        except BaseException as err:  # surfaced below
            errors.append(err)

    slow = threading.Thread(target=run, args=("build.running", "1"))
    slow.start()
    deadline = time.monotonic() + 10
    while not posts(github) and time.monotonic() < deadline:  # running has reserved; its POST is in flight
        time.sleep(0.01)
    run("build.finished.passed", "2")
    slow.join()
    assert errors == []
    history = [s["state"] for s in reversed(gh_standin.statuses(github, REPO, SHA_2041))]
    # Normally ["success", "pending", "success"]: the late pending is covered at once. Whatever the
    # timing, the delivery that posted pending re-posts the newer success after it.
    assert history[-1] == "success" and history.count("pending") == 1
    assert latest(github, SHA_2041)["state"] == "success"
    assert "re-posted the newer success of build #2041 on top" in capsys.readouterr().out


@pytest.mark.parametrize("round_", range(3))
def test_concurrent_shuffled_deliveries_converge_on_the_final_state(github: StandIn, round_: int) -> None:
    names = ["build.finished.failed", "build.failing", "build.running", "build.scheduled"]
    bodies_ = []
    for name in names:
        body = payload("build.running" if name == "build.scheduled" else name)
        if name == "build.scheduled":
            body["event"] = "build.scheduled"
            body["build"].update(state="scheduled", started_at=None)
        body["build"].update(number=2042, commit=SHA_2042, id="01976230-e966-4d3e-a32e-520a9c211ecd")
        bodies_.append(body)
    order = bodies_[round_:] + bodies_[:round_]
    gh_standin.slow_down(github, "pending", 0.2 * (round_ + 1))
    threads = [threading.Thread(target=_deliver_quietly, args=(b, str(i))) for i, b in enumerate(order)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, body in enumerate(order):  # Pub/Sub redelivers whatever was nacked
        _deliver_quietly(body, str(i))
    assert latest(github, SHA_2042)["description"] == "Build #2042 failed in 5m4s"
    bodies(github)


def _deliver_quietly(body: dict[str, Any], message_id: str) -> None:
    with contextlib.suppress(Nack):  # lost a race for the event's claim: a redelivery follows
        deliver(copy.deepcopy(body), message_id)


# -- GitHub's error answers --------------------------------------------------------------------


def test_bad_credentials_are_a_config_error(github: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("GITHUB_TOKEN", "ghp_revoked-token")
    _fresh_instance()
    with pytest.raises(Nack, match="401"):
        deliver("build.finished.failed")
    out = capsys.readouterr().out
    assert [line for line in out.splitlines() if '"outcome"' in line and '"config_error"' in line]
    assert "ghp_revoked-token" not in out


def test_a_token_without_permission_is_a_config_error(github: StandIn, capsys: Any) -> None:
    gh_standin.allow_token(github, TOKEN, read_only=True)
    with pytest.raises(Nack, match="403"):
        deliver("build.finished.failed")
    assert outcomes(capsys) == ["config_error"]


def test_primary_rate_limit_waits_for_the_reset_then_posts(github: StandIn, capsys: Any) -> None:
    gh_standin.exhaust_rate_limit(github, reset_in=1.0)
    deliver("build.finished.failed")
    assert outcomes(capsys) == ["done"]
    assert len(posts(github)) >= 2 and len(gh_standin.state(github).created) == 1


def test_primary_rate_limit_beyond_the_budget_nacks_at_once(github: StandIn, capsys: Any) -> None:
    gh_standin.exhaust_rate_limit(github, reset_in=3600)
    started = time.monotonic()
    with pytest.raises(Nack, match="rate limit"):
        deliver("build.finished.failed")
    assert time.monotonic() - started < 3
    assert outcomes(capsys) == ["retry"]
    assert len(posts(github)) == 1


@pytest.mark.parametrize("status", [403, 429])
def test_secondary_rate_limit_honours_retry_after(github: StandIn, status: int, capsys: Any) -> None:
    gh_standin.secondary_rate_limit(github, count=2, retry_after=0.5, status=status)
    deliver("build.finished.failed")
    assert outcomes(capsys) == ["done"]
    assert len(posts(github)) == 3


@pytest.mark.parametrize("who", ["token", "app"])
def test_a_repository_the_credentials_cannot_see_is_a_config_error(
    github: StandIn, who: str, request: pytest.FixtureRequest, capsys: Any
) -> None:
    """GitHub answers 404, not 403, to a token or App installation that cannot see a private repository."""
    if who == "app":
        request.getfixturevalue("app")
    gh_standin.hide_repo(github, REPO)
    with pytest.raises(Nack, match="these credentials cannot see my-great-org/my-pipeline") as raised:
        deliver("build.finished.failed")
    (line,) = [line for line in log_lines(capsys.readouterr().out) if "outcome" in line]
    assert line["outcome"] == "config_error" and "dead-letter queue" in line["message"]
    assert "install the GitHub App on it" in line["message"] and "repo:status" in line["message"]
    assert "404" in raised.value.description
    assert gh_standin.state(github).created == []
    hidden = gh_standin.state(github).repo(REPO)
    assert hidden is not None
    hidden.hidden_from.clear()  # the operator grants access and replays
    deliver("build.finished.failed")
    assert len(gh_standin.state(github).created) == 1


def test_an_unknown_repository_is_a_config_error_too(github: StandIn, capsys: Any) -> None:
    with pytest.raises(Nack, match="404"):
        deliver(_with_repository("github", "git@github.com:my-great-org/gone.git", "my-great-org/gone"))
    assert outcomes(capsys) == ["config_error"]


def test_the_stand_in_hides_a_repository_from_one_token_only(github: StandIn) -> None:
    gh_standin.allow_token(github, "ghp_other-token")
    gh_standin.hide_repo(github, REPO, "ghp_other-token")
    url = f"{github.url}/github/repos/{REPO}/statuses/{SHA_2041}"
    for token, expected in ((TOKEN, 201), ("ghp_other-token", 404)):
        answer = requests.post(url, json={"state": "success"}, headers={"Authorization": f"Bearer {token}"}, timeout=5)
        assert answer.status_code == expected
    assert answer.json()["message"] == "Not Found"


def test_an_unknown_commit_is_acked_with_a_warning(github: StandIn, capsys: Any) -> None:
    gh_standin.add_repo(github, REPO, commits={SHA_2042})
    deliver("build.finished.passed")  # SHA_2041 is not in the repository
    lines = capsys.readouterr().out
    assert '"outcome": "invalid"' in lines and "No commit found for SHA" in lines


def test_server_errors_nack_and_the_redelivery_posts_once(github: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "1")
    github.fail(r"/statuses/", Fault(status=502, remaining=100))
    with pytest.raises(Nack, match="502"):
        deliver("build.finished.failed")
    github.faults.clear()
    deliver("build.finished.failed")  # Pub/Sub redelivers
    deliver("build.finished.failed")
    assert len(gh_standin.state(github).created) == 1


def test_an_unreachable_api_nacks(github: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_API_URL", "http://127.0.0.1:9/github")
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "0")
    _fresh_instance()
    with pytest.raises(Nack, match="could not reach GitHub"):
        deliver("build.finished.failed")


# -- configuration ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "message"),
    [
        ({"GITHUB_TOKEN": ""}, "set GITHUB_TOKEN, or GITHUB_APP_ID"),
        ({"GITHUB_APP_ID": "1"}, "also needs GITHUB_APP_PRIVATE_KEY"),
        ({"GITHUB_APP_INSTALLATION_ID": "7"}, "set GITHUB_APP_ID and GITHUB_APP_PRIVATE_KEY too"),
        ({"GITHUB_REPORT": "checks"}, "GITHUB_REPORT=checks needs GitHub App authentication"),
        ({"GITHUB_REPORT": "both"}, "GitHub lets only Apps write check runs"),
        ({"GITHUB_REPORT": "check-runs"}, "GITHUB_REPORT must be one of statuses, checks, both"),
        ({"GITHUB_API_URL": "https://acme.ghe.com"}, "the API of acme.ghe.com is https://api.acme.ghe.com"),
        ({"GITHUB_API_URL": "https://github.com"}, "the API of github.com is https://api.github.com"),
        ({"GITHUB_APP_ID": "1", "GITHUB_APP_INSTALLATION_ID": "x", "GITHUB_APP_PRIVATE_KEY": "k"}, "must be a number"),
        ({"GITHUB_BLOCKED_STATE": "blue"}, "GITHUB_BLOCKED_STATE must be one of"),
        ({"GITHUB_STATUS_CONTEXT": "ci/{repo}"}, "GITHUB_STATUS_CONTEXT may only use"),
        ({"GITHUB_API_URL": "api.github.com"}, "GITHUB_API_URL must be an http"),
        ({"GITHUB_TIMEOUT_SECONDS": "0"}, "GITHUB_TIMEOUT_SECONDS must be more than 0"),
    ],
)
def test_configuration_errors_name_the_variable(
    github: StandIn, monkeypatch: pytest.MonkeyPatch, env: dict[str, str], message: str, capsys: Any
) -> None:
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    _fresh_instance()
    with pytest.raises(Nack, match=message):
        deliver("build.finished.failed")
    assert outcomes(capsys) == ["config_error"]
    assert github.requests == []


# -- GitHub App authentication --------------------------------------------------------------------


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    """(private PEM, public PEM): an RSA key made for this test run."""
    return gh_standin.generate_key()


@pytest.fixture
def app(github: StandIn, app_key: tuple[str, str], monkeypatch: pytest.MonkeyPatch) -> StandIn:
    private, public = app_key
    gh_standin.register_app(github, APP_ID, public, INSTALLATION)
    monkeypatch.delenv("GITHUB_TOKEN")
    monkeypatch.setenv("GITHUB_APP_ID", APP_ID)
    monkeypatch.setenv("GITHUB_APP_INSTALLATION_ID", INSTALLATION)
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", private)
    _fresh_instance()
    return github


def token_requests(server: StandIn) -> list[Any]:
    return server.recorded(r"/app/installations/.*/access_tokens", "POST")


def test_app_installation_token_is_fetched_once_and_reused(app: StandIn) -> None:
    deliver("build.scheduled", "1")
    deliver("build.running", "2")
    deliver("build.finished.passed", "3")
    (token_request,) = token_requests(app)
    assert token_request.path == f"/github/app/installations/{INSTALLATION}/access_tokens"
    issued = next(iter(gh_standin.state(app).issued))
    assert [r.headers["Authorization"] for r in posts(app)] == [f"Bearer {issued}"] * 3
    assert [s["creator"]["type"] for s in gh_standin.state(app).created] == ["Bot"] * 3


def test_app_jwt_claims(app: StandIn, app_key: tuple[str, str]) -> None:
    import jwt

    deliver("build.finished.passed")
    assertion = token_requests(app)[0].headers["Authorization"].removeprefix("Bearer ")
    assert jwt.get_unverified_header(assertion)["alg"] == "RS256"
    claims = jwt.decode(assertion, app_key[1], algorithms=["RS256"])
    assert claims["iss"] == APP_ID
    assert claims["iat"] <= time.time() - 30  # backdated for clock drift
    assert claims["exp"] - claims["iat"] <= 600


def test_a_token_near_expiry_is_replaced(app: StandIn) -> None:
    gh_standin.state(app).token_lifetime = 1.0  # refreshed halfway through such a short life
    deliver("build.scheduled", "1")
    time.sleep(0.6)
    deliver("build.running", "2")
    assert len(token_requests(app)) == 2


def test_a_revoked_installation_token_is_replaced_once(app: StandIn, capsys: Any) -> None:
    deliver("build.scheduled", "1")
    gh_standin.state(app).issued.clear()  # GitHub forgot the token: 401 "Bad credentials"
    deliver("build.running", "2")
    assert len(token_requests(app)) == 2
    assert outcomes(capsys) == ["done", "done"]


def test_a_private_key_with_escaped_newlines_works(
    app: StandIn, app_key: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", app_key[0].replace("\n", "\\n"))
    _fresh_instance()
    deliver("build.finished.passed")
    assert len(gh_standin.state(app).created) == 1


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ("wrong-key", "rejected the credentials"),
        ("unknown-installation", "installation 987654 not found"),
        ("garbage-key", "GITHUB_APP_PRIVATE_KEY is not a usable RSA private key"),
    ],
)
def test_app_misconfiguration_is_a_config_error(
    app: StandIn, monkeypatch: pytest.MonkeyPatch, change: str, message: str, capsys: Any
) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import rsa

    if change == "wrong-key":
        other = rsa.generate_private_key(public_exponent=65537, key_size=2048).public_key()
        pem = other.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)
        gh_standin.register_app(app, APP_ID, pem.decode(), INSTALLATION)
    elif change == "unknown-installation":
        gh_standin.state(app).installations.clear()
    else:
        monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", "-----BEGIN RSA PRIVATE KEY-----\nnot a key\n")
        _fresh_instance()
    with pytest.raises(Nack, match=message):
        deliver("build.finished.passed")
    assert outcomes(capsys) == ["config_error"]
    assert posts(app) == []


# -- the stand-in itself answers as GitHub documents -------------------------------------------------


def test_the_stand_in_answers_with_githubs_documented_shapes(github: StandIn, app_key: tuple[str, str]) -> None:
    headers = {"Authorization": f"Bearer {TOKEN}", "Accept": "application/vnd.github+json"}
    base = f"{github.url}/github/repos/{REPO}"
    created = requests.post(f"{base}/statuses/{SHA_2041}", json={"state": "success"}, headers=headers, timeout=5)
    assert created.status_code == 201
    jsonschema.validate(created.json(), SCHEMAS["create_status"]["response_201"])
    assert created.json()["context"] == "default"
    listed = requests.get(f"{base}/commits/{SHA_2041}/statuses", headers=headers, timeout=5)
    jsonschema.validate(listed.json(), SCHEMAS["list_statuses"]["response_200"])
    assert int(listed.headers["x-ratelimit-remaining"]) == 4998

    too_long = requests.post(
        f"{base}/statuses/{SHA_2041}", json={"state": "success", "description": "x" * 141}, headers=headers, timeout=5
    )
    assert too_long.status_code == 422
    assert "maximum is 140" in too_long.json()["errors"][0]["message"]
    bad_state = requests.post(f"{base}/statuses/{SHA_2041}", json={"state": "passed"}, headers=headers, timeout=5)
    assert bad_state.status_code == 422

    import jwt

    gh_standin.register_app(github, APP_ID, app_key[1], INSTALLATION)
    now = int(time.time())
    assertion = jwt.encode({"iat": now - 60, "exp": now + 500, "iss": APP_ID}, app_key[0], algorithm="RS256")
    token = requests.post(
        f"{github.url}/github/app/installations/{INSTALLATION}/access_tokens",
        headers={"Authorization": f"Bearer {assertion}"},
        timeout=5,
    )
    assert token.status_code == 201
    jsonschema.validate(token.json(), SCHEMAS["installation_token"]["response_201"])


def test_parsing_the_fixture_event_gives_the_planned_status() -> None:
    """plan_status is pure: the same status for the same event, whatever the delivery."""
    event = parse_delivery(envelope(payload("build.finished.failed")))
    config = fn.Config(token="t")
    planned = fn.plan_status(event, config)
    assert isinstance(planned, fn.Status)
    assert (planned.repo, planned.sha, planned.state, planned.rank, planned.build) == (
        REPO,
        SHA_2042,
        "failure",
        4,
        2042,
    )


def test_statuses_alone_never_load_check_runs_or_the_app(github: StandIn) -> None:
    """A new instance reporting statuses: check runs, the App (PyJWT) and the build records stay
    unloaded through its import and first delivery; the status is set."""
    unloaded = {"github_checks", "github_app", "jwt", "buildkite_events.builds"}
    printed, loaded = fresh_first_delivery("github-status", "build.finished.failed", unloaded)
    assert '"outcome": "done"' in printed
    assert loaded == set()
    assert len(posts(github)) == 1
