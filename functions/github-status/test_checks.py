"""Check runs and GitHub App installations per repository: github-status with real ``requests``
against the GitHub stand-in, its records on the Firestore emulator.

Every check-run body the function sends is validated against the request schemas of
``checks/create`` and ``checks/update`` from GitHub's published OpenAPI description (testdata/),
and every summary is rendered with cmark-gfm, GitHub's own markdown.
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

import cmarkgfm  # type: ignore[import-untyped]
import jsonschema
import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from buildkite_events import Nack, parse_delivery
from buildkite_events.builds import FailedJob, affects_failed_jobs, remember_job
from tests.support import deliver_to, envelope, load_function, log_lines, outcomes, payload
from tools.local.standin import Fault, StandIn
from tools.local.standins import github as gh_standin

fn = load_function("github-status")
checks = importlib.import_module("github_checks")  # beside main.py, on the path load_function set
api = importlib.import_module("github_api")

REPO = "my-great-org/my-pipeline"
NAME = "buildkite/my-pipeline"
APP_ID, INSTALLATION = "123456", "987654"
SHA_2041 = "5a741616cdf07dc87c5adafe784321eeeb639e33"
SHA_2042 = "b7c3e2d94f1a60c58e2d7f3a9b4c1e0d6f8a2b3c"
SHA_2043 = "c91e4b2a7d3f5068e1b9a2c4d6f8e0a1b3c5d7e9"
BUILD_2041 = "01976221-8ef6-48d2-8d4b-eb8a7d3530db"
SCHEMAS = json.loads((Path(__file__).with_name("testdata") / "github-api.schema.json").read_text())
CREATE_SCHEMA = {**SCHEMAS["create_check_run"]["request"], "additionalProperties": False}
UPDATE_SCHEMA = {**SCHEMAS["update_check_run"]["request"], "additionalProperties": False}


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    standin = StandIn()
    gh_standin.register(standin)
    with standin:
        yield standin


@pytest.fixture(scope="module")
def app_key() -> tuple[str, str]:
    return gh_standin.generate_key()


def _fresh_instance() -> None:
    fn.update_github_status.instance.reset()  # config and caches are per instance: be a new one
    for cached in (fn._github, fn._records, fn._check_runs):
        cached.cache_clear()


@pytest.fixture
def github(
    server: StandIn, firestore: Any, app_key: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> Iterator[StandIn]:
    """GITHUB_REPORT=checks with a GitHub App whose installation is looked up per repository."""
    server.reset()
    gh_standin.register_app(server, APP_ID, app_key[1], INSTALLATION)
    for name in ("GITHUB_TOKEN", "GITHUB_APP_INSTALLATION_ID", "GITHUB_BLOCKED_STATE", "GITHUB_STATUS_CONTEXT"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("GITHUB_API_URL", f"{server.url}/github")
    monkeypatch.setenv("GITHUB_APP_ID", APP_ID)
    monkeypatch.setenv("GITHUB_APP_PRIVATE_KEY", app_key[0])
    monkeypatch.setenv("GITHUB_REPORT", "checks")
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "8")
    _fresh_instance()
    yield server
    _fresh_instance()


def deliver(body: dict[str, Any] | str, message_id: str = "1000") -> None:
    deliver_to(fn.update_github_status, body, message_id)


def quietly(body: dict[str, Any] | str, message_id: str) -> None:
    with contextlib.suppress(Nack):  # Pub/Sub redelivers what was nacked
        deliver(copy.deepcopy(body), message_id)


def runs(server: StandIn, repo: str = REPO) -> list[dict[str, Any]]:
    return gh_standin.check_runs(server, repo)


def sent(server: StandIn) -> list[tuple[str, dict[str, Any]]]:
    """(method, body) of every check-run write, each valid under GitHub's published request schema."""
    writes = [r for r in server.recorded(r"/check-runs", None) if r.method in ("POST", "PATCH")]
    for request in writes:
        jsonschema.validate(request.json, CREATE_SCHEMA if request.method == "POST" else UPDATE_SCHEMA)
    return [(r.method, r.json) for r in writes]


def kept(server: StandIn) -> list[dict[str, Any]]:
    """Updates that asked a completed run to change its status or conclusion (GitHub ignores them)."""
    return [entry for entry in gh_standin.state(server).check_run_log if entry["action"] == "kept"]


def finished(state: str, **build: Any) -> dict[str, Any]:
    """Build #2041's build.finished with another verdict."""
    body = payload("build.finished.passed")
    body["build"].update(state=state, **build)
    return body


def job(**fields: Any) -> dict[str, Any]:
    """A job.finished of build #2042 (the build as it was then: failing), with the job's fields replaced."""
    body = payload("job.finished.failed")
    body["job"].update(fields)
    return body


# -- one run per build, with the right conclusion ---------------------------------------------------


@pytest.mark.parametrize(
    ("body", "sha", "conclusion", "title"),
    [
        ("build.finished.passed", SHA_2041, "success", "Build #2041 passed in 5m26s"),
        ("build.finished.failed", SHA_2042, "failure", "Build #2042 failed in 5m4s"),
        ("build.finished.blocked.failed", "4f2d8b6e1a9c3075d2e8b4f6a1c3e5d7b9f0a2c4", "failure", "Build #2047 failed"),
        (finished("canceled"), SHA_2041, "cancelled", "Build #2041 was canceled"),
        ("build.skipped", "0c4e7a1d9b3f5e2c8a6d4b1f9e7c5a3d1b8f6e20", "skipped", "Build #2045 was skipped"),
        (finished("not_run"), SHA_2041, "skipped", "Build #2041 did not run"),
    ],
    ids=["passed", "failed", "blocked-failed", "canceled", "skipped", "not_run"],
)
def test_a_finished_build_is_one_completed_run(
    github: StandIn, body: Any, sha: str, conclusion: str, title: str, capsys: Any
) -> None:
    deliver(body)
    (run,) = runs(github)
    build = payload(body)["build"] if isinstance(body, str) else body["build"]
    assert (run["name"], run["head_sha"], run["status"], run["conclusion"]) == (NAME, sha, "completed", conclusion)
    assert run["external_id"] == build["id"] and run["details_url"] == build["web_url"]
    assert run["output"]["title"].startswith(title)
    assert [method for method, _ in sent(github)] == ["POST"]
    assert outcomes(capsys) == ["done"]
    assert github.recorded(r"/statuses/") == []  # GITHUB_REPORT=checks: no statuses


def test_a_build_is_created_on_its_first_event_then_updated(github: StandIn) -> None:
    for i, name in enumerate(("build.scheduled", "build.running", "build.finished.passed")):
        deliver(name, str(i))
    (run,) = runs(github)
    writes = sent(github)
    assert [(m, b["status"]) for m, b in writes] == [
        ("POST", "queued"),
        ("PATCH", "in_progress"),
        ("PATCH", "completed"),
    ]
    assert writes[0][1]["head_sha"] == SHA_2041 and writes[0][1]["external_id"] == BUILD_2041
    assert github.recorded(r"/check-runs/", "PATCH")[0].path == f"/github/repos/{REPO}/check-runs/{run['id']}"
    assert (run["status"], run["conclusion"], run["completed_at"]) == ("completed", "success", "2025-06-12T03:19:48Z")


@pytest.mark.parametrize(
    "order",
    list(itertools.permutations(["build.scheduled", "build.running", "build.finished.passed"])),
    ids=lambda order: ">".join(name.split(".")[-1] for name in order),
)
def test_out_of_order_events_make_one_run_and_never_reopen_it(github: StandIn, order: tuple[str, ...]) -> None:
    for i, name in enumerate(order):
        deliver(name, str(i))
    (run,) = runs(github)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert len(github.recorded(r"/check-runs$", "POST")) == 1
    assert kept(github) == []  # never asked GitHub to move a completed run back


def test_a_late_running_event_never_reopens_a_completed_run(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.failed", "1")
    deliver("build.failing", "2")
    assert [m for m, _ in sent(github)] == ["POST"]
    out = capsys.readouterr().out
    assert "a late failing never reopens a completed check run" in out


def test_redelivery_adds_nothing(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.failed", "a")
    deliver("build.finished.failed", "a")
    deliver("build.finished.failed", "b")  # the same event in another message
    _fresh_instance()  # another instance: nothing in memory
    deliver("build.finished.failed", "c")
    assert len(runs(github)) == 1 and [m for m, _ in sent(github)] == ["POST"]
    assert outcomes(capsys) == ["done", "duplicate", "duplicate", "duplicate"]


def test_a_rebuild_of_the_same_commit_gets_its_own_run(github: StandIn) -> None:
    deliver("build.finished.passed", "1")
    rebuild = finished("failed", number=2050, id="0197-rebuild-2050")
    deliver(rebuild, "2")
    assert [(r["external_id"], r["conclusion"]) for r in runs(github)] == [
        (BUILD_2041, "success"),
        ("0197-rebuild-2050", "failure"),
    ]


def test_a_blocked_build_stays_in_progress_until_it_goes_on(github: StandIn) -> None:
    deliver("build.finished.blocked", "1")
    (run,) = runs(github)
    assert (run["status"], run["conclusion"]) == ("in_progress", None)
    assert run["output"]["title"] == "Build #2043 is blocked, waiting to be unblocked"
    assert "waiting for someone to unblock it" in run["output"]["summary"]
    unblocked = payload("build.finished.blocked")
    unblocked["event"] = "build.running"
    unblocked["build"].update(state="running", blocked=False, started_at="2025-06-12T04:12:30.000Z", finished_at=None)
    deliver(unblocked, "2")
    done = payload("build.finished.blocked")
    done["build"].update(blocked=False, started_at="2025-06-12T04:12:30.000Z", finished_at="2025-06-12T04:20:00.000Z")
    deliver(done, "3")
    (run,) = runs(github)
    assert (run["status"], run["conclusion"], run["head_sha"]) == ("completed", "success", SHA_2043)
    assert [b["status"] for _, b in sent(github)] == ["in_progress", "in_progress", "completed"]


def test_first_events_racing_create_one_run(github: StandIn) -> None:
    """Two instances see the build's first events at once: the lease lets one create; the other updates."""
    gh_standin.state(github).slow_check_runs = 0.5
    names = ["build.scheduled", "build.running", "build.finished.passed"]
    threads = [threading.Thread(target=quietly, args=(name, str(i))) for i, name in enumerate(names)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    for i, name in enumerate(names):
        quietly(name, str(i))  # whatever was nacked comes again
    (run,) = runs(github)
    assert (run["status"], run["conclusion"]) == ("completed", "success")
    assert len(github.recorded(r"/check-runs$", "POST")) == 1


def test_a_create_whose_answer_was_lost_is_found_again(github: StandIn, capsys: Any) -> None:
    gh_standin.state(github).lost_check_run_answers = 1  # GitHub makes the run; we see a 502
    deliver("build.finished.failed")
    (run,) = runs(github)
    assert run["conclusion"] == "failure"
    assert [m for m, _ in sent(github)] == ["POST", "PATCH"]  # found by external_id, then updated
    lookups = github.recorded(r"/commits/.*/check-runs", "GET")
    assert "external_id" not in lookups[-1].query and f"app_id={APP_ID}" in lookups[-1].query
    assert "filter=all" in lookups[-1].query and "check_name=buildkite%2Fmy-pipeline" in lookups[-1].query
    assert outcomes(capsys) == ["done"]


def test_a_lost_create_is_found_by_the_redelivery_too(github: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "0")  # no retry in the delivery: Pub/Sub's redelivery finds it
    gh_standin.state(github).lost_check_run_answers = 1
    with pytest.raises(Nack, match="502"):
        deliver("build.finished.failed")
    _fresh_instance()
    deliver("build.finished.failed")
    assert len(runs(github)) == 1 and [m for m, _ in sent(github)] == ["POST", "PATCH"]


# -- the failed jobs ---------------------------------------------------------------------------------


def test_failed_jobs_are_listed_with_links(github: StandIn) -> None:
    deliver(job(), "1")
    deliver("build.finished.failed", "2")
    (run,) = runs(github)
    assert run["output"]["title"] == "Build #2042 failed in 5m4s · 1 failed job"
    summary = run["output"]["summary"]
    url = payload("job.finished.failed")["job"]["web_url"]
    assert f"- [\\:rspec\\: RSpec]({url}) (exit status 1)" in summary.splitlines()
    html = cmarkgfm.github_flavored_markdown_to_html(summary)
    assert f'<a href="{url}">:rspec: RSpec</a>' in html and "<h3>1 failed job</h3>" in html
    assert "**Failed** in 5m4s: [build #2042](https://buildkite.com/my-great-org/my-pipeline/builds/2042)" in summary
    assert "of branch **main** at commit b7c3e2d." in summary


def test_a_job_that_fails_after_the_build_finished_updates_the_completed_run(github: StandIn, capsys: Any) -> None:
    deliver("build.finished.failed", "1")
    deliver(job(), "2")  # delivered late
    (run,) = runs(github)
    assert (run["status"], run["conclusion"]) == ("completed", "failure")
    assert "RSpec" in run["output"]["summary"] and run["output"]["title"].endswith("· 1 failed job")
    assert [m for m, _ in sent(github)] == ["POST", "PATCH"] and kept(github) == []
    assert outcomes(capsys) == ["done", "done"]


def test_a_job_event_first_creates_the_run_in_progress(github: StandIn) -> None:
    deliver(job(), "1")
    (run,) = runs(github)
    assert (run["status"], run["output"]["title"]) == ("in_progress", "Build #2042 is failing · 1 failed job")


def test_a_retried_job_that_passed_leaves_the_list(github: StandIn, capsys: Any) -> None:
    first = job(id="01976231-09c5-4d7c-9dc1-aeba69afb3be", name=":capybara: Feature specs")
    deliver(first, "1")
    deliver("job.finished.passed.auto-retry", "2")  # its automatic retry passed
    deliver("job.finished.passed.auto-retry", "3")  # again: nothing changes
    (run,) = runs(github)
    assert "capybara" not in run["output"]["summary"] and "failed job" not in run["output"]["title"]
    assert outcomes(capsys) == ["done", "done", "duplicate"]


def test_a_passed_job_changes_nothing(github: StandIn, capsys: Any) -> None:
    deliver(job(state="passed", exit_status=0), "1")
    assert runs(github) == [] and outcomes(capsys) == ["skipped"]


def test_a_job_another_function_recorded_first_still_shows(github: StandIn) -> None:
    """The per-build record is shared: slack-notify may keep a failed job before github-status sees it."""
    remember_job(parse_delivery(envelope(job())))
    deliver(job(), "1")
    assert "RSpec" in runs(github)[0]["output"]["summary"]


def test_a_job_whose_check_run_failed_to_update_shows_on_redelivery(
    github: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "0")
    github.fail(r"/check-runs$", Fault(status=502, remaining=1))
    with pytest.raises(Nack, match="502"):
        deliver(job(), "1")  # the job is recorded, the run is not created
    deliver(job(), "1")  # Pub/Sub redelivers: the job is recorded already, the run still gets it
    assert "RSpec" in runs(github)[0]["output"]["summary"]


@pytest.mark.parametrize(
    ("name", "fields", "expected"),
    [
        ("job.finished.failed", {}, True),
        ("job.finished.passed.auto-retry", {}, True),  # a retry: its earlier attempt leaves the list
        ("job.finished.failed", {"state": "passed", "exit_status": 0}, False),
        ("job.finished.failed", {"soft_failed": True}, False),
        ("job.started", {}, False),
    ],
)
def test_which_jobs_can_change_the_failed_jobs(name: str, fields: dict[str, Any], expected: bool) -> None:
    body = payload(name)
    body["job"].update(fields)
    assert affects_failed_jobs(parse_delivery(envelope(body))) is expected


def test_untrusted_names_and_branches_stay_text(github: StandIn) -> None:
    hostile = "x@evil.example [click](https://evil.example) **bold** <img src=x onerror=alert(1)> `code` | a | b |"
    deliver(job(name=hostile, web_url="https://buildkite.com/o/p/builds/1#(job) x"), "1")
    failing = payload("build.failing")
    failing["build"]["branch"] = "feat/<script>*x*_[y](z)"
    deliver(failing, "2")
    html = cmarkgfm.github_flavored_markdown_to_html(runs(github)[0]["output"]["summary"])
    assert "<img" not in html and "<script" not in html and "<em>" not in html and "<code>" not in html
    assert 'href="https://evil.example' not in html and "<table>" not in html and "<h1>" not in html
    assert html.count("<a href=") == 2  # the build and the job, nothing else
    assert 'href="https://buildkite.com/o/p/builds/1#%28job%29%20x"' in html
    assert "[click](https://evil.example) **bold** &lt;img src=x" in html
    assert "mailto:" not in html and "x@\u2060evil.example" in html  # no mail link either


def test_summaries_fit_githubs_limits() -> None:
    value = checks.plan_check(
        parse_delivery(envelope(payload("build.finished.failed"))),
        api.Target(REPO, SHA_2042, NAME),
    ).value
    url = "https://buildkite.com/" + "p" * 480

    @settings(max_examples=40, deadline=None)
    @given(st.text(min_size=1, max_size=300), st.integers(min_value=0, max_value=600))
    def check(name: str, count: int) -> None:
        jobs = [FailedJob(f"j{i}", name, url, 1, "failed", None) for i in range(count)]
        summary = checks.summary(value, jobs)
        assert len(summary) <= checks.SUMMARY_LIMIT
        lines = [line for line in summary.splitlines() if line.startswith("- ")]
        assert len(lines) == min(count, checks.LISTED_JOBS) + (1 if count > checks.LISTED_JOBS else 0)
        assert len(checks.title(value, jobs)) <= checks.TITLE_LIMIT + 20

    check()
    many = [FailedJob(f"j{i}", "\\" * 200, url, 1, "failed", None) for i in range(500)]
    summary = checks.summary(value, many)
    assert summary.splitlines()[-1].startswith("- …and 450 more: see [the build](") and len(summary) < 65535


# -- reports side by side -------------------------------------------------------------------------------


def test_both_sends_statuses_and_check_runs(github: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("GITHUB_REPORT", "both")
    _fresh_instance()
    deliver("build.running", "1")
    deliver("build.finished.passed", "2")
    assert [s["state"] for s in reversed(gh_standin.statuses(github, REPO, SHA_2041))] == ["pending", "success"]
    (run,) = runs(github)
    assert run["conclusion"] == "success"
    messages = [line["message"] for line in log_lines(capsys.readouterr().out) if "outcome" in line]
    assert all("set " in m and "check run" in m for m in messages)


def test_statuses_only_ignores_jobs(github: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("GITHUB_REPORT", "statuses")
    _fresh_instance()
    deliver(job(), "1")
    deliver("build.finished.failed", "2")
    assert runs(github) == [] and len(gh_standin.statuses(github, REPO, SHA_2042)) == 1
    assert outcomes(capsys) == ["skipped", "done"]


# -- the App, per repository -------------------------------------------------------------------------


def installation_lookups(server: StandIn) -> list[str]:
    return [r.path for r in server.recorded(r"/installation$", "GET")]


def _in(repo: str, body: str | dict[str, Any] = "build.finished.failed") -> dict[str, Any]:
    """The event as if its pipeline built ``repo`` (another repository: another build)."""
    event = copy.deepcopy(payload(body) if isinstance(body, str) else body)
    event["pipeline"]["provider"]["settings"]["repository"] = repo
    if repo != REPO:
        event["build"]["id"] += "-" + repo.replace("/", "-")
    return event


def test_installations_are_found_per_repository_and_kept(github: StandIn, app_key: tuple[str, str]) -> None:
    gh_standin.add_repo(github, "other-org/service")
    gh_standin.install_app(github, APP_ID, "555", "other-org")
    for i, name in enumerate(("build.scheduled", "build.running", "build.finished.passed")):
        deliver(_in(REPO, name), f"a{i}")
        deliver(_in("other-org/service", name), f"b{i}")
    assert installation_lookups(github) == [
        f"/github/repos/{REPO}/installation",
        "/github/repos/other-org/service/installation",
    ]
    tokens = github.recorded(r"/access_tokens$", "POST")
    assert [t.path.split("/")[-2] for t in tokens] == [INSTALLATION, "555"]  # one token per installation
    assert [r["conclusion"] for r in runs(github)] == ["success"]
    assert [r["conclusion"] for r in runs(github, "other-org/service")] == ["success"]


def test_a_repository_without_the_app_is_a_config_error(github: StandIn, capsys: Any) -> None:
    gh_standin.add_repo(github, "elsewhere/repo")
    with pytest.raises(Nack, match="GitHub App 123456 is not installed on elsewhere/repo"):
        deliver(_in("elsewhere/repo"))
    (line,) = [line for line in log_lines(capsys.readouterr().out) if "outcome" in line]
    assert line["outcome"] == "config_error" and "dead-letter queue" in line["message"]
    gh_standin.install_app(github, APP_ID, "777", "elsewhere")  # the operator installs it and replays
    deliver(_in("elsewhere/repo"))
    assert len(runs(github, "elsewhere/repo")) == 1


def test_an_app_reinstalled_under_a_new_id_is_looked_up_again(github: StandIn) -> None:
    deliver("build.running", "1")
    state = gh_standin.state(github)
    del state.installations[INSTALLATION]  # uninstalled: its tokens stop working...
    gh_standin.install_app(github, APP_ID, "424242", "my-great-org")  # ...and installed again
    deliver("build.finished.passed", "2")
    assert runs(github)[0]["conclusion"] == "success"
    assert len(installation_lookups(github)) == 2


def test_a_configured_installation_is_used_without_lookup(github: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GITHUB_APP_INSTALLATION_ID", INSTALLATION)
    _fresh_instance()
    deliver("build.finished.passed")
    assert installation_lookups(github) == [] and len(runs(github)) == 1


def test_an_installation_without_checks_permission_is_a_config_error(github: StandIn) -> None:
    gh_standin.state(github).installations[INSTALLATION].permissions = {"statuses": "write", "metadata": "read"}
    with pytest.raises(Nack, match="needs the Checks: read and write permission"):
        deliver("build.finished.passed")
    assert runs(github) == []


def test_a_repository_the_app_cannot_see_is_a_config_error(github: StandIn) -> None:
    gh_standin.hide_repo(github, REPO)
    with pytest.raises(Nack, match="not installed on my-great-org/my-pipeline"):
        deliver("build.finished.passed")


def test_an_unknown_commit_is_acked(github: StandIn, capsys: Any) -> None:
    gh_standin.add_repo(github, REPO, commits={SHA_2042})
    deliver("build.finished.passed")
    assert outcomes(capsys) == ["invalid"] and runs(github) == []


def test_rate_limits_and_server_errors_are_retried(github: StandIn, capsys: Any) -> None:
    gh_standin.secondary_rate_limit(github, count=1, retry_after=0.5, status=429)
    github.fail(r"/check-runs$", Fault(status=502, remaining=1))
    deliver("build.finished.passed")
    assert outcomes(capsys) == ["done"] and len(runs(github)) == 1


# -- GHE.com and GitHub Enterprise Server -----------------------------------------------------------


@pytest.mark.parametrize(
    ("api_url", "host", "accepted", "refused"),
    [
        ("https://api.github.com", "github.com", "git@github.com:o/r.git", "git@acme.ghe.com:o/r.git"),
        ("https://api.acme.ghe.com", "acme.ghe.com", "git@acme.ghe.com:o/r.git", "https://other.ghe.com/o/r"),
        ("https://api.acme.ghe.com", "acme.ghe.com", "https://acme.ghe.com/o/r.git", "git@gitlab.com:o/r.git"),
        (
            "https://ghe.example.test/api/v3",
            "ghe.example.test",
            "ssh://git@ghe.example.test/o/r.git",
            "git@acme.ghe.com:o/r.git",
        ),
    ],
)
def test_github_hosts(api_url: str, host: str, accepted: str, refused: str) -> None:
    config = fn.Config(api_url=api_url, token="t")
    assert config.host == host
    event = parse_delivery(envelope(payload("build.finished.passed")))
    pipeline = event.data["pipeline"]
    for url, expected in ((accepted, "o/r"), (refused, None)):
        pipeline["provider"] = {"id": "private"}
        pipeline["repository"] = url
        event.__dict__.pop("pipeline", None)  # the typed view is cached per event
        try:
            assert api.repository_of(event, config.host) == expected
        except api.NotOnGitHub:
            assert expected is None


# -- the stand-in answers as GitHub documents ---------------------------------------------------------


def _jwt(key: str, **claims: Any) -> str:
    import jwt

    now = int(time.time())
    return jwt.encode({"iat": now - 60, "exp": now + 500, "iss": APP_ID, **claims}, key, algorithm="RS256")


def test_the_stand_in_checks_the_apps_jwt(github: StandIn, app_key: tuple[str, str]) -> None:
    import jwt

    url = f"{github.url}/github/repos/{REPO}/installation"
    now = int(time.time())
    for assertion, expected in (
        (_jwt(app_key[0]), 200),
        (_jwt(app_key[0], exp=now + 3600), 401),  # more than 10 minutes
        (_jwt(app_key[0], iat=now + 120, exp=now + 300), 401),  # issued in the future
        (_jwt(app_key[0], iss="999"), 401),  # another App
        (jwt.encode({"iat": now, "exp": now + 60, "iss": APP_ID}, "secret" * 8, algorithm="HS256"), 401),
        (gh_standin.generate_key()[0] and _jwt(gh_standin.generate_key()[0]), 401),  # another key
    ):
        answer = requests.get(url, headers={"Authorization": f"Bearer {assertion}"}, timeout=5)
        assert answer.status_code == expected, answer.text
    jsonschema.validate(
        requests.get(url, headers={"Authorization": f"Bearer {_jwt(app_key[0])}"}, timeout=5).json(),
        SCHEMAS["repo_installation"]["response_200"],
    )


def test_the_stand_in_answers_check_runs_as_documented(github: StandIn, app_key: tuple[str, str]) -> None:
    base = f"{github.url}/github/repos/{REPO}"
    minted = requests.post(
        f"{github.url}/github/app/installations/{INSTALLATION}/access_tokens",
        headers={"Authorization": f"Bearer {_jwt(app_key[0])}"},
        timeout=5,
    ).json()["token"]
    app = {"Authorization": f"Bearer {minted}"}
    body = {"name": NAME, "head_sha": SHA_2041, "status": "in_progress", "external_id": "b1"}
    created = requests.post(f"{base}/check-runs", json=body, headers=app, timeout=5)
    assert created.status_code == 201
    jsonschema.validate(created.json(), SCHEMAS["create_check_run"]["response_201"])
    run_url = f"{base}/check-runs/{created.json()['id']}"
    done = requests.patch(
        run_url, json={"conclusion": "failure", "output": {"title": "t", "summary": "s"}}, headers=app, timeout=5
    )
    assert done.status_code == 200 and done.json()["status"] == "completed"
    jsonschema.validate(done.json(), SCHEMAS["update_check_run"]["response_200"])
    again = requests.patch(run_url, json={"status": "in_progress"}, headers=app, timeout=5)
    assert again.json()["status"] == "completed" and len(kept(github)) == 1  # GitHub keeps it completed
    listed = requests.get(f"{base}/commits/{SHA_2041}/check-runs", headers=app, timeout=5)
    jsonschema.validate(listed.json(), SCHEMAS["list_check_runs"]["response_200"])
    assert listed.json()["total_count"] == 1

    gh_standin.allow_token(github, "ghp_personal")
    personal = {"Authorization": "Bearer ghp_personal"}
    refused = requests.post(f"{base}/check-runs", json=body, headers=personal, timeout=5)
    assert (refused.status_code, refused.json()["message"]) == (403, "You must authenticate via a GitHub App.")
    for bad in ({**body, "status": "completed"}, {**body, "conclusion": "stale"}, {**body, "output": {"title": "t"}}):
        assert requests.post(f"{base}/check-runs", json=bad, headers=app, timeout=5).status_code == 422
    long = {**body, "output": {"title": "t", "summary": "x" * 65536}}
    assert requests.post(f"{base}/check-runs", json=long, headers=app, timeout=5).status_code == 422
