"""slack-notify: one Slack message per build, posted once and then updated in place.

With ``SLACK_EARLY_FAILURE`` the message is posted at ``build.failing`` ("is failing"); the
jobs that finish failed and then ``build.finished`` update that same message with
``chat.update``. Otherwise ``build.finished`` posts it. ``SLACK_NOTIFY_STATES`` picks the
verdicts that post, ``broken`` and ``fixed`` included (where the build stands on its
branch), and ``SLACK_ROUTES`` the channel for each pipeline and branch.

The build's record (``buildkite_events.builds``: its failed jobs, the build as last seen,
the message's channel and ``ts``) is what makes it one message, whatever the order or the
number of deliveries: a post takes the record's lease first, and an update renders what the
record holds, again if the record moved on while it ran.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import functions_framework
from slack_blocks import METADATA_TYPE, slack_message
from slack_people import mention, parse_user_map
from slack_web import MessageGone, Slack, check_channel, is_channel_id

from buildkite_events import BuildkiteEvent, InvalidEvent, TransientError, env, pubsub_handler
from buildkite_events import builds as record
from buildkite_events.builds import BranchStanding, BuildMemory, Lease, branch_history
from buildkite_events.errors import Skip
from buildkite_events.log import log
from buildkite_events.notify import BuildGlob, check_url, notified, notify_states, where
from buildkite_events.text import clean

NOTIFIER = "slack-notify"  # the build record's name for this function's message
MUTED = "-"  # a SLACK_ROUTES channel that means "do not post"
MAX_RENDERS = 5  # updates in one delivery while the record keeps moving on
LOST_POST_LOOKBACK_SECONDS = 120.0  # how far before a lost post's lease to look for it

_channel_ids: dict[str, str] = {}  # channel name → ID, learnt from this instance's posts


# --- configuration -------------------------------------------------------------------------


Route = tuple[BuildGlob, str | None]  # SLACK_ROUTES' pipeline-glob[@branch-glob]=channel; None mutes


@dataclass(frozen=True)
class Config:
    token: str = env("SLACK_TOKEN", secret=True, help="bot token (xoxb-...) with chat:write")
    channel: str = env("SLACK_CHANNEL", default="#builds", help="channel name or ID when no route matches")
    states: tuple[str, ...] = env("SLACK_NOTIFY_STATES", default=("failed", "fixed"), help="states that post")
    routes: str = env("SLACK_ROUTES", default="", help="pipeline-glob[@branch-glob]=channel;...")
    early_failure: bool = env("SLACK_EARLY_FAILURE", default=True, help="post at build.failing, then update")
    mention_authors: bool = env("SLACK_MENTION_AUTHORS", default=False, help="mention the author (users:read.email)")
    user_map: str = env("SLACK_USER_MAP", default="", help="email=U123;... (before users.lookupByEmail)")
    skip_triggered: bool = env("SLACK_SKIP_TRIGGERED_BUILDS", default=False, help="no message for trigger_job builds")
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
        parse_user_map(self.user_map)
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

    @property
    def slack(self) -> Slack:
        return Slack(self.token, self.api_url, self.timeout_seconds, self.rate_limit_wait_seconds)


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
    build = event.build
    if build is None:
        raise InvalidEvent(f"{event.event_type} carries no build (no id and no number)")
    if config.skip_triggered and build.source == "trigger_job":
        raise Skip("a build started by a trigger step (SLACK_SKIP_TRIGGERED_BUILDS)")
    if event.event_type == "job.finished":
        job = record.record_job(event)
        updates = refresh(job.memory, config) if job.memory else 0
        if not (job.changed or updates):
            raise Skip(job.note)
        return job.note + ("; updated the build's message" if updates else "")
    if event.event_type not in ("build.failing", "build.finished"):
        raise Skip(f"{event.event_type} is not build.failing or build.finished")
    if event.event_type == "build.failing" and not config.early_failure:
        raise Skip("build.failing does not post (SLACK_EARLY_FAILURE is false)")
    standing = branch_history(event)
    channel = config.channel_for(event.pipeline_slug, build.branch)
    wanted, why = wants(event, standing, config)
    if channel is None:
        wanted, why = False, f"{where(event)} muted by SLACK_ROUTES"
    known = channel if channel and is_channel_id(channel) else _channel_ids.get(channel or "")
    memory, lease = record.note_build(event, standing, NOTIFIER, post=wanted, channel=known)
    if lease is not None and channel is not None:
        return post(lease, channel, event, config)
    message = memory.message(NOTIFIER)
    if message is None:
        raise Skip(why)
    if message.state != "posted":
        return "kept for the build's message, which another delivery is posting"
    if not refresh(memory, config):
        raise Skip(f"the build's message (ts {message.ts}) already shows this")
    return f"updated the build's message in {message.channel} (ts {message.ts})"


def wants(event: BuildkiteEvent, standing: BranchStanding, config: Config) -> tuple[bool, str]:
    """Whether this build event should post the build's message, and why not."""
    states = notify_states(config.states, "SLACK_NOTIFY_STATES")
    build = event.build
    assert build is not None
    if event.event_type == "build.failing":
        if standing.finished:
            return False, "build.failing came after the build had finished"
        return notified("failed", standing, states), "state failed not notified"
    state = build.effective_state or "unknown"
    return notified(state, standing, states), f"state {clean(state)[:40]} not notified"


def post(lease: Lease, channel: str, event: BuildkiteEvent, config: Config) -> str:
    """Post the build's one message (or adopt one a lost answer left), then catch up with the record."""
    found = find_lost_post(lease, config) if lease.lost else None
    if found is not None:
        refresh(record.record_post(lease, found[0], found[1], shown=0), config)
        return f"found the message whose answer was lost (channel {found[0]}, ts {found[1]}) and updated it"
    memory = lease.memory
    try:
        posted = config.slack.post(render(memory, channel, config, event_key=event.key_hash))
    except TransientError as err:  # the answer may be lost after Slack posted: look before posting again
        record.release_post(lease, uncertain=err.status != 429)
        raise
    except BaseException:
        record.release_post(lease, uncertain=False)
        raise
    channel_id, ts = str(posted.get("channel") or channel), str(posted.get("ts") or "")
    _channel_ids[channel] = channel_id
    updates = refresh(record.record_post(lease, channel_id, ts, shown=memory.revision), config)
    return f"posted to {channel} (channel {channel_id}, ts {ts})" + (", then updated it" if updates else "")


def refresh(memory: BuildMemory, config: Config) -> int:
    """Update the build's message until it shows the record's newest revision; how many updates."""
    for updates in range(MAX_RENDERS + 1):
        message = memory.message(NOTIFIER)
        if message is None or message.state != "posted" or message.shown >= memory.revision:
            return updates
        if updates == MAX_RENDERS:
            break
        assert message.channel and message.ts
        try:
            config.slack.update(message.channel, message.ts, render(memory, message.channel, config))
        except MessageGone as gone:
            raise InvalidEvent(f"{gone} (it was deleted or is not this app's; no new message is posted)") from None
        memory = record.mark_shown(memory.key, NOTIFIER, memory.revision)
    raise TransientError("the build's record kept changing while its message was updated; will try again")


def render(memory: BuildMemory, channel: str, config: Config, event_key: str | None = None) -> dict[str, Any]:
    """The message for what the record holds: the build as last seen, its standing, its failed jobs."""
    view = memory.build
    if view is None or view.build is None:
        raise InvalidEvent("the build's record holds no build to describe")
    who = mention(view.build, parse_user_map(config.user_map), config.slack) if config.mention_authors else None
    marker: dict[str, Any] = {"build_id": memory.key, "revision": memory.revision}
    if event_key:
        marker["event_key"] = event_key
    return slack_message(view, channel, standing=memory.standing, jobs=memory.failed_jobs, mention=who, metadata=marker)


def find_lost_post(lease: Lease, config: Config) -> tuple[str, str] | None:
    """(channel ID, ts) of the build's message, if a post whose answer was lost made one: the
    channel's recent history, by our message metadata. Needs the channel's ID and the scope
    channels:history (groups:history for a private channel); without them, None."""
    lost = lease.lost
    if lost is None or not lost.channel or not is_channel_id(lost.channel) or lost.since is None:
        return None
    try:
        messages = config.slack.history(lost.channel, lost.since.timestamp() - LOST_POST_LOOKBACK_SECONDS)
    except Exception as err:  # cannot look: post, as without the lookup
        log(logging.WARNING, f"could not look for a lost post: {type(err).__name__}: {str(err)[:300]}")
        return None
    ours = [
        m
        for m in messages
        if isinstance(m.get("metadata"), dict)
        and m["metadata"].get("event_type") == METADATA_TYPE
        and (m["metadata"].get("event_payload") or {}).get("build_id") == lease.key
    ]
    first = min(ours, key=lambda m: float(m.get("ts") or 0), default=None)
    return (lost.channel, str(first["ts"])) if first and first.get("ts") else None
