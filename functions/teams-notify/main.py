"""teams-notify: an Adaptive Card in a Microsoft Teams channel for each finished build.

Office 365 connectors and their MessageCards are retired: the card goes to a Teams
**Workflows** webhook ("Post to a channel when a webhook request is received"), whose URL
is the ``TEAMS_WEBHOOK_URL`` secret. The trigger answers 202 Accepted and the workflow then
posts the card; it cannot update a card, so each build posts once, at ``build.finished``.
``TEAMS_NOTIFY_STATES`` (verdicts, ``broken`` and ``fixed``) and ``TEAMS_PIPELINES`` choose
which builds post. The card says where the build stands on its branch and names its failed
jobs, which ``job.finished`` events record beforehand (``buildkite_events.builds``).
Text from the event is cleaned and escaped (Fact values and TextBlocks take markdown; the
commit message and job names go in TextRuns, which take none) and the message stays under 28 KB.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cache
from typing import Any

import functions_framework
from teams_webhook import post_card

from buildkite_events import BuildkiteEvent, InvalidEvent, env, pubsub_handler
from buildkite_events import builds as record
from buildkite_events.builds import BranchStanding, FailedJob, branch_history
from buildkite_events.errors import Skip
from buildkite_events.notify import (
    BuildGlob,
    check_url,
    context_line,
    headline,
    job_detail,
    notified_build,
    notify_states,
    where,
)
from buildkite_events.text import clean, fit, safe_url, units
from buildkite_events.timeutil import format_duration

NOTIFIER = "teams-notify"  # the build record's name for this function's card
JOBS_SHOWN = 5  # failed jobs named, then "and N more"

CARD_VERSION = "1.4"  # Adaptive Cards 1.4: what Teams renders on desktop, web and mobile
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES = 28_000  # Teams refuses messages over 28 KB; this counts the whole JSON body, with margin
TITLE_LIMIT = 200
VALUE_LIMIT = 300  # one fact's value
MESSAGE_LIMIT = 1000  # the commit message's first line
URL_LIMIT = 2000


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    webhook_url: str = env("TEAMS_WEBHOOK_URL", secret=True, help="the workflow trigger's HTTP POST URL")
    states: tuple[str, ...] = env("TEAMS_NOTIFY_STATES", default=("all",), help="build states that post")
    pipelines: tuple[str, ...] = env("TEAMS_PIPELINES", default=("*",), help="pipeline-glob[@branch-glob],...")
    timeout_seconds: float = env("TEAMS_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "webhook_url", self.webhook_url.strip())  # a secret stored with `echo`: a newline
        check_url(self.webhook_url, "TEAMS_WEBHOOK_URL", _URL_HINT)
        notify_states(self.states, "TEAMS_NOTIFY_STATES")
        parse_pipelines(self.pipelines)
        if not 0 < self.timeout_seconds <= 60:
            raise ValueError("TEAMS_TIMEOUT_SECONDS must be more than 0 and at most 60")

    def wants(self, pipeline: str | None, branch: str | None) -> bool:
        return any(builds.matches(pipeline, branch) for builds in parse_pipelines(self.pipelines))


_URL_HINT = ": copy the HTTP POST URL of the workflow's 'When a Teams webhook request is received' trigger"


@cache
def parse_pipelines(values: tuple[str, ...]) -> tuple[BuildGlob, ...]:
    """``TEAMS_PIPELINES``: comma-separated ``pipeline-glob[@branch-glob]``; a build posts if any matches."""
    entries: list[BuildGlob] = []
    for value in values:
        builds = BuildGlob.parse(value)
        if builds is None:
            raise ValueError(f"TEAMS_PIPELINES: {value[:100]!r} is not pipeline-glob[@branch-glob], e.g. deploy-*@main")
        entries.append(builds)
    if not entries:
        raise ValueError("TEAMS_PIPELINES names no pipeline: use * for every pipeline")
    return tuple(entries)


# --- the function --------------------------------------------------------------------------


@functions_framework.cloud_event
@pubsub_handler(Config)
def notify_teams(event: BuildkiteEvent, config: Config) -> str:
    if event.event_type == "job.finished":  # a failed job for the card of its build
        job = record.record_job(event)
        if not job.changed:
            raise Skip(job.note)
        return job.note
    if event.build is None:
        raise InvalidEvent(f"{event.event_type} carries no build (no id and no number)")
    if not config.wants(event.pipeline_slug, event.build.branch):
        raise Skip(f"{where(event)} is not in TEAMS_PIPELINES")
    standing = branch_history(event) if event.event_type == "build.finished" else None
    notified_build(event, notify_states(config.states, "TEAMS_NOTIFY_STATES"), standing)
    assert standing is not None
    memory, lease = record.note_build(event, standing, NOTIFIER, post=True)
    if lease is None:  # posted already, or being posted by another delivery
        held = memory.message(NOTIFIER)
        raise Skip(
            "the build's card is being posted"
            if held and held.state == "posting"
            else "posted the build's card already"
        )
    message = encode(teams_message(event, standing, memory.failed_jobs))
    try:
        outcome = post_card(config.webhook_url, message, config.timeout_seconds)
    except BaseException:
        record.release_post(lease, uncertain=False)  # a workflow run cannot be looked up: post again
        raise
    record.record_post(lease, "workflow", "accepted", shown=memory.revision)  # a card has no id to keep
    return outcome


# --- the message ---------------------------------------------------------------------------


def teams_message(
    event: BuildkiteEvent, standing: BranchStanding | None = None, jobs: list[FailedJob] | None = None
) -> dict[str, Any]:
    """The Workflows envelope around the card, cut until its JSON fits ``MAX_MESSAGE_BYTES``."""
    value_limit, message_limit = VALUE_LIMIT, MESSAGE_LIMIT
    while True:
        message = {
            "type": "message",
            "attachments": [
                {
                    "contentType": CARD_CONTENT_TYPE,
                    "contentUrl": None,
                    "content": adaptive_card(
                        event, standing, jobs or [], value_limit=value_limit, message_limit=message_limit
                    ),
                }
            ],
        }
        if len(encode(message)) <= MAX_MESSAGE_BYTES or value_limit <= 20:
            return message
        value_limit, message_limit = value_limit // 2, message_limit // 2


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def adaptive_card(
    event: BuildkiteEvent,
    standing: BranchStanding | None = None,
    jobs: list[FailedJob] | None = None,
    *,
    value_limit: int = VALUE_LIMIT,
    message_limit: int = MESSAGE_LIMIT,
) -> Any:
    build = event.build
    if build is None:
        raise InvalidEvent("no build to describe")
    state = build.effective_state or "unknown"
    shown, what = headline(build, standing)
    pipeline = event.pipeline
    name = clean(pipeline.name if pipeline and pipeline.name else event.pipeline_slug) or "unknown pipeline"
    number = f"#{build.number}" if build.number is not None else "(no number)"
    author = clean(build.author.display if build.author else None)
    creator = clean(build.creator.display if build.creator else None)

    def value(text: str | None) -> str | None:
        return fit(clean(text), value_limit, md_escape) or None

    facts = [
        ("Pipeline", value(name)),
        ("Build", number),
        ("Branch", value(build.branch)),
        ("Commit", value(build.short_commit)),
        ("Author", value(author or creator)),
        ("Triggered by", value(creator) if author and creator and author != creator else None),
        ("State", md_escape(clean(state)[:40])),
        ("Duration", format_duration(build.duration_seconds)),
    ]
    suffix = md_escape(f" {what}")  # the name is cut, never the build, its state and its standing
    title = f"{shown.icon} " + fit(name, TITLE_LIMIT - units(suffix), md_escape) + suffix
    colour = shown.tone.capitalize()
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "size": "Large", "weight": "Bolder", "color": colour, "wrap": True}
    ]
    line = fit(clean(build.message_title), message_limit)
    if line:  # a TextRun takes no markdown: the text shows as written
        body.append({"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": line, "italic": True}]})
    body.append({"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts if v]})
    body += failed_jobs_blocks(jobs or [], value_limit)
    context = context_line(event)
    if context:
        body.append({"type": "TextBlock", "text": fit(context, VALUE_LIMIT, md_escape), "isSubtle": True, "wrap": True})
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "fallbackText": fit(name, TITLE_LIMIT - units(suffix), md_escape) + suffix,
        "body": body,
    }
    url = safe_url(build.web_url, URL_LIMIT)
    if url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "View Build", "url": url}]
    return card


def failed_jobs_blocks(jobs: list[FailedJob], name_limit: int) -> list[dict[str, Any]]:
    """ "Failed jobs", then a line per job (its name a TextRun that opens the job: no markdown
    to escape), up to ``JOBS_SHOWN``, then "and N more"."""
    if not jobs:
        return []
    title = "Failed jobs" if len(jobs) > 1 else "Failed job"
    blocks: list[dict[str, Any]] = [{"type": "TextBlock", "text": title, "weight": "Bolder", "wrap": True}]
    for job in jobs[:JOBS_SHOWN]:
        name: dict[str, Any] = {"type": "TextRun", "text": fit(clean(job.name), name_limit) or "unnamed job"}
        url = safe_url(job.web_url, URL_LIMIT)
        if url:
            name["selectAction"] = {"type": "Action.OpenUrl", "url": url}
        detail = {"type": "TextRun", "text": f" — {job_detail(job)}", "isSubtle": True}
        blocks.append({"type": "RichTextBlock", "spacing": "None", "inlines": [name, detail]})
    if len(jobs) > JOBS_SHOWN:
        blocks.append({"type": "TextBlock", "text": f"and {len(jobs) - JOBS_SHOWN} more", "spacing": "None"})
    return blocks


# --- markdown -----------------------------------------------------------------------------

# What makes markdown structure in a TextBlock or Fact: emphasis, code, links and images,
# HTML-like tags (<at> mentions), {{DATE()}} functions; a leading "# ", "- ", "+ " or "1." too.
_MARKDOWN = re.compile(r"([\\`*_\[\]<>{}~|])")
_LEADING = re.compile(r"^(#{1,6}(?=\s|$)|[-+](?=\s)|\d{1,9}(?=[.)](?:\s|$)))")


def md_escape(text: str) -> str:
    """Backslash-escape markdown so untrusted text shows as written and links nothing."""
    text = _MARKDOWN.sub(r"\\\1", text)
    match = _LEADING.match(text)
    if match and match.group(1).isdigit():
        return text[: match.end()] + "\\" + text[match.end() :]
    return "\\" + text if match else text
