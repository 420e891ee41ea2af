"""teams-notify end to end: the real function (functions-framework), real requests, a local
server answering like a Teams Workflows webhook, Firestore's emulator for the build and
branch records. Every message sent is checked for the envelope's shape, its size and, card by card,
against the Adaptive Card 1.4 JSON schema."""

from __future__ import annotations

import json
import re
import threading
import time
from collections.abc import Iterator
from functools import cache
from pathlib import Path
from typing import Any

import pytest

from buildkite_events import Nack
from buildkite_events.text import clusters
from tests.support import (
    cloud_event,
    count_firestore,
    envelope,
    load_function,
    log_lines,
    mcncl,
    payload,
    payload_names,
)
from tools.local.standin import Fault, StandIn
from tools.local.standins import teams as teams_api

fn: Any = load_function("teams-notify")
MAIN = Path(fn.__file__)
SCHEMA = MAIN.parent / "testdata" / "adaptive-card-1.4.schema.json"
SIGNATURE = "s3cr3t-signature-0123456789"
CONFIG_VARS = ("TEAMS_NOTIFY_STATES", "TEAMS_PIPELINES", "TEAMS_TIMEOUT_SECONDS", "RETRY_BUDGET_SECONDS")
INVOKE = r"/teams/workflows/.*/invoke"


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    with StandIn() as standin:  # one per module: stopping one takes half a second
        teams_api.register(standin)
        yield standin


@pytest.fixture
def teams(server: StandIn, firestore: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    """The stand-in, emptied, with the function posting to its workflow "tests", on a clean Firestore."""
    server.reset()
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TEAMS_WEBHOOK_URL", teams_api.add_workflow(server, "tests", SIGNATURE))
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "0")  # nack at once unless a test allows retries
    fn.notify_teams.instance.reset()
    yield server
    fn.notify_teams.instance.reset()


def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    fn.notify_teams.instance.reset()


def deliver(body: dict[str, Any] | bytes, *, message_id: str = "1000", attributes: Any = None) -> None:
    fn.notify_teams(cloud_event(envelope(body, attributes, message_id=message_id)))


def outcome_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [line for line in log_lines(capsys.readouterr().out) if "outcome" in line]


def failed_build(**changes: Any) -> dict[str, Any]:
    """The failed-build fixture, changed; another ``number`` is another build (its own id)."""
    body = payload("build.finished.failed")
    if "number" in changes:
        body["build"]["id"] = f"01976230-0000-4000-8000-{int(changes['number']):012d}"
    body["build"].update(changes)
    return body


def sent(server: StandIn) -> list[bytes]:
    """The bodies the webhook received, in order (refused ones too)."""
    return [request.body for request in server.recorded(INVOKE)]


def serve() -> Any:
    """The function as functions-framework serves it (its own copy of main.py, a new instance)."""
    import functions_framework

    create_app: Any = functions_framework.create_app
    return create_app(target="notify_teams", source=str(MAIN), signature_type="cloudevent")


# --- what a valid, inert message is --------------------------------------------------------


@cache
def validator() -> Any:
    from jsonschema import Draft6Validator

    schema = json.loads(SCHEMA.read_text())
    Draft6Validator.check_schema(schema)
    return Draft6Validator(schema, format_checker=Draft6Validator.FORMAT_CHECKER)


UNESCAPED = r"(?<!\\)"


def assert_valid_and_inert(body: bytes, allowed_urls: set[str]) -> dict[str, Any]:
    """The envelope Workflows expects, under 28 KB, its card valid against the 1.4 schema; no
    markdown link, image, mention or formatting can come from the event. Returns the card."""
    assert len(body) <= fn.MAX_MESSAGE_BYTES <= teams_api.MAX_MESSAGE_BYTES
    message = json.loads(body)
    assert set(message) == {"type", "attachments"} and message["type"] == "message"
    (attachment,) = message["attachments"]
    assert attachment == {"contentType": "application/vnd.microsoft.card.adaptive", "contentUrl": None, **attachment}
    assert set(attachment) == {"contentType", "contentUrl", "content"}
    card = attachment["content"]
    errors = sorted(validator().iter_errors(card), key=lambda e: list(e.absolute_path))
    assert not errors, [f"{list(e.absolute_path)}: {e.message[:200]}" for e in errors]
    assert card["version"] == "1.4" and card["$schema"] == "http://adaptivecards.io/schemas/adaptive-card.json"
    assert teams_api.post_card_error(message, len(body)) is None

    markdown = [card["fallbackText"]]
    for element in card["body"]:
        if element["type"] == "TextBlock":
            markdown.append(element["text"])
        elif element["type"] == "FactSet":
            markdown += [part for fact in element["facts"] for part in (fact["title"], fact["value"])]
        elif element["type"] == "RichTextBlock":  # TextRuns take no markdown; still no bidi tricks
            assert all(not re.search(r"[\u202a-\u202e\u2066-\u2069]", run["text"]) for run in element["inlines"])
            for run in element["inlines"]:  # a job's name opens the job, and nothing else
                if "selectAction" in run:
                    assert run["selectAction"]["type"] == "Action.OpenUrl"
                    assert run["selectAction"]["url"] in allowed_urls
    for text in markdown:
        assert not re.search(UNESCAPED + r"\[", text), text  # no link or image can open
        assert not re.search(UNESCAPED + r"[<>*_`~{}]", text), text  # no tag, emphasis, code, {{DATE}}
        assert not re.search(r"[\u202a-\u202e\u2066-\u2069\ud800-\udfff\x00-\x1f]", text), text
    for action in card.get("actions", []):
        assert action["type"] == "Action.OpenUrl" and action["url"] in allowed_urls
    return card  # type: ignore[no-any-return]


def facts(card: dict[str, Any]) -> dict[str, str]:
    (fact_set,) = [element for element in card["body"] if element["type"] == "FactSet"]
    return {fact["title"]: fact["value"] for fact in fact_set["facts"]}


def commit_line(card: dict[str, Any]) -> str | None:
    rich = [element for element in card["body"] if element["type"] == "RichTextBlock"]
    return "".join(run["text"] for run in rich[0]["inlines"]) if rich else None


BUILD_URL = "https://buildkite.com/my-great-org/my-pipeline/builds/2042"


# --- every fixture, as Pub/Sub and Eventarc deliver it ---------------------------------------


@pytest.mark.parametrize("name", payload_names())
def test_every_fixture_served_by_functions_framework(teams: StandIn, name: str, capsys: Any) -> None:
    app = serve()
    body = payload(name)
    response = app.test_client().post("/", json=envelope(body, message_id=f"m-{name}"))
    assert response.status_code == 200

    (line,) = outcome_lines(capsys)
    if body["event"] == "job.finished":  # recorded for its build's card; nothing posted
        assert line["outcome"] == "done", line
        assert sent(teams) == []
    elif body["event"] == "build.finished":
        assert line["outcome"] == "done", line
        assert re.fullmatch(r"done: posted card to Teams \(202 Accepted, run 0858\w+\)", line["message"])
        (posted,) = sent(teams)
        assert_valid_and_inert(posted, {body["build"]["web_url"]})
        ((run),) = teams_api.runs(teams)
        assert run["status"] == "Succeeded" and run["workflow"] == "tests"
    else:
        assert line["outcome"] == "filtered"
        assert sent(teams) == []


def test_an_eventarc_cloudevent_and_a_raw_push_both_post(teams: StandIn, capsys: Any) -> None:
    app = serve()
    client = app.test_client()
    headers = {
        "ce-id": "42",
        "ce-source": "//pubsub.googleapis.com/projects/p/topics/buildkite-events",
        "ce-type": "google.cloud.pubsub.topic.v1.messagePublished",
        "ce-specversion": "1.0",
    }
    assert client.post("/", json=envelope(failed_build(number=1)), headers=headers).status_code == 200
    assert client.post("/", json=envelope(failed_build(number=2))).status_code == 200
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["done", "done"]
    assert len(teams_api.cards(teams)) == 2


# --- the card --------------------------------------------------------------------------------


def test_a_failed_build_reads_well(teams: StandIn) -> None:
    deliver(payload("build.finished.failed"))
    (body,) = sent(teams)
    card = assert_valid_and_inert(body, {BUILD_URL})
    title = card["body"][0]
    assert title == {
        "type": "TextBlock",
        "text": "🔴 My Pipeline #2042 failed",
        "size": "Large",
        "weight": "Bolder",
        "color": "Attention",
        "wrap": True,
    }
    assert commit_line(card) == "Refactor session store"
    assert facts(card) == {
        "Pipeline": "My Pipeline",
        "Build": "#2042",
        "Branch": "main",
        "Commit": "b7c3e2d",
        "Author": "Keith Pitt",
        "State": "failed",
        "Duration": "5m4s",
    }
    assert card["actions"] == [{"type": "Action.OpenUrl", "title": "View Build", "url": BUILD_URL}]
    assert card["fallbackText"] == "My Pipeline #2042 failed"
    assert teams_api.render_card(card) == [
        "🔴 My Pipeline #2042 failed",
        "“Refactor session store”",
        "Pipeline: My Pipeline | Build: #2042 | Branch: main | Commit: b7c3e2d | Author: Keith Pitt | "
        "State: failed | Duration: 5m4s",
        "my-great-org · via webhook · finished 2025-06-12 03:36 UTC",
        f"[View Build] {BUILD_URL}",
    ]


def test_each_state_has_its_own_title(teams: StandIn) -> None:
    for name in ("passed", "blocked", "canceled", "blocked.failed"):
        deliver(payload(f"build.finished.{name}"))
    titles = [(card["body"][0]["text"], card["body"][0]["color"]) for card in teams_api.cards(teams)]
    assert titles == [
        ("✅ My Pipeline #2041 passed", "Good"),
        ("⏸️ My Pipeline #2043 is blocked", "Warning"),
        ("⛔ My Pipeline #2044 was canceled", "Warning"),
        ("🔴 My Pipeline #2047 failed (broke main)", "Attention"),  # its block step set the build to failed
    ]


HOSTILE = (
    "[click here](http://evil.example) ![x](http://evil.example/p.png) <at>Admin</at> **bold** _it_ "
    "`code` ~~gone~~ {{DATE(2017-02-14T06:08:39Z, SHORT)}} <http://evil.example> <!channel>"
)


def test_hostile_text_cannot_link_mention_or_format(teams: StandIn) -> None:
    body = failed_build(
        message=HOSTILE,
        branch="[main](http://evil.example)",
        author={"name": "<at>Everyone</at>", "email": "x@example.com"},
        creator={"name": "# Heading"},
    )
    body["pipeline"]["name"] = "- [My Pipeline](http://evil.example)"
    deliver(body)
    (sent_body,) = sent(teams)
    card = assert_valid_and_inert(sent_body, {BUILD_URL})
    assert commit_line(card) == HOSTILE  # a TextRun: shown exactly as written, nothing interpreted
    values = facts(card)
    assert values["Branch"] == r"\[main\](http://evil.example)"
    assert values["Author"] == r"\<at\>Everyone\</at\>"
    assert values["Triggered by"] == r"\# Heading"
    assert values["Pipeline"] == r"\- \[My Pipeline\](http://evil.example)"
    rendered = teams_api.render_card(card)
    assert rendered[2].startswith("Pipeline: - [My Pipeline](http://evil.example) | Build: #2042")


@pytest.mark.parametrize(
    "message",
    ["a" * 20_000, "[" * 20_000, "👩\u200d👩\u200d👧\u200d👦" * 3000, "e\u0301" * 10_000, "🇳🇿" * 5000],
    ids=["ascii", "brackets", "zwj-family", "combining", "flags"],
)
def test_20000_character_messages_stay_under_28_kb(teams: StandIn, message: str) -> None:
    deliver(failed_build(message=message))
    (body,) = sent(teams)
    card = assert_valid_and_inert(body, {BUILD_URL})
    line = commit_line(card)
    assert line is not None and line.endswith("…") and fn.units(line) <= fn.MESSAGE_LIMIT
    kept = line[:-1]
    assert message.startswith(kept)
    assert list(clusters(kept)) == list(clusters(message))[: len(list(clusters(kept)))]


def test_everything_huge_at_once_still_fits(teams: StandIn) -> None:
    huge = "𝔘\u0301<[" * 5000
    body = failed_build(message=huge, branch=huge, commit=huge, author={"name": huge}, creator={"name": huge[::-1]})
    body["pipeline"]["name"] = huge
    body["organization"] = {"slug": huge}
    deliver(body)
    (sent_body,) = sent(teams)
    assert len(sent_body) <= fn.MAX_MESSAGE_BYTES
    card = assert_valid_and_inert(sent_body, {BUILD_URL})
    assert all(fn.units(value) <= fn.VALUE_LIMIT for value in facts(card).values())
    title = card["body"][0]["text"]
    assert title.endswith("… #2042 failed") and fn.units(title) <= fn.TITLE_LIMIT + 3


def test_a_secret_stored_with_a_trailing_newline_still_works(teams: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, TEAMS_WEBHOOK_URL=teams_api.webhook_url(teams, "tests") + "\n")
    deliver(payload("build.finished.failed"))
    assert len(teams_api.cards(teams)) == 1


def test_emoji_and_right_to_left_text_survive_but_bidi_overrides_do_not(teams: StandIn) -> None:
    deliver(failed_build(message="🚀 תיקון באג \u202eevil\u202c مرحبا", branch="\u2067עברית\u2069/🔥"))
    (body,) = sent(teams)
    card = assert_valid_and_inert(body, {BUILD_URL})
    assert commit_line(card) == "🚀 תיקון באג evil مرحبا"
    assert facts(card)["Branch"] == "עברית/🔥"


def test_null_author_creator_and_message_commit_head_and_no_finished_at(teams: StandIn) -> None:
    body = failed_build(author=None, creator=None, message=None, commit="HEAD")
    del body["build"]["finished_at"]
    deliver(body)
    (sent_body,) = sent(teams)
    card = assert_valid_and_inert(sent_body, {BUILD_URL})
    assert commit_line(card) is None
    assert facts(card) == {
        "Pipeline": "My Pipeline",
        "Build": "#2042",
        "Branch": "main",
        "Commit": "HEAD",
        "State": "failed",
    }


def test_no_web_url_means_no_button(teams: StandIn) -> None:
    deliver(failed_build(web_url="javascript:alert(1)"))
    (body,) = sent(teams)
    assert "actions" not in assert_valid_and_inert(body, set())


def test_a_message_in_mcncl_format_posts(teams: StandIn) -> None:
    data, attributes = mcncl("build.finished.failed")
    deliver(data, attributes=attributes)
    (body,) = sent(teams)
    card = assert_valid_and_inert(body, {BUILD_URL})
    assert card["body"][0]["text"] == "🔴 My Pipeline #2042 failed"
    assert commit_line(card) == "Refactor session store"
    assert facts(card)["Author"] == "Keith Pitt"


def test_malformed_events_are_acked_without_posting(teams: StandIn, capsys: Any) -> None:
    deliver(b"\xff\xfe", attributes={"event_type": "build.finished"})
    deliver({"event": "build.finished", "build": None})
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["invalid", "invalid"]
    assert sent(teams) == []


# --- which builds post -----------------------------------------------------------------------


def test_configured_states_and_pipelines(teams: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    configure(monkeypatch, TEAMS_NOTIFY_STATES="failed,blocked", TEAMS_PIPELINES="other, my-*@main")
    for name in ("build.finished.passed", "build.finished.blocked", "build.finished.failed"):
        deliver(payload(name))
    deliver(failed_build(number=7, branch="feature/x"))
    lines = outcome_lines(capsys)
    assert [line["outcome"] for line in lines] == ["skipped", "done", "done", "skipped"]
    assert lines[0]["message"] == "skipped: state passed not notified"
    assert lines[3]["message"] == "skipped: my-pipeline@feature/x is not in TEAMS_PIPELINES"
    assert [card["body"][0]["text"] for card in teams_api.cards(teams)] == [
        "⏸️ My Pipeline #2043 is blocked",
        "🔴 My Pipeline #2042 failed (broke main)",  # #2041 passed on main before it
    ]


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("TEAMS_WEBHOOK_URL", "http://prod-1.westus.logic.azure.com/workflows/x?sig=leak-me-123", "https URL"),
        ("TEAMS_WEBHOOK_URL", "", "TEAMS_WEBHOOK_URL is required"),
        ("TEAMS_NOTIFY_STATES", "failed,cancelled", "Buildkite spells it canceled"),
        ("TEAMS_PIPELINES", "api@", "not pipeline-glob[@branch-glob]"),
        ("TEAMS_TIMEOUT_SECONDS", "0", "more than 0"),
    ],
)
def test_bad_configuration_nacks_and_names_the_variable(
    teams: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any, variable: str, value: str, expected: str
) -> None:
    configure(monkeypatch, **{variable: value})
    with pytest.raises(Nack, match=re.escape(expected)) as raised:
        deliver(payload("build.finished.failed"))
    output = capsys.readouterr().out
    assert [line["outcome"] for line in log_lines(output) if "outcome" in line] == ["config_error"]
    assert "leak-me-123" not in output + raised.value.description
    assert sent(teams) == []


# --- the webhook's answers -------------------------------------------------------------------


def test_throttling_is_retried_after_retry_after(teams: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    configure(monkeypatch, RETRY_BUDGET_SECONDS="10")
    teams_api.throttle(teams, count=2, retry_after=1)
    started = time.monotonic()
    deliver(payload("build.finished.failed"))
    assert time.monotonic() - started >= 1.0
    assert len(sent(teams)) == 3 and len(teams_api.cards(teams)) == 1
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["done"]


def test_a_long_retry_after_nacks_at_once(teams: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    configure(monkeypatch, RETRY_BUDGET_SECONDS="30")
    teams_api.throttle(teams, count=1, retry_after=600)
    started = time.monotonic()
    with pytest.raises(Nack, match=r"answered 429 WorkflowTriggerIsThrottled \(Retry-After 600s\)"):
        deliver(payload("build.finished.failed"))
    assert time.monotonic() - started < 5
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["retry"]


def test_a_server_error_is_retried_then_posts(teams: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, RETRY_BUDGET_SECONDS="10")
    teams.fail(INVOKE, Fault(502, remaining=1))
    deliver(payload("build.finished.failed"))
    assert len(sent(teams)) == 2 and len(teams_api.cards(teams)) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(500, remaining=10),
        Fault(503, body=b"<html>busy</html>", remaining=10),
        Fault(202, delay=1.5, remaining=10),
    ],
    ids=["500", "503-html", "timeout"],
)
def test_outages_and_timeouts_nack_for_redelivery(
    teams: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any, fault: Fault
) -> None:
    configure(monkeypatch, TEAMS_TIMEOUT_SECONDS="0.5")
    teams.fail(INVOKE, fault)
    started = time.monotonic()
    with pytest.raises(Nack, match="gave up for now") as raised:
        deliver(payload("build.finished.failed"))
    assert time.monotonic() - started < 5
    output = capsys.readouterr().out
    assert [line["outcome"] for line in log_lines(output) if "outcome" in line] == ["retry"]
    assert SIGNATURE not in output + raised.value.description


@pytest.mark.parametrize(
    ("break_it", "expected"),
    [
        ("wrong-signature", "401 DirectApiInvalidAuthorizationSignature"),
        ("no-signature", "401 DirectApiAuthorizationRequired"),
        ("deleted", "404 WorkflowNotFound"),
        ("forbidden", "403"),
        ("bad-request", "400 InvalidRequestContent"),
    ],
)
def test_refusals_an_operator_must_fix_are_config_errors(
    teams: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any, break_it: str, expected: str
) -> None:
    if break_it == "wrong-signature":
        configure(monkeypatch, TEAMS_WEBHOOK_URL=teams_api.webhook_url(teams, "tests", signature="guess"))
    elif break_it == "no-signature":
        configure(monkeypatch, TEAMS_WEBHOOK_URL=teams_api.webhook_url(teams, "tests", signature=""))
    elif break_it == "deleted":
        teams_api.delete_workflow(teams, "tests")
    elif break_it == "forbidden":
        teams.fail(INVOKE, Fault(403, body={"error": {"code": "WorkflowDisabled"}}))
    else:
        teams.fail(INVOKE, Fault(400, body={"error": {"code": "InvalidRequestContent", "message": "echo sig=x"}}))
    with pytest.raises(Nack, match=re.escape(expected)) as raised:
        deliver(payload("build.finished.failed"))
    output = capsys.readouterr()
    (line,) = [line for line in log_lines(output.out) if "outcome" in line]
    assert line["outcome"] == "config_error" and "dead-letter queue" in line["message"]
    assert "teams-notify-teams-webhook-url" in line["message"] or "workflow" in line["message"]
    assert len(sent(teams)) == 1  # no retry: it cannot help
    assert SIGNATURE not in output.out + output.err + raised.value.description
    assert "/teams/workflows/tests" not in output.out + raised.value.description


# --- once per event --------------------------------------------------------------------------


def test_a_redelivered_message_posts_once(teams: StandIn, capsys: Any) -> None:
    push = envelope(payload("build.finished.failed"), message_id="m-1")
    fn.notify_teams(cloud_event(push))
    fn.notify_teams(cloud_event(push))
    deliver(payload("build.finished.failed"), message_id="m-2")  # the webhook sent again: a new message id
    lines = outcome_lines(capsys)
    assert [line["outcome"] for line in lines] == ["done", "skipped", "skipped"]
    assert lines[1]["message"] == "skipped: posted the build's card already"
    assert len(sent(teams)) == 1


def test_two_racing_deliveries_post_once(teams: StandIn) -> None:
    push = envelope(payload("build.finished.failed"))
    barrier = threading.Barrier(2)
    results: list[str] = []

    def deliver_push() -> None:
        barrier.wait()
        try:
            fn.notify_teams(cloud_event(push))
            results.append("acked")
        except Nack:
            results.append("nacked")  # the loser: Pub/Sub redelivers it and it finds the event done

    threads = [threading.Thread(target=deliver_push) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) in (["acked", "nacked"], ["acked", "acked"])
    fn.notify_teams(cloud_event(push))  # the redelivery
    assert len(sent(teams)) == 1 and len(teams_api.cards(teams)) == 1


def test_a_failed_attempt_leaves_the_event_for_the_redelivery(teams: StandIn) -> None:
    teams.fail(INVOKE, Fault(500))
    push = envelope(payload("build.finished.failed"))
    with pytest.raises(Nack):
        fn.notify_teams(cloud_event(push))
    fn.notify_teams(cloud_event(push))
    fn.notify_teams(cloud_event(push))
    assert len(sent(teams)) == 2 and len(teams_api.cards(teams)) == 1


def test_the_stand_in_report_renders_cards_and_failed_runs(teams: StandIn) -> None:
    deliver(failed_build(message=HOSTILE))
    url = teams_api.webhook_url(teams, "tests")
    import requests

    assert requests.post(url, json={"text": "a MessageCard-style body"}, timeout=5).status_code == 202
    assert requests.post(url, data=b"{not json", timeout=5).status_code == 400
    title, lines = teams_api.report(teams)
    assert title == (
        "Microsoft Teams (stand-in Workflows webhook): 1 card(s) posted, 1 run(s) failed, "
        "1 request(s) refused (InvalidRequestContent)"
    )
    assert lines[0].startswith("workflow tests, run 0858") and ": Succeeded (" in lines[0]
    assert lines[1] == "  🔴 My Pipeline #2042 failed"
    assert lines[2] == "  “" + HOSTILE + "”"
    assert lines[-2].endswith(": Failed (36 bytes)")
    assert lines[-1] == '  ! the body is not a message ({"type": "message", "attachments": [...]})'


# --- where the build stands, and its failed jobs ------------------------------------------------


def job(**changes: Any) -> dict[str, Any]:
    body = payload("job.finished.failed")
    body["job"].update(changes)
    return body


def test_the_card_names_the_failed_jobs_recorded_before_it(teams: StandIn, capsys: Any) -> None:
    urls = {f"https://buildkite.com/a/b/builds/2042#job-{index}" for index in range(7)}
    jobs = [
        job(
            id=f"job-{index}",
            name="[click](http://evil.example) **x**" if index == 0 else f"Shard {index}",
            web_url=f"https://buildkite.com/a/b/builds/2042#job-{index}",
            finished_at=f"2025-06-12T03:3{index}:00.000Z",
            exit_status=index + 1,
        )
        for index in range(7)
    ]
    for body in [*jobs, jobs[0]]:  # the last one a redelivery: nothing new to record
        deliver(body)
    assert sent(teams) == []
    deliver(payload("build.finished.failed"))
    card = assert_valid_and_inert(sent(teams)[0], {BUILD_URL} | urls)
    rows = teams_api.render_card(card)
    start = rows.index("Failed jobs")
    assert rows[start + 1 : start + 7] == [
        "[click](http://evil.example) **x** <https://buildkite.com/a/b/builds/2042#job-0> — exit 1",
        "Shard 1 <https://buildkite.com/a/b/builds/2042#job-1> — exit 2",
        "Shard 2 <https://buildkite.com/a/b/builds/2042#job-2> — exit 3",
        "Shard 3 <https://buildkite.com/a/b/builds/2042#job-3> — exit 4",
        "Shard 4 <https://buildkite.com/a/b/builds/2042#job-4> — exit 5",
        "and 2 more",
    ]
    outcomes = [line["outcome"] for line in outcome_lines(capsys)]
    assert outcomes == ["done"] * 7 + ["skipped", "done"]


def test_streaks_broken_and_fixed_in_the_title(teams: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, TEAMS_NOTIFY_STATES="failed,fixed")
    for number, state in ((2250, "passed"), (2251, "failed"), (2252, "failed"), (2253, "passed"), (2254, "passed")):
        deliver(failed_build(number=number, state=state, finished_at=f"2025-06-12T04:{number - 2200:02d}:00.000Z"))
    cards = teams_api.cards(teams)
    assert [(card["body"][0]["text"], card["body"][0]["color"]) for card in cards] == [
        ("🔴 My Pipeline #2251 failed (broke main)", "Attention"),
        ("🔴 My Pipeline #2252 failed (2nd failure in a row on main)", "Attention"),
        ("✅ My Pipeline #2253 fixed main (passed after 2 failures)", "Good"),
    ]
    assert cards[2]["fallbackText"] == "My Pipeline #2253 fixed main (passed after 2 failures)"


def test_one_card_per_build_even_when_the_build_finishes_again(teams: StandIn, capsys: Any) -> None:
    deliver(failed_build())
    deliver(failed_build(state="passed", finished_at="2025-06-12T04:10:00.000Z"))  # a job retried by hand
    assert len(teams_api.cards(teams)) == 1  # a Workflows card cannot be updated
    assert [line["message"] for line in outcome_lines(capsys)][1] == "skipped: posted the build's card already"


def test_firestore_operations_per_build(teams: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures the README gives."""
    counts = count_firestore(monkeypatch)
    costs: list[tuple[int, int]] = []
    for body in (job(), job(id="job-ok", state="passed", exit_status=0), payload("build.finished.failed"), job()):
        counts.clear()
        deliver(body)
        costs.append((counts["reads"], counts["writes"]))
    assert costs == [(1, 1), (0, 0), (2, 3), (1, 0)]  # the build.finished wrote the branch's first verdict
    assert len(teams_api.cards(teams)) == 1
