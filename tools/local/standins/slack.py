"""A Slack Web API stand-in under ``/slack/api``, answering as Slack documents each method.

- ``chat.postMessage``: ``{"ok": true, "channel": <id>, "ts": ..., "message": {...}}``; the
  channel by name or id; ``metadata`` (``event_type`` + ``event_payload``) kept on the message.
- ``chat.update``: the channel by **id** only (a name is ``channel_not_found``) and the ``ts``
  of a message; ``message_not_found`` for an unknown ``ts``, ``cant_update_message`` for a
  message another app posted.
- ``users.lookupByEmail``: query string or form only (JSON is not read: ``invalid_arguments``),
  scope ``users:read.email``; ``users_not_found`` for an unknown or deactivated user.
- ``conversations.history``: channel id, ``oldest``/``latest``/``limit``, newest first;
  ``metadata`` only with ``include_all_metadata``; scope ``channels:history`` (``groups:history``
  for a private channel).

Every method: ``not_authed`` / ``invalid_auth`` for a missing or unknown token, and
``missing_scope`` with ``needed`` and ``provided`` when the token lacks the method's scope.
Posts and updates also answer ``channel_not_found``, ``not_in_channel``, ``is_archived``,
``no_text``, ``msg_too_long``, ``invalid_metadata_format`` and ``invalid_blocks`` (with Slack's
``errors`` list, tools/local/blockkit.py). 429 with ``Retry-After`` comes from ``rate_limit()``.

The workspace is seeded with ``#builds``, ``#releases`` and ``#deploys`` (the app is a member),
``#private-ops`` (private, it is not) and ``#old-builds`` (archived), and two people; tests add
tokens, scopes, channels and people with the helpers below. ``report(server)`` renders each
message as it ends up, with how often it was updated, for ``make demo``.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tools.local.blockkit import LIMITS, block_kit_errors, render
from tools.local.standin import Fault, Recorded, Reply, StandIn

__all__ = ["LIMITS", "block_kit_errors", "render"]

PREFIX = "/slack/api"
DEMO_TOKEN = "local-slack-notify-slack_token"  # what the local stack sets SLACK_TOKEN to  # noqa: S105
APP_ID = "A0LOCALAPP1"  # the app every allowed token belongs to
SCOPES = frozenset({"chat:write", "users:read.email", "channels:history", "groups:history"})
NEEDS = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "users.lookupByEmail": "users:read.email",
    "conversations.history": "channels:history",
}
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
    with server.lock:
        current = server.state.get(_KEY)
        if current is None:
            current = server.state[_KEY] = SlackState()
            for name, member, archived in (
                ("builds", True, False),
                ("releases", True, False),
                ("deploys", True, False),
                ("private-ops", False, False),
                ("old-builds", True, True),
            ):
                add_channel(current, name, member=member, archived=archived, private=name == "private-ops")
            add_user(current, "keith@buildkite.com", "Keith Pitt")
            add_user(current, "sam@example.com", "Sam Kim")
        assert isinstance(current, SlackState)
        return current


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


# -- routes ---------------------------------------------------------------------------------


def register(server: StandIn) -> None:
    for method, verbs, answer in (
        ("chat.postMessage", ("POST",), _post_message),
        ("chat.update", ("POST",), _update),
        ("users.lookupByEmail", ("GET", "POST"), _lookup_by_email),
        ("conversations.history", ("GET", "POST"), _history),
    ):
        for verb in verbs:
            server.route(verb, PREFIX + "/" + re.escape(method), _authorized(server, method, answer))


def _authorized(server: StandIn, method: str, answer: Any) -> Any:
    def respond(request: Recorded) -> Reply:
        slack = state(server)
        arguments = _arguments(request, json_allowed=method.startswith("chat."))
        if arguments is None:
            return _error("invalid_json")
        authorization = request.headers.get("Authorization", "")
        token = authorization.removeprefix("Bearer ").strip() if authorization.startswith("Bearer ") else ""
        token = token or str(arguments.get("token") or "")
        asked = str(arguments.get("channel") or "")
        if not token:
            return _refuse(slack, asked, "not_authed")
        if token not in slack.tokens:
            return _refuse(slack, asked, "invalid_auth")
        needed, provided = NEEDS[method], slack.tokens[token]
        if method == "conversations.history" and (found := slack.find(asked)) is not None and found.private:
            needed = "groups:history"
        if needed not in provided:
            slack.refused.append((asked, "missing_scope"))
            return _error("missing_scope", needed=needed, provided=",".join(sorted(provided)))
        reply: Reply = answer(slack, arguments)
        return reply

    return respond


def _error(code: str, **extra: Any) -> Reply:
    return Reply(200, {"ok": False, "error": code, **extra})


def _refuse(slack: SlackState, asked: str, code: str) -> Reply:
    with slack.lock:
        slack.refused.append((asked, code))
    return _error(code)


def _arguments(request: Recorded, *, json_allowed: bool) -> dict[str, Any] | None:
    """JSON (where the method takes it), the query string, or form-encoded arguments; None when unreadable."""
    arguments: dict[str, Any] = {key: values[-1] for key, values in parse_qs(request.query).items()}
    if "json" in request.headers.get("Content-Type", ""):
        body = request.json
        if not isinstance(body, dict):
            return None
        return {**arguments, **body} if json_allowed else arguments  # Slack reads no JSON there
    form = {key: values[-1] for key, values in parse_qs(request.body.decode("utf-8", "replace")).items()}
    for name in ("blocks", "metadata"):
        if isinstance(form.get(name), str):
            try:
                form[name] = json.loads(form[name])
            except ValueError:
                form[name] = "not json"
    return {**arguments, **form}


def _content_error(slack: SlackState, asked: str, arguments: dict[str, Any]) -> Reply | None:
    """What Slack says about a message's text, blocks and metadata (None: they are fine)."""
    text, blocks, metadata = arguments.get("text"), arguments.get("blocks"), arguments.get("metadata")
    if not text and not blocks:
        return _refuse(slack, asked, "no_text")
    if isinstance(text, str) and len(text) > LIMITS["message.text"]:
        return _refuse(slack, asked, "msg_too_long")
    if metadata is not None and not (
        isinstance(metadata, dict)
        and isinstance(metadata.get("event_type"), str)
        and isinstance(metadata.get("event_payload"), dict)
    ):
        return _refuse(slack, asked, "invalid_metadata_format")
    if blocks is not None:
        errors = block_kit_errors(blocks)
        if errors:
            slack.refused.append((asked, "invalid_blocks"))
            messages = [f"[ERROR] {error}" for error in errors]
            return _error("invalid_blocks", errors=errors, response_metadata={"messages": messages})
    return None


def _writable(slack: SlackState, asked: str, channel: Channel | None) -> Reply | None:
    if channel is None:
        return _refuse(slack, asked, "channel_not_found")
    if channel.archived:
        return _refuse(slack, asked, "is_archived")
    if not channel.member:
        return _refuse(slack, asked, "not_in_channel")
    return None


def _post_message(slack: SlackState, arguments: dict[str, Any]) -> Reply:
    asked = str(arguments.get("channel") or "")
    channel = slack.find(asked) if asked else None
    if channel is None:
        return _refuse(slack, asked, "channel_not_found")
    refusal = _content_error(slack, asked, arguments) or _writable(slack, asked, channel)
    if refusal:
        return refusal
    with slack.lock:
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": arguments.get("text") or "",
            "ts": slack.next_ts(),
            "bot_id": "B0LOCALBOT1",
            "app_id": APP_ID,
            "blocks": arguments.get("blocks") or [],
            **({"metadata": arguments["metadata"]} if arguments.get("metadata") else {}),
        }
        slack.posted.append({"channel": channel.id, "channel_name": f"#{channel.name}", "edits": 0, **message})
    return Reply(200, {"ok": True, "channel": channel.id, "ts": message["ts"], "message": message})


def _update(slack: SlackState, arguments: dict[str, Any]) -> Reply:
    asked, ts = str(arguments.get("channel") or ""), str(arguments.get("ts") or "")
    channel = slack.channels.get(asked)  # an ID: chat.update does not take names
    refusal = _writable(slack, asked, channel)
    if refusal:
        return refusal
    assert channel is not None
    with slack.lock:
        found = next((m for m in slack.posted if m["channel"] == channel.id and m["ts"] == ts), None)
    if found is None:
        return _refuse(slack, asked, "message_not_found")
    if found["app_id"] != APP_ID:
        return _refuse(slack, asked, "cant_update_message")
    refusal = _content_error(slack, asked, arguments)
    if refusal:
        return refusal
    with slack.lock:
        found["text"] = arguments.get("text") or ""
        if "blocks" in arguments:  # without blocks, Slack keeps the message's blocks
            found["blocks"] = arguments["blocks"] or []
        if arguments.get("metadata"):
            found["metadata"] = arguments["metadata"]
        found["edits"] += 1
        found["edited"] = {"user": "U0LOCALBOT1", "ts": slack.next_ts()}
        slack.updates.append({"channel": channel.id, "ts": ts, "text": found["text"], "blocks": found["blocks"]})
        message = {k: v for k, v in found.items() if k not in ("channel", "channel_name", "edits")}
    return Reply(200, {"ok": True, "channel": channel.id, "ts": ts, "text": found["text"], "message": message})


def _lookup_by_email(slack: SlackState, arguments: dict[str, Any]) -> Reply:
    email = str(arguments.get("email") or "").strip()
    if not email:
        return _error("invalid_arguments")
    user = slack.users.get(email.lower())
    if user is None or user["deleted"]:
        return _error("users_not_found")
    profile = {"email": user["email"], "real_name": user["name"], "display_name": user["name"].split()[0]}
    return Reply(
        200,
        {
            "ok": True,
            "user": {
                "id": user["id"],
                "team_id": "T0LOCALTEAM",
                "name": user["name"].split()[0].lower(),
                "real_name": user["name"],
                "deleted": False,
                "is_bot": False,
                "profile": profile,
            },
        },
    )


def _history(slack: SlackState, arguments: dict[str, Any]) -> Reply:
    asked = str(arguments.get("channel") or "")
    channel = slack.channels.get(asked)
    if channel is None:
        return _refuse(slack, asked, "channel_not_found")
    if not channel.member:
        return _refuse(slack, asked, "not_in_channel")
    try:
        oldest, latest = float(arguments.get("oldest") or 0), float(arguments.get("latest") or time.time() + 1)
        limit = min(max(int(arguments.get("limit") or 100), 1), 999)
    except ValueError:
        return _error("invalid_arguments")
    inclusive = str(arguments.get("inclusive", "")).lower() in ("1", "true")
    metadata = str(arguments.get("include_all_metadata", "")).lower() in ("1", "true")
    with slack.lock:
        found = [
            m
            for m in slack.posted
            if m["channel"] == channel.id
            and (oldest < float(m["ts"]) < latest or (inclusive and float(m["ts"]) in (oldest, latest)))
        ]
    found.sort(key=lambda m: float(m["ts"]), reverse=True)
    shown = [
        {k: v for k, v in m.items() if k not in ("channel", "channel_name", "edits") and (metadata or k != "metadata")}
        for m in found[:limit]
    ]
    return Reply(
        200,
        {
            "ok": True,
            "messages": shown,
            "has_more": len(found) > limit,
            "pin_count": 0,
            "response_metadata": {"next_cursor": ""},
        },
    )


# -- the demo report ------------------------------------------------------------------------


def report(server: StandIn) -> tuple[str, list[str]]:
    slack = state(server)
    with slack.lock:
        messages, refused, edits = [dict(m) for m in slack.posted], list(slack.refused), list(slack.updates)
    title = (
        f"Slack (stand-in for chat.postMessage and chat.update): {len(messages)} message(s) posted, "
        f"{len(edits)} update(s) of them"
    )
    builds = Counter(_build_of(message) for message in messages if _build_of(message))
    if builds:
        title += f"; {len(builds)} build(s), at most {max(builds.values())} message(s) per build"
    if refused:
        title += f", {len(refused)} refused (" + ", ".join(sorted({code for _, code in refused})) + ")"
    lines: list[str] = []
    for message in messages:
        updated = f", posted then updated {message['edits']}×" if message["edits"] else ", posted"
        lines.append(f"{message['channel_name']}  ({message['channel']}, ts {message['ts']}{updated})")
        lines += [f"  {_named(row, slack)}" for row in render(message)]
    return title, lines or ["(nothing posted)"]


def _named(row: str, slack: SlackState) -> str:
    """A mention as Slack shows it: the person's name."""
    names = {str(user["id"]): str(user["name"]) for user in slack.users.values()}
    return re.sub(r"@([UW][A-Z0-9]+)", lambda m: "@" + names.get(m.group(1), m.group(1)), row)


def _build_of(message: dict[str, Any]) -> str | None:
    """The build a message is about, from the metadata slack-notify marks its messages with."""
    payload = (message.get("metadata") or {}).get("event_payload") or {}
    build = payload.get("build_id") if isinstance(payload, dict) else None
    return str(build) if build else None
