"""slack-notify: one Block Kit message in Slack for each finished build in a state you care about.

The subscription delivers every ``build.finished``; ``SLACK_NOTIFY_STATES`` picks the states
that post (default ``failed``) and ``SLACK_ROUTES`` the channel for each pipeline and branch
(default ``SLACK_CHANNEL``). Every string taken from the event is cleaned, escaped and cut
to Block Kit's limits, so a commit message can neither mention ``@channel`` nor hide a link.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import functions_framework
from slack_web import check_channel, post_message

from buildkite_events import BuildkiteEvent, InvalidEvent, env, pubsub_handler
from buildkite_events.errors import Skip
from buildkite_events.notify import BuildGlob, check_url, context_line, look, notified_build, notify_states, where
from buildkite_events.text import clean, fit, safe_url, units
from buildkite_events.timeutil import format_duration

MUTED = "-"  # a SLACK_ROUTES channel that means "do not post"

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks). Lengths are counted
# here in UTF-16 code units, never fewer than the characters Slack counts.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
URL_LIMIT = 3000
MAX_BLOCKS = 50
FALLBACK_LIMIT = 3000  # Slack cuts `text` at 40,000; a notification needs far less
VALUE_LIMIT = 300  # one field of the grid: readable, far below FIELD_LIMIT


# --- configuration -------------------------------------------------------------------------


Route = tuple[BuildGlob, str | None]  # SLACK_ROUTES' pipeline-glob[@branch-glob]=channel; None mutes


@dataclass(frozen=True)
class Config:
    token: str = env("SLACK_TOKEN", secret=True, help="bot token (xoxb-...) with chat:write")
    channel: str = env("SLACK_CHANNEL", default="#builds", help="channel name or ID when no route matches")
    states: tuple[str, ...] = env("SLACK_NOTIFY_STATES", default=("failed",), help="build states that post")
    routes: str = env("SLACK_ROUTES", default="", help="pipeline-glob[@branch-glob]=channel;...")
    api_url: str = env("SLACK_API_URL", default="https://slack.com/api/")
    timeout_seconds: float = env("SLACK_TIMEOUT_SECONDS", default=10.0)
    rate_limit_wait_seconds: float = env("SLACK_RATE_LIMIT_MAX_WAIT_SECONDS", default=5.0)

    def __post_init__(self) -> None:
        # A secret stored with `echo` ends in a newline, which urllib would refuse in a header.
        object.__setattr__(self, "token", self.token.strip())
        if not self.token:
            raise ValueError("SLACK_TOKEN is empty")
        check_channel(self.channel, "SLACK_CHANNEL")
        notify_states(self.states, "SLACK_NOTIFY_STATES")
        parse_routes(self.routes)
        check_url(self.api_url, "SLACK_API_URL")
        if not 0 < self.timeout_seconds <= 60:
            raise ValueError("SLACK_TIMEOUT_SECONDS must be more than 0 and at most 60")
        if not 0 <= self.rate_limit_wait_seconds <= 30:
            raise ValueError("SLACK_RATE_LIMIT_MAX_WAIT_SECONDS must be between 0 and 30")

    def channel_for(self, pipeline: str | None, branch: str | None) -> str | None:
        """The first matching route's channel (None: muted), else SLACK_CHANNEL."""
        for builds, channel in parse_routes(self.routes):
            if builds.matches(pipeline, branch):
                return channel
        return self.channel


@cache
def parse_routes(text: str) -> tuple[Route, ...]:
    """``SLACK_ROUTES``: entries ``pipeline-glob[@branch-glob]=channel`` separated by ``;`` or newlines.

    The first match wins; a channel of ``-`` mutes the builds it matches.
    """
    routes: list[Route] = []
    for number, raw in enumerate(re.split(r"[;\n]", text), start=1):
        entry = raw.strip()
        if not entry:
            continue
        pattern, equals, channel = entry.rpartition("=")
        builds, channel = BuildGlob.parse(pattern), channel.strip()
        if not equals or builds is None or not channel:
            raise ValueError(
                f"SLACK_ROUTES entry {number} ({entry[:100]!r}) is not pipeline-glob[@branch-glob]=#channel "
                "(for example deploy-*@main=#deploys; separate entries with ;)"
            )
        if channel != MUTED:
            check_channel(channel, f"SLACK_ROUTES entry {number}")
        routes.append((builds, None if channel == MUTED else channel))
    return tuple(routes)


# --- the function --------------------------------------------------------------------------


@functions_framework.cloud_event
@pubsub_handler(Config)
def notify_slack(event: BuildkiteEvent, config: Config) -> str:
    build = notified_build(event, notify_states(config.states, "SLACK_NOTIFY_STATES"))
    channel = config.channel_for(event.pipeline_slug, build.branch)
    if channel is None:
        raise Skip(f"{where(event)} muted by SLACK_ROUTES")
    posted = post_message(
        slack_message(event, channel),
        token=config.token,
        api_url=config.api_url,
        timeout=config.timeout_seconds,
        max_wait=config.rate_limit_wait_seconds,
    )
    return f"posted to {channel} (channel {posted.get('channel')}, ts {posted.get('ts')})"


# --- the message ---------------------------------------------------------------------------


def slack_message(event: BuildkiteEvent, channel: str) -> dict[str, Any]:
    """chat.postMessage arguments: Block Kit blocks plus a plain ``text`` fallback."""
    build = event.build
    if build is None:
        raise InvalidEvent("no build to describe")
    shown = look(build.effective_state or "unknown")
    pipeline = event.pipeline
    name = clean(pipeline.name if pipeline and pipeline.name else event.pipeline_slug) or "unknown pipeline"
    number = f"#{build.number}" if build.number is not None else "(no number)"
    build_url = safe_url(build.web_url, URL_LIMIT)
    title = clean(build.message_title)
    branch = clean(build.branch)

    suffix = escape(f" {number} {shown.verb}")
    header = f"{shown.icon} " + fit(name, HEADER_LIMIT - units(f"{shown.icon} {suffix}"), escape) + suffix
    fields = [
        ("Pipeline", link(safe_url(pipeline.web_url if pipeline else None, URL_LIMIT), name)),
        ("Build", link(build_url, number)),
        ("Branch", fit(branch, VALUE_LIMIT, escape) if branch else None),
        ("Commit", fit(clean(build.short_commit), VALUE_LIMIT, escape) or None),
        *_people(build.author.display if build.author else None, build.creator.display if build.creator else None),
        ("Duration", format_duration(build.duration_seconds)),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {
            "type": "section",
            "fields": [_mrkdwn(f"*{label}*\n{value}") for label, value in fields if value][:10],
        },
    ]
    if title:
        blocks.append({"type": "section", "text": _mrkdwn(fit(title, SECTION_LIMIT, escape))})
    if build_url:
        button = {"type": "plain_text", "text": "View Build", "emoji": False}
        blocks.append(
            {"type": "actions", "elements": [{"type": "button", "text": button, "url": build_url, "action_id": "view"}]}
        )
    context = context_line(event)
    if context:
        blocks.append({"type": "context", "elements": [_mrkdwn(fit(context, VALUE_LIMIT, escape))]})

    fallback = f"{shown.icon} {name} {number} {shown.verb}"
    fallback += (f" on {branch}" if branch else "") + (f": {title}" if title else "")
    return {
        "channel": channel,
        "text": fit(fallback, FALLBACK_LIMIT, escape),
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": False,
        "link_names": False,
        "parse": "none",
    }


def _people(author: str | None, creator: str | None) -> list[tuple[str, str | None]]:
    author, creator = clean(author), clean(creator)
    rows: list[tuple[str, str | None]] = [("Author", fit(author or creator, VALUE_LIMIT, escape) or None)]
    if author and creator and author != creator:
        rows.append(("Triggered by", fit(creator, VALUE_LIMIT, escape)))
    return rows


def _mrkdwn(text: str) -> dict[str, Any]:
    # verbatim: no auto-linking of URLs, channel names or mentions in what we did not mark up.
    return {"type": "mrkdwn", "text": text, "verbatim": True}


def escape(text: str) -> str:
    """Slack's three control characters (https://docs.slack.dev/messaging/formatting-message-text)."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def link(url: str | None, text: str) -> str:
    """``<url|text>`` with ``text`` escaped and cut; the bare text when there is no URL."""
    label = fit(text, VALUE_LIMIT, escape)
    if not url or units(escape(url)) + units(label) > FIELD_LIMIT - 100:  # a field holds 2,000: keep the words
        return label
    return f"<{escape(url)}|{label}>"
