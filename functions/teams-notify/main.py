"""teams-notify: an Adaptive Card in a Microsoft Teams channel for each finished build.

Office 365 connectors and their MessageCards are retired: the card goes to a Teams
**Workflows** webhook ("Post to a channel when a webhook request is received"), whose URL
is the ``TEAMS_WEBHOOK_URL`` secret. The trigger answers 202 Accepted and the workflow then
posts the card. ``TEAMS_NOTIFY_STATES`` and ``TEAMS_PIPELINES`` choose which builds post.
Text from the event is cleaned and escaped (Fact values and TextBlocks take markdown; the
commit message goes in a TextRun, which takes none) and the message stays under 28 KB.
"""

from __future__ import annotations

import fnmatch
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from functools import cache
from typing import TYPE_CHECKING, Any

import functions_framework

from buildkite_events import BuildkiteEvent, InvalidEvent, TransientError, env, pubsub_handler
from buildkite_events.http import raise_for
from buildkite_events.text import check_url as _check_url
from buildkite_events.text import clean, clusters, notified_build, units
from buildkite_events.text import notify_states as _notify_states
from buildkite_events.text import safe_url as _safe_url
from buildkite_events.timeutil import format_duration

if TYPE_CHECKING:
    import requests

CARD_VERSION = "1.4"  # Adaptive Cards 1.4: what Teams renders on desktop, web and mobile
CARD_SCHEMA = "http://adaptivecards.io/schemas/adaptive-card.json"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES = 28_000  # Teams refuses messages over 28 KB; this counts the whole JSON body, with margin
TITLE_LIMIT = 200
VALUE_LIMIT = 300  # one fact's value
MESSAGE_LIMIT = 1000  # the commit message's first line
URL_LIMIT = 2000

# How each state looks: icon, words, TextBlock colour.
_LOOK = {
    "failed": ("🔴", "failed", "Attention"),
    "passed": ("✅", "passed", "Good"),
    "blocked": ("⏸️", "is blocked", "Warning"),
    "canceled": ("⛔", "was canceled", "Warning"),
    "skipped": ("⏭️", "was skipped", "Default"),
    "not_run": ("⚪", "was not run", "Default"),
}
_SECRET = "the teams-notify-teams-webhook-url secret (TEAMS_WEBHOOK_URL)"  # noqa: S105 - a name, not a value
_SIGNATURE_FIX = (
    "the URL's signature is wrong or the workflow is turned off; copy the trigger's HTTP POST URL into "
    f"{_SECRET} and turn the workflow on"
)


# --- configuration -------------------------------------------------------------------------


@dataclass(frozen=True)
class Config:
    webhook_url: str = env("TEAMS_WEBHOOK_URL", secret=True, help="the workflow trigger's HTTP POST URL")
    states: tuple[str, ...] = env("TEAMS_NOTIFY_STATES", default=("all",), help="build states that post")
    pipelines: tuple[str, ...] = env("TEAMS_PIPELINES", default=("*",), help="pipeline-glob[@branch-glob],...")
    timeout_seconds: float = env("TEAMS_TIMEOUT_SECONDS", default=10.0)

    def __post_init__(self) -> None:
        object.__setattr__(self, "webhook_url", self.webhook_url.strip())  # a secret stored with `echo`: a newline
        check_url(self.webhook_url, "TEAMS_WEBHOOK_URL")
        notify_states(self.states)
        parse_pipelines(self.pipelines)
        if not 0 < self.timeout_seconds <= 60:
            raise ValueError("TEAMS_TIMEOUT_SECONDS must be more than 0 and at most 60")

    def wants(self, pipeline: str | None, branch: str | None) -> bool:
        for pipeline_glob, branch_glob in parse_pipelines(self.pipelines):
            if fnmatch.fnmatchcase(pipeline or "", pipeline_glob) and (
                branch_glob is None or (branch is not None and fnmatch.fnmatchcase(branch, branch_glob))
            ):
                return True
        return False


@cache
def parse_pipelines(values: tuple[str, ...]) -> tuple[tuple[str, str | None], ...]:
    """``TEAMS_PIPELINES``: comma-separated ``pipeline-glob[@branch-glob]`` (shell-style globs on
    the pipeline slug and the branch, case-sensitive); a build posts if any entry matches."""
    entries: list[tuple[str, str | None]] = []
    for value in values:
        pipeline, at, branch = value.strip().partition("@")
        if not pipeline.strip() or (at and not branch.strip()):
            raise ValueError(f"TEAMS_PIPELINES: {value[:100]!r} is not pipeline-glob[@branch-glob], e.g. deploy-*@main")
        entries.append((pipeline.strip(), branch.strip() if at else None))
    if not entries:
        raise ValueError("TEAMS_PIPELINES names no pipeline: use * for every pipeline")
    return tuple(entries)


# --- the function --------------------------------------------------------------------------


@functions_framework.cloud_event
@pubsub_handler(Config)
def notify_teams(event: BuildkiteEvent, config: Config) -> str:
    build = notified_build(event, notify_states(config.states))
    if isinstance(build, str):
        return build  # why not
    if not config.wants(event.pipeline_slug, build.branch):
        where = f"{clean(event.pipeline_slug)[:80] or '?'}@{clean(build.branch)[:80] or '?'}"
        return f"skipped: {where} is not in TEAMS_PIPELINES"
    return post_card(config, encode(teams_message(event)))


def post_card(config: Config, body: bytes) -> str:
    """POST the message to the workflow trigger; its answers become the handler's error kinds."""
    import requests

    timeout = config.timeout_seconds
    try:
        response = _session().post(
            config.webhook_url,
            data=body,
            headers={"Content-Type": "application/json; charset=utf-8"},
            timeout=(min(5.0, timeout), timeout),
            allow_redirects=False,
        )
    except requests.Timeout:
        raise TransientError(f"the Teams webhook did not answer within {timeout:g}s") from None
    except requests.RequestException as err:  # connection refused or reset, DNS, TLS
        raise TransientError(f"the Teams webhook is unreachable ({type(err).__name__})") from None
    status = response.status_code
    raise_for(
        status,
        "the Teams webhook",
        headers=response.headers,
        detail=_error_code(response),
        fix=f"check {_SECRET}",
        config={
            range(300, 400): f"a redirect: {_SECRET} must be the trigger's own URL",
            401: _SIGNATURE_FIX,
            403: _SIGNATURE_FIX,
            404: (
                "no workflow answers at TEAMS_WEBHOOK_URL: it was deleted or the URL is wrong; create a "
                f"'Post to a channel when a webhook request is received' workflow and store its URL in {_SECRET}"
            ),
            400: (
                "the workflow rejected the message: if its trigger has a request body JSON schema, "
                "remove it or make it accept an Adaptive Card message"
            ),
        },
    )
    run = response.headers.get("x-ms-workflow-run-id")
    reason = response.reason or "Accepted"
    return f"posted card to Teams ({status} {reason}, run {run[:60]})" if run else f"posted card to Teams ({status})"


@cache
def _session() -> requests.Session:
    import requests

    return requests.Session()


def _error_code(response: requests.Response) -> str:
    """Power Automate's ``{"error": {"code": ...}}`` (never its message: that may echo the URL)."""
    try:
        body = response.json()
    except ValueError:
        return ""
    error = body.get("error") if isinstance(body, dict) else None
    code = error.get("code") if isinstance(error, dict) else None
    return re.sub(r"[^A-Za-z0-9_.-]", "", str(code))[:80] if code else ""


# --- the message ---------------------------------------------------------------------------


def teams_message(event: BuildkiteEvent) -> dict[str, Any]:
    """The Workflows envelope around the card, cut until its JSON fits ``MAX_MESSAGE_BYTES``."""
    value_limit, message_limit = VALUE_LIMIT, MESSAGE_LIMIT
    while True:
        message = {
            "type": "message",
            "attachments": [
                {
                    "contentType": CARD_CONTENT_TYPE,
                    "contentUrl": None,
                    "content": adaptive_card(event, value_limit=value_limit, message_limit=message_limit),
                }
            ],
        }
        if len(encode(message)) <= MAX_MESSAGE_BYTES or value_limit <= 20:
            return message
        value_limit, message_limit = value_limit // 2, message_limit // 2


def encode(message: Mapping[str, Any]) -> bytes:
    return json.dumps(message, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


def adaptive_card(event: BuildkiteEvent, *, value_limit: int = VALUE_LIMIT, message_limit: int = MESSAGE_LIMIT) -> Any:
    build = event.build
    if build is None:
        raise InvalidEvent("no build to describe")
    state = build.effective_state or "unknown"
    icon, verb, colour = _LOOK.get(state, ("ℹ️", clean(state)[:40] or "finished", "Default"))
    pipeline = event.pipeline
    name = clean(pipeline.name if pipeline and pipeline.name else event.pipeline_slug) or "unknown pipeline"
    number = f"#{build.number}" if build.number is not None else "(no number)"
    author = clean(build.author.display if build.author else None)
    creator = clean(build.creator.display if build.creator else None)

    def value(text: str | None) -> str | None:
        return fit(clean(text), value_limit, escaper=md_escape) or None

    facts = [
        ("Pipeline", value(name)),
        ("Build", number),
        ("Branch", value(build.branch)),
        ("Commit", value(build.short_commit)),
        ("Author", value(author or creator)),
        ("Triggered by", value(creator) if author and creator and author != creator else None),
        ("State", md_escape(state if state in _LOOK else clean(state)[:40])),
        ("Duration", format_duration(build.duration_seconds)),
    ]
    suffix = md_escape(f" {number} {verb}")  # the name is cut, never the build and its state
    title = f"{icon} " + fit(name, TITLE_LIMIT - units(suffix)) + suffix
    body: list[dict[str, Any]] = [
        {"type": "TextBlock", "text": title, "size": "Large", "weight": "Bolder", "color": colour, "wrap": True}
    ]
    line = fit(clean(build.message_title), message_limit, escaper=str)
    if line:  # a TextRun takes no markdown: the text shows as written
        body.append({"type": "RichTextBlock", "inlines": [{"type": "TextRun", "text": line, "italic": True}]})
    body.append({"type": "FactSet", "facts": [{"title": t, "value": v} for t, v in facts if v]})
    context = _context(event)
    if context:
        body.append(
            {"type": "TextBlock", "text": fit(context, VALUE_LIMIT, escaper=md_escape), "isSubtle": True, "wrap": True}
        )
    card: dict[str, Any] = {
        "type": "AdaptiveCard",
        "$schema": CARD_SCHEMA,
        "version": CARD_VERSION,
        "fallbackText": fit(name, TITLE_LIMIT - units(suffix)) + suffix,
        "body": body,
    }
    url = safe_url(build.web_url)
    if url:
        card["actions"] = [{"type": "Action.OpenUrl", "title": "View Build", "url": url}]
    return card


def _context(event: BuildkiteEvent) -> str:
    build = event.build
    parts = [clean(event.organization)]
    if build and build.pull_request:
        parts.append(f"pull request #{clean(build.pull_request.id)}")
    if build and build.source:
        parts.append(f"via {clean(build.source)}")
    if build and build.finished_at:
        parts.append(f"finished {build.finished_at:%Y-%m-%d %H:%M} UTC")
    return " · ".join(part for part in parts if part)


# --- text: clean, escape, cut --------------------------------------------------------------

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


def fit(text: str, limit: int, *, escaper: Callable[[str], str] = md_escape, ellipsis: str = "…") -> str:
    """``escaper(text)``, cut to ``limit`` units between characters: never inside an escape,
    a surrogate pair, or a character and its combining marks, emoji modifiers and
    zero-width-joined parts."""
    whole = escaper(text)
    if units(whole) <= limit:
        return whole
    budget, kept = limit - units(ellipsis), ""
    for cluster in clusters(text):
        candidate = kept + cluster
        if units(escaper(candidate)) > budget:
            break
        kept = candidate
    return escaper(kept.rstrip()) + ellipsis


def safe_url(value: str | None) -> str | None:
    return _safe_url(value, URL_LIMIT)


def notify_states(values: tuple[str, ...], variable: str = "TEAMS_NOTIFY_STATES") -> frozenset[str]:
    return _notify_states(values, variable)


def check_url(url: str, variable: str) -> None:
    _check_url(
        url, variable, ": copy the HTTP POST URL of the workflow's 'When a Teams webhook request is received' trigger"
    )
