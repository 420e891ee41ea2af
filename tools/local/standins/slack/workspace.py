"""The Slack workspace the stand-in answers for: tokens and their scopes, channels, people,
and what was posted and updated; the helpers tests use to shape it."""

from __future__ import annotations

import hashlib
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from tools.local.standin import Fault, StandIn

PREFIX = "/slack/api"
DEMO_TOKEN = "local-slack-notify-slack_token"  # what the local stack sets SLACK_TOKEN to  # noqa: S105
APP_ID = "A0LOCALAPP1"  # the app every allowed token belongs to
SCOPES = frozenset({"chat:write", "users:read.email", "channels:history", "groups:history"})
_KEY = "slack"


@dataclass
class Channel:
    name: str  # without the leading '#'
    id: str
    member: bool = True
    archived: bool = False
    private: bool = False


@dataclass
class SlackState:
    tokens: dict[str, frozenset[str]] = field(default_factory=lambda: {DEMO_TOKEN: SCOPES})  # token → scopes
    channels: dict[str, Channel] = field(default_factory=dict)  # by id
    users: dict[str, dict[str, Any]] = field(default_factory=dict)  # by lower-case email
    posted: list[dict[str, Any]] = field(default_factory=list)  # the messages Slack would show, in order
    updates: list[dict[str, Any]] = field(default_factory=list)  # every accepted chat.update, in order
    refused: list[tuple[str, str]] = field(default_factory=list)  # (channel asked for, error code)
    sequence: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def find(self, channel: str) -> Channel | None:
        if channel in self.channels:
            return self.channels[channel]
        name = channel.removeprefix("#")
        return next((c for c in self.channels.values() if c.name == name), None)

    def next_ts(self) -> str:
        self.sequence += 1
        return f"{int(time.time())}.{self.sequence:06d}"


def state(server: StandIn) -> SlackState:
    """This provider's data on ``server`` (seeded on first use, again after ``server.reset()``)."""
    return server.provider_state(_KEY, SlackState, _seed)


def _seed() -> SlackState:
    seeded = SlackState()
    for name, member, archived in (
        ("builds", True, False),
        ("releases", True, False),
        ("deploys", True, False),
        ("private-ops", False, False),
        ("old-builds", True, True),
    ):
        add_channel(seeded, name, member=member, archived=archived, private=name == "private-ops")
    add_user(seeded, "keith@buildkite.com", "Keith Pitt")
    add_user(seeded, "sam@example.com", "Sam Kim")
    return seeded


# -- helpers for tests ----------------------------------------------------------------------


def add_channel(
    target: StandIn | SlackState, name: str, *, member: bool = True, archived: bool = False, private: bool = False
) -> Channel:
    """A channel named ``name`` (with or without '#'), with a stable made-up ID."""
    slack = target if isinstance(target, SlackState) else state(target)
    name = name.removeprefix("#")
    prefix = "G" if private else "C"
    channel = Channel(name, prefix + hashlib.sha256(name.encode()).hexdigest()[:10].upper(), member, archived, private)
    slack.channels[channel.id] = channel
    return channel


def add_user(target: StandIn | SlackState, email: str, name: str, *, deleted: bool = False) -> str:
    """A person in the workspace; their user ID (stable, made up)."""
    slack = target if isinstance(target, SlackState) else state(target)
    user_id = "U" + hashlib.sha256(email.lower().encode()).hexdigest()[:10].upper()
    slack.users[email.lower()] = {"id": user_id, "name": name, "email": email, "deleted": deleted}
    return user_id


def allow_token(server: StandIn, token: str, scopes: frozenset[str] | set[str] = SCOPES) -> None:
    state(server).tokens[token] = frozenset(scopes)


def rate_limit(server: StandIn, *, count: int = 1, retry_after: float = 1, method: str = "chat.postMessage") -> None:
    """The next ``count`` calls of ``method`` answer 429 ``ratelimited`` with ``Retry-After``, as Slack does."""
    body = {"ok": False, "error": "ratelimited"}
    server.fail(PREFIX + "/" + re.escape(method), Fault(429, retry_after=retry_after, body=body, remaining=count))


def posted(server: StandIn) -> list[dict[str, Any]]:
    """Every message posted, in order, as it reads now: ``channel`` (ID), ``channel_name``, ``ts``,
    ``text``, ``blocks``, ``metadata``, ``edits`` (how many times it was updated)."""
    slack = state(server)
    with slack.lock:
        return [dict(message) for message in slack.posted if message["app_id"] == APP_ID]


def updates(server: StandIn) -> list[dict[str, Any]]:
    """Every accepted chat.update, in order: ``channel``, ``ts``, ``text``, ``blocks``."""
    slack = state(server)
    with slack.lock:
        return list(slack.updates)


def post_as_another_app(server: StandIn, channel: str, text: str) -> str:
    """A message some other app posted (ours may not update it); its ``ts``."""
    slack = state(server)
    found = slack.find(channel)
    assert found is not None
    with slack.lock:
        ts = slack.next_ts()
        slack.posted.append(
            {
                "channel": found.id,
                "channel_name": f"#{found.name}",
                "ts": ts,
                "text": text,
                "blocks": [],
                "app_id": "A0OTHERAPP9",
                "edits": 0,
            }
        )
    return ts
