"""slack-notify end to end: the real function (functions-framework), the real slack-sdk
WebClient, a local server answering like Slack's Web API, Firestore's emulator for the
build and branch records. Every message sent is checked against Block Kit's rules and limits."""

from __future__ import annotations

import html
import json
import re
import sys
import threading
import time
from collections.abc import Iterator
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
from tools.local.standins import slack as slack_api

fn: Any = load_function("slack-notify")
slack_web: Any = sys.modules["slack_web"]  # beside main.py, which imports it
kit: Any = sys.modules["slack_blocks"]
people: Any = sys.modules["slack_people"]
MAIN = Path(fn.__file__)
TOKEN = "xoxb-test-0123456789-secret"
CONFIG_VARS = (
    "SLACK_CHANNEL",
    "SLACK_NOTIFY_STATES",
    "SLACK_ROUTES",
    "SLACK_TIMEOUT_SECONDS",
    "SLACK_RATE_LIMIT_MAX_WAIT_SECONDS",
    "SLACK_EARLY_FAILURE",
    "SLACK_MENTION_AUTHORS",
    "SLACK_USER_MAP",
    "SLACK_SKIP_TRIGGERED_BUILDS",
    "RETRY_BUDGET_SECONDS",
    "RETRY_MAX_ATTEMPTS",
)
POSTS = r"/slack/api/chat\.postMessage"
UPDATES = r"/slack/api/chat\.update"


@pytest.fixture(scope="module")
def server() -> Iterator[StandIn]:
    with StandIn() as standin:  # one per module: stopping one takes half a second
        slack_api.register(standin)
        yield standin


@pytest.fixture
def slack(server: StandIn, firestore: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[StandIn]:
    """The stand-in, emptied, with the function configured for it (defaults otherwise) on a clean Firestore."""
    server.reset()
    slack_api.allow_token(server, TOKEN)
    for name in CONFIG_VARS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLACK_API_URL", f"{server.url}/slack/api/")
    monkeypatch.setenv("SLACK_TOKEN", TOKEN)
    monkeypatch.setenv("RETRY_BUDGET_SECONDS", "0")  # nack at once unless a test allows retries
    _fresh()
    yield server
    _fresh()


def _fresh() -> None:
    """Act as a new instance: config and clients are made again, and what it learnt is forgotten."""
    fn.notify_slack.instance.reset()
    slack_web._client.cache_clear()
    fn._channel_ids.clear()
    people.forget()


def configure(monkeypatch: pytest.MonkeyPatch, **values: str) -> None:
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    _fresh()


def deliver(body: dict[str, Any] | bytes, *, message_id: str = "1000", attributes: Any = None) -> None:
    fn.notify_slack(cloud_event(envelope(body, attributes, message_id=message_id)))


def outcome_lines(capsys: pytest.CaptureFixture[str]) -> list[dict[str, Any]]:
    return [line for line in log_lines(capsys.readouterr().out) if "outcome" in line]


def failed_build(**changes: Any) -> dict[str, Any]:
    """The failed-build fixture, changed; another ``number`` is another build (its own id)."""
    body = payload("build.finished.failed")
    if "number" in changes:
        body["build"]["id"] = f"01976230-0000-4000-8000-{int(changes['number']):012d}"
    body["build"].update(changes)
    return body


def serve() -> Any:
    """The function as functions-framework serves it (its own copy of main.py, a new instance)."""
    import functions_framework

    create_app: Any = functions_framework.create_app
    return create_app(target="notify_slack", source=str(MAIN), signature_type="cloudevent")


# --- what a valid, inert message is --------------------------------------------------------


def texts(message: dict[str, Any]) -> list[tuple[str, dict[str, Any]]]:
    """(pointer, text object) for every text object in the blocks."""
    found: list[tuple[str, dict[str, Any]]] = []

    def walk(node: Any, where: str) -> None:
        if isinstance(node, dict):
            if node.get("type") in ("plain_text", "mrkdwn") and "text" in node:
                found.append((where, node))
            for key, value in node.items():
                walk(value, f"{where}/{key}")
        elif isinstance(node, list):
            for index, value in enumerate(node):
                walk(value, f"{where}/{index}")

    walk(message.get("blocks"), "/blocks")
    return found


def assert_valid_and_inert(message: dict[str, Any], allowed_urls: set[str]) -> None:
    """Block Kit-valid (rules, limits, slack-sdk's models), and nothing from the event can
    mention, link or reorder: the only <...> sequences are links we made to known URLs."""
    blocks = message["blocks"]
    assert slack_api.block_kit_errors(blocks) == [], json.dumps(blocks, ensure_ascii=False)[:2000]
    assert 0 < len(blocks) <= kit.MAX_BLOCKS
    assert message["link_names"] is False and message["parse"] == "none"
    if "ts" not in message:  # chat.postMessage (chat.update takes no unfurl options)
        assert message["unfurl_links"] is False and message["unfurl_media"] is False
    assert 0 < kit.units(message["text"]) <= kit.FALLBACK_LIMIT
    limits = {"header": kit.HEADER_LIMIT, "fields": kit.FIELD_LIMIT, "text": kit.SECTION_LIMIT}
    for pointer, obj in texts(message):
        kind = "header" if "/0/text" in pointer and blocks[0]["type"] == "header" else pointer.split("/")[3]
        assert kit.units(obj["text"]) <= limits.get(kind, kit.SECTION_LIMIT), pointer
        if obj["type"] == "mrkdwn":
            assert obj.get("verbatim") is True, pointer  # no auto-linking or mention parsing
    for text in [message["text"], *(obj["text"] for _, obj in texts(message))]:
        assert not re.search(r"[\u202a-\u202e\u2066-\u2069\ud800-\udfff\x00-\x08]", text)
        for control in re.findall(r"<[^>]*>", text):
            url, bar, _ = control[1:-1].partition("|")
            assert bar and url.replace("&amp;", "&") in allowed_urls, control
    for block in blocks:
        for element in block.get("elements", []):
            if element.get("type") == "button":
                assert element["url"] in allowed_urls


def urls_of(body: dict[str, Any]) -> set[str]:
    return {u for u in (body["build"].get("web_url"), (body.get("pipeline") or {}).get("web_url")) if u}


def sent(server: StandIn) -> list[dict[str, Any]]:
    """What chat.postMessage received, in order (including refused requests)."""
    return [request.json for request in server.recorded(POSTS)]


# --- every fixture, as Pub/Sub and Eventarc deliver it ---------------------------------------


@pytest.mark.parametrize("name", payload_names())
def test_every_fixture_served_by_functions_framework(
    slack: StandIn, name: str, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    configure(monkeypatch, SLACK_NOTIFY_STATES="all")
    app = serve()
    body = payload(name)
    response = app.test_client().post("/", json=envelope(body, message_id=f"m-{name}"))
    assert response.status_code == 200

    (line,) = outcome_lines(capsys)
    if body["event"] in ("build.finished", "build.failing"):
        assert line["outcome"] == "done", line
        assert line["message"].startswith("done: posted to #builds (channel C"), line["message"]
        (message,) = slack_api.posted(slack)
        assert_valid_and_inert(sent(slack)[0], urls_of(body))
        assert message["channel_name"] == "#builds"
        assert message["metadata"]["event_payload"]["build_id"] == body["build"]["id"]
    elif body["event"] == "job.finished":  # it feeds the build's record; no message exists yet
        assert line["outcome"] == "done", line
        assert line["message"].startswith(("done: failed job :rspec: RSpec: recorded", "done: job passed")), line
        assert sent(slack) == []
    else:
        assert line["outcome"] == "filtered"
        assert sent(slack) == []


def test_an_eventarc_cloudevent_and_a_raw_push_both_post(slack: StandIn, capsys: Any) -> None:
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
    assert len(slack_api.posted(slack)) == 2


# --- the message -----------------------------------------------------------------------------


def test_a_failed_build_reads_well(slack: StandIn) -> None:
    deliver(payload("build.finished.failed"))
    (request,) = sent(slack)
    assert request["channel"] == "#builds"
    build_url = "https://buildkite.com/my-great-org/my-pipeline/builds/2042"
    header, grid, commit, actions, context = request["blocks"]
    assert header == {
        "type": "header",
        "text": {"type": "plain_text", "text": "🔴 My Pipeline #2042 failed", "emoji": True},
    }
    assert [field["text"] for field in grid["fields"]] == [
        "*Pipeline*\n<https://buildkite.com/my-great-org/my-pipeline|My Pipeline>",
        f"*Build*\n<{build_url}|#2042>",
        "*Branch*\nmain",
        "*Commit*\nb7c3e2d",
        "*Author*\nKeith Pitt",
        "*Duration*\n5m4s",
    ]
    assert commit["text"]["text"] == "Refactor session store"
    (button,) = actions["elements"]
    assert (button["text"]["text"], button["url"]) == ("View Build", build_url)
    assert context["elements"][0]["text"] == "my-great-org · via webhook · finished 2025-06-12 03:36 UTC"
    assert request["text"] == "🔴 My Pipeline #2042 failed on main: Refactor session store"
    (posted,) = slack_api.posted(slack)
    assert slack_api.render(posted)[:2] == [
        "▌ 🔴 My Pipeline #2042 failed",
        f"Pipeline: My Pipeline <https://buildkite.com/my-great-org/my-pipeline> | Build: #2042 <{build_url}> | "
        "Branch: main | Commit: b7c3e2d | Author: Keith Pitt | Duration: 5m4s",
    ]


def test_author_and_creator_both_show_when_they_differ(slack: StandIn) -> None:
    deliver(failed_build(creator={"name": "Release Bot", "email": "bot@example.com"}))
    fields = [field["text"] for field in sent(slack)[0]["blocks"][1]["fields"]]
    assert "*Author*\nKeith Pitt" in fields and "*Triggered by*\nRelease Bot" in fields


HOSTILE = (
    "Fix <!channel> <!here> <!subteam^S123|@team> <@U123> <#C024BE7LR|general> "
    "<http://evil.example|click here> & @channel *not bold* `code` > quote"
)


def test_hostile_text_cannot_mention_or_link(slack: StandIn) -> None:
    body = failed_build(
        message=HOSTILE + "\nsecond line <!everyone>",
        branch="feature/<!here>|x>",
        author={"name": "<@U999|admin>", "email": "x@example.com"},
        creator={"name": "<!channel>"},
    )
    body["pipeline"]["name"] = "<http://evil.example|My Pipeline>"
    deliver(body)
    (request,) = sent(slack)
    assert_valid_and_inert(request, urls_of(body))
    everything = json.dumps(request, ensure_ascii=False)
    for dangerous in ("<!channel>", "<!here>", "<@U", "<#C", "<http://evil", "<!subteam", "<!everyone>"):
        assert dangerous not in everything
    commit = request["blocks"][2]["text"]["text"]
    assert commit.startswith("Fix &lt;!channel&gt; &lt;!here&gt; &lt;!subteam^S123|@team&gt; &lt;@U123&gt;")
    assert "&lt;http://evil.example|click here&gt; &amp; @channel" in commit
    assert "second line" not in commit  # the first line only
    # As Slack would display it: the characters, literally.
    (posted,) = slack_api.posted(slack)
    assert "Fix <!channel> <!here>" in "\n".join(slack_api.render(posted))


@pytest.mark.parametrize(
    "message",
    [
        "a" * 20_000,
        "<" * 20_000,
        "&" + "x" * 19_999,
        "👩\u200d👩\u200d👧\u200d👦" * 3000,
        "e\u0301" * 10_000,
        "🇳🇿" * 5000,
        ("word " * 4000) + "\nsecond line",
    ],
    ids=["ascii", "angle-brackets", "ampersand", "zwj-family", "combining", "flags", "words"],
)
def test_20000_character_messages_are_cut_between_characters(slack: StandIn, message: str) -> None:
    deliver(failed_build(message=message))
    (request,) = sent(slack)
    assert_valid_and_inert(request, urls_of(payload("build.finished.failed")))
    commit = request["blocks"][2]["text"]["text"]
    assert commit.endswith("…") and kit.units(commit) <= kit.SECTION_LIMIT
    kept = commit[:-1]
    assert kit.escape(message.splitlines()[0]).startswith(kept)  # a prefix of the escaped text...
    assert re.fullmatch(r"(&lt;|&amp;|[^&])*", kept)  # ...never cut inside an entity
    shown = html.unescape(kept)  # ...nor inside a character
    assert list(clusters(shown)) == list(clusters(message))[: len(list(clusters(shown)))]
    assert kit.units(request["text"]) <= kit.FALLBACK_LIMIT


def test_a_huge_pipeline_name_is_cut_in_the_header_between_emoji(slack: StandIn) -> None:
    family = "👩\u200d👩\u200d👧\u200d👦"
    body = payload("build.finished.failed")
    body["pipeline"]["name"] = family * 200
    deliver(body)
    (request,) = sent(slack)
    assert_valid_and_inert(request, urls_of(body))
    header = request["blocks"][0]["text"]["text"]
    assert kit.units(header) <= kit.HEADER_LIMIT
    assert header.startswith("🔴 ") and header.endswith("… #2042 failed")
    name = header.removeprefix("🔴 ").removesuffix("… #2042 failed")
    assert name and name.replace(family, "") == ""


def test_emoji_and_right_to_left_text_survive_but_bidi_overrides_do_not(slack: StandIn) -> None:
    deliver(
        failed_build(
            message="🚀 תיקון באג בהתחברות \u202eevil\u202c مرحبا",
            branch="\u2067עברית\u2069/🔥",
            author={"name": "Zoë Ωmega 山田"},
        )
    )
    (request,) = sent(slack)
    assert_valid_and_inert(request, urls_of(payload("build.finished.failed")))
    assert request["blocks"][2]["text"]["text"] == "🚀 תיקון באג בהתחברות evil مرحبا"
    fields = [field["text"] for field in request["blocks"][1]["fields"]]
    assert "*Branch*\nעברית/🔥" in fields and "*Author*\nZoë Ωmega 山田" in fields


def test_null_author_creator_and_message_commit_head_and_no_finished_at(slack: StandIn) -> None:
    body = failed_build(author=None, creator=None, message=None, commit="HEAD", finished_at=None)
    deliver(body)
    (request,) = sent(slack)
    assert_valid_and_inert(request, urls_of(body))
    fields = [field["text"] for field in request["blocks"][1]["fields"]]
    assert "*Commit*\nHEAD" in fields
    assert not any(f.startswith(("*Author*", "*Duration*")) for f in fields)
    assert [block["type"] for block in request["blocks"]] == ["header", "section", "actions", "context"]
    assert request["text"] == "🔴 My Pipeline #2042 failed on main"
    assert "finished" not in request["blocks"][-1]["elements"][0]["text"]


def test_missing_finished_at_key_and_odd_types(slack: StandIn) -> None:
    body = failed_build(number="2042", branch=None, web_url="javascript:alert(1)")
    del body["build"]["finished_at"]
    body["build"]["author"] = "plain@example.com"
    deliver(body)
    (request,) = sent(slack)
    assert_valid_and_inert(request, {"https://buildkite.com/my-great-org/my-pipeline"})
    assert [block["type"] for block in request["blocks"]] == ["header", "section", "section", "context"]
    fields = [field["text"] for field in request["blocks"][1]["fields"]]
    assert "*Build*\n#2042" in fields and "*Author*\nplain@example.com" in fields


def test_a_message_in_mcncl_format_posts(slack: StandIn) -> None:
    data, attributes = mcncl("build.finished.failed")
    deliver(data, attributes=attributes)
    (request,) = sent(slack)
    assert request["blocks"][0]["text"]["text"] == "🔴 My Pipeline #2042 failed"
    assert "*Author*\nKeith Pitt" in [field["text"] for field in request["blocks"][1]["fields"]]
    assert request["blocks"][2]["text"]["text"] == "Refactor session store"


def test_malformed_events_are_acked_without_posting(slack: StandIn, capsys: Any) -> None:
    deliver(b"not json", attributes={"event_type": "build.finished"})
    deliver({"event": "build.finished", "build": None, "pipeline": {"slug": "p"}})
    deliver({"event": "build.finished", "build": "2042"})
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["invalid", "invalid", "invalid"]
    assert sent(slack) == []


# --- which builds post where ------------------------------------------------------------------


FINISHED = ("passed", "blocked", "canceled", "failed", "blocked.failed")


def test_by_default_only_failed_builds_post(slack: StandIn, capsys: Any) -> None:
    for name in FINISHED:
        deliver(payload(f"build.finished.{name}"))
    lines = outcome_lines(capsys)
    assert [line["outcome"] for line in lines] == ["skipped", "skipped", "skipped", "done", "done"]
    assert [(line["message"], line["severity"]) for line in lines[:3]] == [
        ("skipped: state passed not notified", "INFO"),
        ("skipped: state blocked not notified", "INFO"),
        ("skipped: state canceled not notified", "INFO"),
    ]
    headers = [request["blocks"][0]["text"]["text"] for request in sent(slack)]
    # #2041 passed before them on main; #2047 stopped on a block step that set the build to failed
    assert headers == [
        "🔴 My Pipeline #2042 failed (broke main)",
        "🔴 My Pipeline #2047 failed (2nd failure in a row on main)",
    ]


def test_configured_states_post(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_NOTIFY_STATES=" Blocked , canceled")
    for name in FINISHED:
        deliver(payload(f"build.finished.{name}"))
    headers = [request["blocks"][0]["text"]["text"] for request in sent(slack)]
    assert headers == ["⏸️ My Pipeline #2043 is blocked", "⛔ My Pipeline #2044 was canceled"]


def test_routes_pick_the_channel_by_pipeline_and_branch(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    slack_api.add_channel(slack, "#team-a")
    routes = "my-pipeline@release/*=#releases; my-*@main=#deploys\nsandbox-*=-;*@feature/a*=#team-a"
    configure(monkeypatch, SLACK_ROUTES=routes, SLACK_CHANNEL="#builds")
    cases: list[tuple[str, str, str | None]] = [("my-pipeline", "release/2.4", "#releases")]
    cases += [("my-pipeline", "main", "#deploys")]
    cases += [("sandbox-1", "main", None), ("other", "feature/abc", "#team-a"), ("other", "fix", "#builds")]
    for number, (slug, branch, _) in enumerate(cases, start=1):
        body = failed_build(number=number, branch=branch)
        body["pipeline"]["slug"] = slug
        deliver(body)
    assert [request["channel"] for request in sent(slack)] == [c for _, _, c in cases if c]
    assert [m["channel_name"] for m in slack_api.posted(slack)] == [c for _, _, c in cases if c]


def test_a_muted_pipeline_says_why(slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    configure(monkeypatch, SLACK_ROUTES="my-pipeline=-")
    deliver(payload("build.finished.failed"))
    (line,) = outcome_lines(capsys)
    assert (line["outcome"], line["message"]) == ("skipped", "skipped: my-pipeline@main muted by SLACK_ROUTES")
    assert sent(slack) == []


@pytest.mark.parametrize(
    ("variable", "value", "expected"),
    [
        ("SLACK_ROUTES", "my-pipeline", "SLACK_ROUTES entry 1"),
        ("SLACK_ROUTES", "a=#ok;b@=#x", "SLACK_ROUTES entry 2"),
        ("SLACK_ROUTES", "a=builds", "not a Slack channel"),
        ("SLACK_NOTIFY_STATES", "failed,cancelled", "Buildkite spells it canceled"),
        ("SLACK_NOTIFY_STATES", ",", "names no state"),
        ("SLACK_CHANNEL", "#Builds", "lower case"),
        ("SLACK_API_URL", "http://slack.example.com/api/", "must be an https URL"),
        ("SLACK_TIMEOUT_SECONDS", "soon", "must be a number"),
        ("SLACK_TOKEN", "", "SLACK_TOKEN is required"),
    ],
)
def test_bad_configuration_nacks_and_names_the_variable(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any, variable: str, value: str, expected: str
) -> None:
    configure(monkeypatch, **{variable: value})
    with pytest.raises(Nack, match=re.escape(expected)):
        deliver(payload("build.finished.failed"))
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["config_error"]
    assert sent(slack) == []


# --- Slack's answers -------------------------------------------------------------------------


def test_a_short_rate_limit_is_waited_out_by_the_client(slack: StandIn, capsys: Any) -> None:
    slack_api.rate_limit(slack, count=1, retry_after=1)
    started = time.monotonic()
    deliver(payload("build.finished.failed"))
    assert time.monotonic() - started >= 1.0
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["done"]
    assert len(sent(slack)) == 2 and len(slack_api.posted(slack)) == 1


def test_rate_limits_beyond_the_clients_bound_nack_with_retry_after(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    configure(monkeypatch, SLACK_RATE_LIMIT_MAX_WAIT_SECONDS="1")
    slack_api.rate_limit(slack, count=10, retry_after=1)
    with pytest.raises(Nack, match=r"chat\.postMessage answered 429 \(ratelimited\) \(Retry-After 1s\)"):
        deliver(payload("build.finished.failed"))
    assert len(sent(slack)) == 2  # one wait of 1s fits the bound, a second would not
    (line,) = outcome_lines(capsys)
    assert line["outcome"] == "retry"
    assert slack_api.posted(slack) == []


def test_a_long_retry_after_is_not_waited_for(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, RETRY_BUDGET_SECONDS="30")
    slack_api.rate_limit(slack, count=1, retry_after=120)
    started = time.monotonic()
    with pytest.raises(Nack, match="Retry-After 120s"):
        deliver(payload("build.finished.failed"))
    assert time.monotonic() - started < 5
    assert len(sent(slack)) == 1


def test_the_handler_honours_retry_after_within_its_budget(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    configure(monkeypatch, SLACK_RATE_LIMIT_MAX_WAIT_SECONDS="0", RETRY_BUDGET_SECONDS="10")
    slack_api.rate_limit(slack, count=2, retry_after=1)
    started = time.monotonic()
    deliver(payload("build.finished.failed"))
    assert time.monotonic() - started >= 1.0  # Retry-After waits, by the shared handler
    assert len(sent(slack)) == 3 and len(slack_api.posted(slack)) == 1
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["done"]


def test_a_server_error_is_retried_then_posts(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, RETRY_BUDGET_SECONDS="10")
    slack.fail(POSTS, Fault(500, body={"ok": False, "error": "internal_error"}, remaining=1))
    deliver(payload("build.finished.failed"))
    assert len(sent(slack)) == 2 and len(slack_api.posted(slack)) == 1


@pytest.mark.parametrize(
    "fault",
    [
        Fault(503, body=b"<html>Service Unavailable</html>", remaining=10),
        Fault(200, body={"ok": False, "error": "fatal_error"}, remaining=10),
        Fault(500, delay=1.5, remaining=10),
    ],
    ids=["503-html", "fatal_error", "timeout"],
)
def test_outages_and_timeouts_nack_for_redelivery(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any, fault: Fault
) -> None:
    configure(monkeypatch, SLACK_TIMEOUT_SECONDS="0.5")
    slack.fail(POSTS, fault)
    started = time.monotonic()
    with pytest.raises(Nack, match="gave up for now"):
        deliver(payload("build.finished.failed"))
    assert time.monotonic() - started < 5
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["retry"]


@pytest.mark.parametrize(
    ("setup", "code", "fix"),
    [
        ({"SLACK_TOKEN": "xoxb-revoked-secret-999"}, "invalid_auth", "slack-notify-slack-token secret"),
        ({"SLACK_CHANNEL": "#nope"}, "channel_not_found", "correct SLACK_CHANNEL / SLACK_ROUTES"),
        ({"SLACK_CHANNEL": "#private-ops"}, "not_in_channel", "invite it there"),
        ({"SLACK_CHANNEL": "#old-builds"}, "is_archived", "is archived"),
        ({"SLACK_ROUTES": "my-pipeline=C0NOTHERE1"}, "channel_not_found", "C0NOTHERE1"),
    ],
)
def test_refusals_an_operator_must_fix_are_config_errors(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any, setup: dict[str, str], code: str, fix: str
) -> None:
    configure(monkeypatch, **setup)
    with pytest.raises(Nack, match=code) as raised:
        deliver(payload("build.finished.failed"))
    output = capsys.readouterr()
    (line,) = [line for line in log_lines(output.out) if "outcome" in line]
    assert line["outcome"] == "config_error" and fix in line["message"]
    assert "dead-letter queue" in line["message"]
    assert len(sent(slack)) == 1  # no retry: it cannot help
    for secret in (TOKEN, "xoxb-revoked-secret-999"):
        assert secret not in output.out + output.err + raised.value.description


def test_a_token_stored_with_a_trailing_newline_still_works(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_TOKEN=TOKEN + "\n")
    deliver(payload("build.finished.failed"))
    assert len(slack_api.posted(slack)) == 1


def test_a_missing_scope_names_it(slack: StandIn, capsys: Any) -> None:
    slack.fail(POSTS, Fault(200, body={"ok": False, "error": "missing_scope", "needed": "chat:write"}))
    with pytest.raises(Nack):
        deliver(payload("build.finished.failed"))
    (line,) = outcome_lines(capsys)
    assert line["outcome"] == "config_error" and "(needed: chat:write)" in line["message"]


def test_a_wrong_api_url_is_a_config_error(slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    configure(monkeypatch, SLACK_API_URL=f"{slack.url}/not-slack/")
    with pytest.raises(Nack, match=r"answered 404 .*is SLACK_API_URL=.* Slack.s Web API"):
        deliver(payload("build.finished.failed"))
    assert [line["outcome"] for line in outcome_lines(capsys)] == ["config_error"]


def test_a_message_slack_rejects_waits_in_the_dead_letter_queue(slack: StandIn, capsys: Any) -> None:
    errors = ["must be less than 151 characters [json-pointer:/blocks/0/text]"]
    slack.fail(POSTS, Fault(200, body={"ok": False, "error": "invalid_blocks", "errors": errors}))
    with pytest.raises(Nack, match="invalid_blocks"):
        deliver(payload("build.finished.failed"))
    (line,) = outcome_lines(capsys)
    assert line["outcome"] == "error" and "151 characters" in line["message"]


# --- once per event --------------------------------------------------------------------------


def test_a_redelivered_message_posts_once(slack: StandIn, capsys: Any) -> None:
    push = envelope(payload("build.finished.failed"), message_id="m-1")
    fn.notify_slack(cloud_event(push))
    fn.notify_slack(cloud_event(push))
    deliver(payload("build.finished.failed"), message_id="m-2")  # the webhook sent again: a new message id
    lines = outcome_lines(capsys)
    assert [line["outcome"] for line in lines] == ["done", "skipped", "skipped"]
    assert (
        lines[1]["message"].startswith("skipped: the build's message (ts ")
        and "already shows this" in lines[1]["message"]
    )
    assert len(sent(slack)) == 1 and slack.recorded(UPDATES) == []


def test_two_racing_deliveries_post_once(slack: StandIn) -> None:
    push = envelope(payload("build.finished.failed"))
    barrier = threading.Barrier(2)
    results: list[str] = []

    def deliver_push() -> None:
        barrier.wait()
        try:
            fn.notify_slack(cloud_event(push))
            results.append("acked")
        except Nack:
            results.append("nacked")  # the loser: Pub/Sub redelivers it and it finds the event done

    threads = [threading.Thread(target=deliver_push) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(results) in (["acked", "nacked"], ["acked", "acked"])
    fn.notify_slack(cloud_event(push))  # the redelivery
    assert len(sent(slack)) == 1 and len(slack_api.posted(slack)) == 1


def test_a_failed_attempt_leaves_the_event_for_the_redelivery(slack: StandIn) -> None:
    slack.fail(POSTS, Fault(500, body={"ok": False, "error": "internal_error"}))
    push = envelope(payload("build.finished.failed"))
    with pytest.raises(Nack):
        fn.notify_slack(cloud_event(push))
    fn.notify_slack(cloud_event(push))
    fn.notify_slack(cloud_event(push))
    assert len(sent(slack)) == 2 and len(slack_api.posted(slack)) == 1


def test_the_stand_in_report_renders_what_was_posted(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_CHANNEL="#private-ops")
    with pytest.raises(Nack):
        deliver(payload("build.finished.failed"))
    configure(monkeypatch, SLACK_CHANNEL="#builds")
    deliver(failed_build(id="01976230-0000-4000-8000-hostile00001", message=HOSTILE))
    title, lines = slack_api.report(slack)
    assert title == (
        "Slack (stand-in for chat.postMessage and chat.update): 1 message(s) posted, 0 update(s) of them; "
        "1 build(s), at most 1 message(s) per build, 1 refused (not_in_channel)"
    )
    assert lines[0].startswith("#builds  (C")
    assert lines[1] == "  ▌ 🔴 My Pipeline #2042 failed"
    assert any(line.startswith("  Fix <!channel> <!here>") for line in lines)
    assert lines[-2] == "  [View Build] https://buildkite.com/my-great-org/my-pipeline/builds/2042"


# --- one message per build, updated in place ---------------------------------------------------


def job(**changes: Any) -> dict[str, Any]:
    """job.finished.failed (RSpec in #2042), changed."""
    body = payload("job.finished.failed")
    body["job"].update(changes)
    return body


def builds_message(server: StandIn) -> dict[str, Any]:
    """The one message posted, as it reads now."""
    (message,) = slack_api.posted(server)
    return message


def rendered(server: StandIn) -> str:
    return "\n".join(slack_api.render(builds_message(server)))


RSPEC_URL = "https://buildkite.com/my-great-org/my-pipeline/builds/2042#01976231-09c2-4011-85cf-f156cf57f41d"


def test_a_failing_build_posts_early_then_updates_that_message(slack: StandIn, capsys: Any) -> None:
    deliver(payload("build.failing"), message_id="m-1")
    first = builds_message(slack)
    assert first["blocks"][0]["text"]["text"] == "🔴 My Pipeline #2042 is failing"
    deliver(job(), message_id="m-2")
    after_job = builds_message(slack)
    assert after_job["ts"] == first["ts"] and after_job["edits"] == 1
    assert f"• <{RSPEC_URL}|:rspec: RSpec> — exit 1" in after_job["blocks"][3]["text"]["text"]
    deliver(payload("build.finished.failed"), message_id="m-3")
    final = builds_message(slack)
    assert (final["ts"], final["edits"]) == (first["ts"], 2)
    assert final["blocks"][0]["text"]["text"] == "🔴 My Pipeline #2042 failed"
    assert "*Duration*\n5m4s" in [field["text"] for field in final["blocks"][1]["fields"]]
    assert final["blocks"][3]["text"]["text"] == f"*Failed job*\n• <{RSPEC_URL}|:rspec: RSpec> — exit 1"
    assert len(sent(slack)) == 1
    for update in slack.recorded(UPDATES):  # the channel ID Slack returned, and the message's ts
        assert (update.json["channel"], update.json["ts"]) == (first["channel"], first["ts"])
        assert_valid_and_inert(update.json, urls_of(payload("build.finished.failed")) | {RSPEC_URL})
    lines = outcome_lines(capsys)
    assert [line["outcome"] for line in lines] == ["done"] * 3
    assert lines[1]["message"] == (
        "done: failed job :rspec: RSpec: recorded (exit 1) (1 failed in the build); updated the build's message"
    )
    assert lines[2]["message"].startswith("done: updated the build's message in C")
    assert final["metadata"] == {
        "event_type": "buildkite_build",
        "event_payload": {"build_id": payload("build.failing")["build"]["id"], "revision": 3},
    }


def test_redelivered_and_duplicated_events_never_post_or_update_again(slack: StandIn, capsys: Any) -> None:
    for message_id, body in (
        ("m-1", payload("build.failing")),
        ("m-2", job()),
        ("m-3", payload("build.finished.failed")),
    ):
        deliver(body, message_id=message_id)
        deliver(body, message_id=message_id)  # Pub/Sub's redelivery
        deliver(body, message_id=message_id + "-again")  # the same webhook published twice
    assert len(sent(slack)) == 1 and len(slack.recorded(UPDATES)) == 2

    outcomes = [line["outcome"] for line in outcome_lines(capsys)]
    assert outcomes == ["done", "skipped", "skipped"] * 3


def test_build_finished_before_build_failing_keeps_the_final_message(slack: StandIn, capsys: Any) -> None:
    deliver(payload("build.finished.failed"))
    deliver(payload("build.failing"))  # late: older than what the message shows
    deliver(job())  # the job after the build
    message = builds_message(slack)
    assert message["blocks"][0]["text"]["text"] == "🔴 My Pipeline #2042 failed"
    assert "RSpec" in message["blocks"][3]["text"]["text"]
    assert len(sent(slack)) == 1 and message["edits"] == 1
    lines = outcome_lines(capsys)
    assert [line["outcome"] for line in lines] == ["done", "skipped", "done"]
    assert "already shows this" in lines[1]["message"]


def test_a_failing_event_after_its_build_passed_posts_nothing(slack: StandIn, capsys: Any) -> None:
    passed = failed_build(state="passed")  # #2042 passed after all (a retried job)
    deliver(passed)
    deliver(payload("build.failing"))
    assert sent(slack) == []
    assert [line["message"] for line in outcome_lines(capsys)] == [
        "skipped: state passed not notified",
        "skipped: build.failing came after the build had finished",
    ]


def test_without_early_failure_the_finished_build_posts_once_naming_its_jobs(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    configure(monkeypatch, SLACK_EARLY_FAILURE="false")
    deliver(payload("build.failing"))
    deliver(job())
    assert sent(slack) == []
    deliver(payload("build.finished.failed"))
    message = builds_message(slack)
    assert message["edits"] == 0 and "RSpec" in message["blocks"][3]["text"]["text"]
    assert [line["message"].split(":")[0] for line in outcome_lines(capsys)] == ["skipped", "done", "done"]


def test_racing_events_of_one_build_make_one_message_that_ends_final(slack: StandIn) -> None:
    bodies = [payload("build.failing"), job(), payload("build.finished.failed"), job(id="job-2", name="Lint")]
    barrier = threading.Barrier(len(bodies))
    errors: list[BaseException] = []

    def deliver_one(number: int, body: dict[str, Any]) -> None:
        barrier.wait()
        for _ in range(10):  # a nacked delivery comes back, as Pub/Sub's would
            try:
                deliver(body, message_id=f"race-{number}")
                return
            except Nack as err:
                errors.append(err)
                time.sleep(0.2)

    threads = [threading.Thread(target=deliver_one, args=item) for item in enumerate(bodies)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    message = builds_message(slack)
    assert len(sent(slack)) == 1, errors
    assert message["blocks"][0]["text"]["text"] == "🔴 My Pipeline #2042 failed"
    assert message["blocks"][3]["text"]["text"].count("•") == 2


def test_streaks_broken_and_fixed_say_where_the_branch_stands(slack: StandIn, capsys: Any) -> None:
    for number, state in ((2250, "passed"), (2251, "failed"), (2252, "failed"), (2253, "passed"), (2254, "passed")):
        deliver(failed_build(number=number, state=state, finished_at=f"2025-06-12T04:{number - 2200:02d}:00.000Z"))
    headers = [request["blocks"][0]["text"]["text"] for request in sent(slack)]
    assert headers == [
        "🔴 My Pipeline #2251 failed (broke main)",
        "🔴 My Pipeline #2252 failed (2nd failure in a row on main)",
        "✅ My Pipeline #2253 fixed main (passed after 2 failures)",
    ]
    assert [line["message"] for line in outcome_lines(capsys)][-1] == "skipped: state passed not notified"
    assert (
        sent(slack)[2]["text"]
        == "✅ My Pipeline #2253 fixed main (passed after 2 failures) on main: Refactor session store"
    )


def test_broken_alone_posts_a_failure_after_a_pass_only(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_NOTIFY_STATES="broken")
    for number, state in ((1, "passed"), (2, "failed"), (3, "failed")):
        deliver(failed_build(number=number, state=state))
    assert [request["blocks"][0]["text"]["text"] for request in sent(slack)] == [
        "🔴 My Pipeline #2 failed (broke main)"
    ]


def test_five_failed_jobs_are_named_then_the_rest_counted_and_escaped(slack: StandIn) -> None:
    deliver(payload("build.failing"))
    for index in range(7):
        name = "<!channel> *bold* & <http://evil.example|x>" if index == 0 else f"Shard {index}"
        deliver(
            job(
                id=f"job-{index}",
                name=name,
                web_url=f"https://buildkite.com/a/b/builds/2042#job-{index}",
                finished_at=f"2025-06-12T03:3{index}:00.000Z",
                exit_status=index + 1,
            )
        )
    text = builds_message(slack)["blocks"][3]["text"]["text"]
    assert text.splitlines()[0] == "*Failed jobs*"
    assert text.splitlines()[1] == (
        "• <https://buildkite.com/a/b/builds/2042#job-0|&lt;!channel&gt; *bold* &amp; &lt;http://evil.example|x&gt;>"
        " — exit 1"
    )
    assert text.count("•") == 5 and text.endswith("\nand 2 more")
    allowed = {f"https://buildkite.com/a/b/builds/2042#job-{i}" for i in range(7)} | urls_of(payload("build.failing"))
    assert_valid_and_inert(slack.recorded(UPDATES)[-1].json, allowed)


def test_a_retry_that_passed_takes_its_job_off_the_message(slack: StandIn) -> None:
    first = "01976231-09c5-4d7c-9dc1-aeba69afb3be"
    deliver(payload("build.failing"))
    deliver(job(id=first, name=":capybara: Feature specs", retries_count=None))
    assert "Feature specs" in builds_message(slack)["blocks"][3]["text"]["text"]
    deliver(payload("job.finished.passed.auto-retry"))
    assert [block["type"] for block in builds_message(slack)["blocks"]] == [
        "header",
        "section",
        "section",
        "actions",
        "context",
    ]


def test_a_child_build_of_a_trigger_step_can_be_left_out(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    deliver(failed_build(number=1, source="trigger_job"))
    configure(monkeypatch, SLACK_SKIP_TRIGGERED_BUILDS="true")
    deliver(failed_build(number=2, source="trigger_job"))
    deliver(failed_build(number=3))
    assert [request["blocks"][0]["text"]["text"].split(" failed")[0] for request in sent(slack)] == [
        "🔴 My Pipeline #1",
        "🔴 My Pipeline #3",
    ]


def test_a_deleted_message_is_not_posted_again(slack: StandIn, capsys: Any) -> None:
    deliver(payload("build.failing"))
    slack_api.state(slack).posted.clear()  # someone deleted it in Slack
    deliver(payload("build.finished.failed"))
    assert len(sent(slack)) == 1
    (_, line) = outcome_lines(capsys)
    assert line["outcome"] == "invalid" and "message_not_found" in line["message"]


# --- authors mentioned ------------------------------------------------------------------------


def test_authors_are_mentioned_by_the_id_slack_resolved(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_MENTION_AUTHORS="true")
    keith = slack_api.add_user(slack, "keith@buildkite.com", "Keith Pitt")
    deliver(failed_build(number=1))
    deliver(failed_build(number=2))
    (first, second) = sent(slack)
    assert f"*Author*\n<@{keith}>" in [field["text"] for field in first["blocks"][1]["fields"]]
    assert first["text"].endswith(f" (<@{keith}>)") and second["text"].endswith(f" (<@{keith}>)")
    assert len(slack.recorded(r"users\.lookupByEmail")) == 1  # kept by the instance
    assert slack.recorded(r"users\.lookupByEmail")[0].body == b"email=keith%40buildkite.com"  # a form, not JSON


def test_without_the_setting_nobody_is_looked_up_or_mentioned(slack: StandIn) -> None:
    deliver(failed_build())
    assert "<@" not in json.dumps(sent(slack)[0])
    assert slack.recorded(r"users\.lookupByEmail") == []


def test_an_unknown_author_falls_back_to_the_creator_then_to_the_name(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch
) -> None:
    configure(monkeypatch, SLACK_MENTION_AUTHORS="true")
    sam = slack_api.add_user(slack, "sam@example.com", "Sam Kim")
    deliver(
        failed_build(
            number=1,
            author={"name": "Nobody", "email": "nobody@example.com"},
            creator={"name": "Sam Kim", "email": "sam@example.com"},
        )
    )
    deliver(failed_build(number=2, author={"name": "<!here> Nobody", "email": "nobody@example.com"}, creator=None))
    first, second = ([f["text"] for f in request["blocks"][1]["fields"]] for request in sent(slack))
    assert f"*Author*\n<@{sam}>" in first
    assert "*Author*\n&lt;!here&gt; Nobody" in second and "<@" not in json.dumps(sent(slack)[1])


def test_a_failed_lookup_never_blocks_the_post(slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    slack_api.allow_token(slack, TOKEN, {"chat:write"})  # no users:read.email
    configure(monkeypatch, SLACK_MENTION_AUTHORS="true")
    deliver(failed_build(number=1))
    slack.fail(r"/slack/api/users\.lookupByEmail", Fault(500, body={"ok": False, "error": "internal_error"}))
    slack_api.allow_token(slack, TOKEN)
    deliver(failed_build(number=2, author={"name": "Sam", "email": "sam@example.com"}))
    assert len(slack_api.posted(slack)) == 2 and "<@" not in json.dumps(sent(slack))
    lines = log_lines(capsys.readouterr().out)
    warnings = [line["message"] for line in lines if line["severity"] == "WARNING"]
    assert any("missing_scope" in w and "users:read.email" in w for w in warnings), warnings
    assert [line["outcome"] for line in lines if "outcome" in line] == ["done", "done"]


def test_the_user_map_comes_before_the_lookup(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_MENTION_AUTHORS="true", SLACK_USER_MAP=" Keith@Buildkite.com = U0MAPPED1 ;")
    deliver(failed_build())
    assert "*Author*\n<@U0MAPPED1>" in [field["text"] for field in sent(slack)[0]["blocks"][1]["fields"]]
    assert slack.recorded(r"users\.lookupByEmail") == []


def test_a_user_map_that_is_not_one_is_a_config_error(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_USER_MAP="keith@example.com=<!channel>")
    with pytest.raises(Nack, match="SLACK_USER_MAP entry 1 is not email=UserID"):
        deliver(failed_build())


# --- a post whose answer was lost ------------------------------------------------------------


def test_a_post_whose_answer_was_lost_is_found_by_its_metadata(
    slack: StandIn, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    from tools.local.faultproxy import FaultProxy

    builds = slack_api.state(slack).find("#builds")
    assert builds is not None
    with FaultProxy(slack.url) as proxy:
        configure(
            monkeypatch, SLACK_CHANNEL=builds.id, SLACK_API_URL=f"{proxy.url}/slack/api/", SLACK_TIMEOUT_SECONDS="2"
        )
        proxy.fail(r"chat\.postMessage", "lost", times=1)  # Slack posts; the answer never comes back
        with pytest.raises(Nack):
            deliver(payload("build.finished.failed"))
        deliver(payload("build.finished.failed"))  # Pub/Sub's redelivery
    message = builds_message(slack)  # still one
    assert message["edits"] == 1
    lines = outcome_lines(capsys)
    assert lines[-1]["message"].startswith("done: found the message whose answer was lost")


def test_without_history_access_a_lost_answer_can_post_twice(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """What the README says remains: no channels:history scope (or a channel given by name) and
    a lost answer means a second message."""
    from tools.local.faultproxy import FaultProxy

    slack_api.allow_token(slack, TOKEN, {"chat:write"})
    builds = slack_api.state(slack).find("#builds")
    assert builds is not None
    with FaultProxy(slack.url) as proxy:
        configure(
            monkeypatch, SLACK_CHANNEL=builds.id, SLACK_API_URL=f"{proxy.url}/slack/api/", SLACK_TIMEOUT_SECONDS="2"
        )
        proxy.fail(r"chat\.postMessage", "lost", times=1)
        with pytest.raises(Nack):
            deliver(payload("build.finished.failed"))
        deliver(payload("build.finished.failed"))
    assert len(slack_api.posted(slack)) == 2


# --- the stand-in answers as Slack documents ------------------------------------------------------


def client(server: StandIn, token: str = TOKEN) -> Any:
    from slack_sdk import WebClient

    return WebClient(token=token, base_url=f"{server.url}/slack/api/")


def slack_error(call: Any) -> dict[str, Any]:
    from slack_sdk.errors import SlackApiError

    with pytest.raises(SlackApiError) as raised:
        call()
    data: dict[str, Any] = raised.value.response.data
    return data


def test_chat_update_takes_the_channel_id_and_the_ts_of_our_own_message(slack: StandIn) -> None:
    web = client(slack)
    posted = web.chat_postMessage(channel="#builds", text="one").data
    assert slack_error(lambda: web.chat_update(channel="#builds", ts=posted["ts"], text="two"))["error"] == (
        "channel_not_found"
    )
    assert slack_error(lambda: web.chat_update(channel=posted["channel"], ts="1.000001", text="x"))["error"] == (
        "message_not_found"
    )
    theirs = slack_api.post_as_another_app(slack, "#builds", "not yours")
    assert slack_error(lambda: web.chat_update(channel=posted["channel"], ts=theirs, text="x"))["error"] == (
        "cant_update_message"
    )
    updated = web.chat_update(channel=posted["channel"], ts=posted["ts"], text="two").data
    assert (updated["ok"], updated["ts"], updated["text"]) == (True, posted["ts"], "two")
    with pytest.raises(slack_web.MessageGone, match="message_not_found"):
        slack_web.Slack(TOKEN, f"{slack.url}/slack/api/", 5, 0).update(posted["channel"], "9.000001", {"text": "x"})


def test_users_lookup_by_email_answers_as_slack_does(slack: StandIn) -> None:
    web = client(slack)
    found = web.users_lookupByEmail(email="KEITH@buildkite.com").data
    assert found["ok"] and found["user"]["id"].startswith("U")
    assert slack_error(lambda: web.users_lookupByEmail(email="nobody@example.com"))["error"] == "users_not_found"
    slack_api.add_user(slack, "gone@example.com", "Gone", deleted=True)
    assert slack_error(lambda: web.users_lookupByEmail(email="gone@example.com"))["error"] == "users_not_found"
    json_only = slack_error(lambda: web.api_call("users.lookupByEmail", json={"email": "keith@buildkite.com"}))
    assert json_only["error"] == "invalid_arguments"  # Slack reads no JSON for this method
    slack_api.allow_token(slack, "xoxb-narrow", {"chat:write"})
    refused = slack_error(lambda: client(slack, "xoxb-narrow").users_lookupByEmail(email="keith@buildkite.com"))
    assert (refused["error"], refused["needed"], refused["provided"]) == (
        "missing_scope",
        "users:read.email",
        "chat:write",
    )


def test_history_shows_metadata_only_when_asked_and_needs_its_scope(slack: StandIn) -> None:
    web = client(slack)
    metadata = {"event_type": "buildkite_build", "event_payload": {"build_id": "b-1"}}
    posted = web.chat_postMessage(channel="#builds", text="one", metadata=metadata).data
    plain = web.conversations_history(channel=posted["channel"]).data["messages"]
    assert [m["ts"] for m in plain] == [posted["ts"]] and "metadata" not in plain[0]
    full = web.conversations_history(channel=posted["channel"], include_all_metadata=True).data["messages"]
    assert full[0]["metadata"] == metadata
    bad = slack_error(lambda: web.chat_postMessage(channel="#builds", text="x", metadata={"event_type": "t"}))
    assert bad["error"] == "invalid_metadata_format"
    slack_api.allow_token(slack, "xoxb-narrow", {"chat:write"})
    refused = slack_error(lambda: client(slack, "xoxb-narrow").conversations_history(channel=posted["channel"]))
    assert (refused["error"], refused["needed"]) == ("missing_scope", "channels:history")


def test_the_report_tells_updates_from_posts(slack: StandIn) -> None:
    deliver(payload("build.failing"))
    deliver(payload("build.finished.failed"))
    title, lines = slack_api.report(slack)
    assert "1 message(s) posted, 1 update(s) of them; 1 build(s), at most 1 message(s) per build" in title
    assert lines[0].startswith("#builds  (C") and lines[0].endswith(", posted then updated 1×)")


# --- what the records cost ---------------------------------------------------------------------


def test_firestore_operations_per_build(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    """The figures the README gives: a quiet build, a failing one, and each step of it."""
    counts = count_firestore(monkeypatch)
    costs: dict[str, tuple[int, int]] = {}
    for label, body in (
        ("passed build, nothing posted", payload("build.finished.passed")),
        ("build.failing, posted", payload("build.failing")),
        ("job.finished failed, message updated", job()),
        ("job.finished passed", job(id="job-ok", state="passed", exit_status=0)),
        ("build.finished failed, message updated", payload("build.finished.failed")),
        ("build.finished redelivered", payload("build.finished.failed")),
    ):
        counts.clear()
        deliver(body)
        costs[label] = (counts["reads"], counts["writes"])
    assert costs == {
        "passed build, nothing posted": (2, 1),
        "build.failing, posted": (2, 2),  # the post is noted on the lease's own write: no read
        "job.finished failed, message updated": (2, 2),
        "job.finished passed": (0, 0),
        "build.finished failed, message updated": (3, 3),
        "build.finished redelivered": (2, 0),
    }
    assert len(sent(slack)) == 1 and len(slack.recorded(UPDATES)) == 2


def test_firestore_operations_per_build_without_the_early_post(slack: StandIn, monkeypatch: pytest.MonkeyPatch) -> None:
    configure(monkeypatch, SLACK_EARLY_FAILURE="false")
    counts = count_firestore(monkeypatch)
    for body in (payload("build.failing"), job(), job(id="job-ok", state="passed", exit_status=0)):
        deliver(body)
    deliver(payload("build.finished.failed"))
    assert (counts["reads"], counts["writes"]) == (3, 4)
    assert len(sent(slack)) == 1 and slack.recorded(UPDATES) == []
