"""A Slack Web API stand-in under ``/slack/api``: ``chat.postMessage`` answered as Slack does.

HTTP 200 with ``{"ok": true, "channel": <id>, "ts": ..., "message": {...}}``, or with
``{"ok": false, "error": ...}``: ``not_authed`` / ``invalid_auth`` for a missing or unknown
token, ``channel_not_found``, ``not_in_channel`` and ``is_archived`` by channel, ``no_text``,
``msg_too_long``, and ``invalid_blocks`` (with Slack's ``errors`` list) for blocks that break
Block Kit's rules. 429 with ``Retry-After`` comes from ``rate_limit()`` (or ``server.fail``).

The workspace is seeded with ``#builds``, ``#releases`` and ``#deploys`` (the app is a member),
``#private-ops`` (it is not) and ``#old-builds`` (archived); tests add tokens and channels with
the helpers below. ``report(server)`` renders what was posted as text for ``make demo``.
"""

from __future__ import annotations

import hashlib
import html
import json
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tools.local.standin import Fault, Recorded, Reply, StandIn

PREFIX = "/slack/api"
DEMO_TOKEN = "local-slack-notify-slack_token"  # what the local stack sets SLACK_TOKEN to  # noqa: S105
_KEY = "slack"

# Block Kit's limits, from Slack's reference (https://docs.slack.dev/reference/block-kit/blocks,
# .../block-elements/button-element, .../composition-objects/text-object) and
# chat.postMessage (https://docs.slack.dev/reference/methods/chat.postMessage).
LIMITS = {
    "message.blocks": 50,
    "message.text": 40_000,
    "block_id": 255,
    "header.text": 150,
    "section.text": 3000,
    "section.fields": 10,
    "section.field": 2000,
    "context.elements": 10,
    "actions.elements": 25,
    "button.text": 75,
    "button.url": 3000,
    "button.value": 2000,
    "button.action_id": 255,
    "text.text": 3000,
}
BLOCK_TYPES = frozenset({"actions", "context", "divider", "file", "header", "image", "input", "rich_text", "section"})


@dataclass
class Channel:
    name: str  # without the leading '#'
    id: str
    member: bool = True
    archived: bool = False


@dataclass
class SlackState:
    tokens: set[str] = field(default_factory=lambda: {DEMO_TOKEN})
    channels: dict[str, Channel] = field(default_factory=dict)  # by id
    posted: list[dict[str, Any]] = field(default_factory=list)  # the messages Slack would show, in order
    refused: list[tuple[str, str]] = field(default_factory=list)  # (channel asked for, error code)
    sequence: int = 0
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def find(self, channel: str) -> Channel | None:
        if channel in self.channels:
            return self.channels[channel]
        name = channel.removeprefix("#")
        return next((c for c in self.channels.values() if c.name == name), None)


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
                add_channel(current, name, member=member, archived=archived)
        assert isinstance(current, SlackState)
        return current


# -- helpers for tests ----------------------------------------------------------------------


def add_channel(target: StandIn | SlackState, name: str, *, member: bool = True, archived: bool = False) -> Channel:
    """A channel named ``name`` (with or without '#'), with a stable made-up ID."""
    slack = target if isinstance(target, SlackState) else state(target)
    name = name.removeprefix("#")
    channel = Channel(name, "C" + hashlib.sha256(name.encode()).hexdigest()[:10].upper(), member, archived)
    slack.channels[channel.id] = channel
    return channel


def allow_token(server: StandIn, token: str) -> None:
    state(server).tokens.add(token)


def rate_limit(server: StandIn, *, count: int = 1, retry_after: float = 1) -> None:
    """The next ``count`` calls answer 429 ``ratelimited`` with ``Retry-After``, as Slack does."""
    body = {"ok": False, "error": "ratelimited"}
    server.fail(PREFIX + r"/chat\.postMessage", Fault(429, retry_after=retry_after, body=body, remaining=count))


def posted(server: StandIn) -> list[dict[str, Any]]:
    """Every message accepted, in order: ``channel`` (ID), ``channel_name``, ``ts``, ``text``, ``blocks``."""
    slack = state(server)
    with slack.lock:
        return list(slack.posted)


# -- routes ---------------------------------------------------------------------------------


def register(server: StandIn) -> None:
    server.route("POST", PREFIX + r"/chat\.postMessage", lambda request: _post_message(server, request))


def _error(code: str, **extra: Any) -> Reply:
    return Reply(200, {"ok": False, "error": code, **extra})


def _arguments(request: Recorded) -> dict[str, Any] | None:
    """JSON or form-encoded arguments (Slack takes both); None when unreadable."""
    content_type = request.headers.get("Content-Type", "")
    if "json" in content_type:
        body = request.json
        return body if isinstance(body, dict) else None
    form = {key: values[-1] for key, values in parse_qs(request.body.decode("utf-8", "replace")).items()}
    if isinstance(form.get("blocks"), str):
        try:
            form["blocks"] = json.loads(form["blocks"])
        except ValueError:
            form["blocks"] = "not json"
    return form


def _post_message(server: StandIn, request: Recorded) -> Reply:
    slack = state(server)
    arguments = _arguments(request)
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
    channel = slack.find(asked) if asked else None
    if channel is None:
        return _refuse(slack, asked, "channel_not_found")
    text = arguments.get("text")
    blocks = arguments.get("blocks")
    if not text and not blocks:
        return _refuse(slack, asked, "no_text")
    if isinstance(text, str) and len(text) > LIMITS["message.text"]:
        return _refuse(slack, asked, "msg_too_long")
    if blocks is not None:
        errors = block_kit_errors(blocks)
        if errors:
            slack.refused.append((asked, "invalid_blocks"))
            messages = [f"[ERROR] {error}" for error in errors]
            return _error("invalid_blocks", errors=errors, response_metadata={"messages": messages})
    if channel.archived:
        return _refuse(slack, asked, "is_archived")
    if not channel.member:
        return _refuse(slack, asked, "not_in_channel")
    with slack.lock:
        slack.sequence += 1
        ts = f"{int(time.time())}.{slack.sequence:06d}"
        message = {
            "type": "message",
            "subtype": "bot_message",
            "text": text or "",
            "ts": ts,
            "bot_id": "B0LOCALBOT1",
            "app_id": "A0LOCALAPP1",
            "blocks": blocks or [],
        }
        slack.posted.append({"channel": channel.id, "channel_name": f"#{channel.name}", **message})
    return Reply(200, {"ok": True, "channel": channel.id, "ts": ts, "message": message})


def _refuse(slack: SlackState, asked: str, code: str) -> Reply:
    with slack.lock:
        slack.refused.append((asked, code))
    return _error(code)


# -- Block Kit validation -------------------------------------------------------------------


def block_kit_errors(blocks: Any) -> list[str]:
    """What Slack would list in ``invalid_blocks`` for these blocks ([] when valid).

    Layout rules and limits from ``LIMITS``, then slack-sdk's own model validation.
    """
    if not isinstance(blocks, list):
        return ["must be an array [json-pointer:/blocks]"]
    errors: list[str] = []
    if len(blocks) > LIMITS["message.blocks"]:
        errors.append(f"no more than {LIMITS['message.blocks']} items allowed [json-pointer:/blocks]")
    for index, block in enumerate(blocks):
        where = f"/blocks/{index}"
        if not isinstance(block, dict) or block.get("type") not in BLOCK_TYPES:
            errors.append(f"unsupported type [json-pointer:{where}/type]")
            continue
        errors += _block_errors(block, where)
    if not errors:
        errors += _sdk_errors(blocks)
    return errors


def _block_errors(block: dict[str, Any], where: str) -> list[str]:
    errors: list[str] = []
    kind = block["type"]
    if len(str(block.get("block_id", ""))) > LIMITS["block_id"]:
        errors.append(f"must be less than {LIMITS['block_id'] + 1} characters [json-pointer:{where}/block_id]")
    if kind == "header":
        errors += _text_errors(block.get("text"), f"{where}/text", LIMITS["header.text"], plain_only=True)
    elif kind == "section":
        if "text" not in block and "fields" not in block:
            errors.append(f"must provide text or fields [json-pointer:{where}]")
        if "text" in block:
            errors += _text_errors(block["text"], f"{where}/text", LIMITS["section.text"])
        fields = block.get("fields", [])
        if "fields" in block and (not isinstance(fields, list) or not 0 < len(fields) <= LIMITS["section.fields"]):
            errors.append(f"must have 1 to {LIMITS['section.fields']} items [json-pointer:{where}/fields]")
        for i, item in enumerate(fields if isinstance(fields, list) else []):
            errors += _text_errors(item, f"{where}/fields/{i}", LIMITS["section.field"])
    elif kind == "context":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= LIMITS["context.elements"]:
            errors.append(f"must have 1 to {LIMITS['context.elements']} items [json-pointer:{where}/elements]")
        for i, item in enumerate(elements if isinstance(elements, list) else []):
            if isinstance(item, dict) and item.get("type") != "image":
                errors += _text_errors(item, f"{where}/elements/{i}", LIMITS["text.text"])
    elif kind == "actions":
        elements = block.get("elements")
        if not isinstance(elements, list) or not 0 < len(elements) <= LIMITS["actions.elements"]:
            errors.append(f"must have 1 to {LIMITS['actions.elements']} items [json-pointer:{where}/elements]")
        for i, item in enumerate(elements if isinstance(elements, list) else []):
            if isinstance(item, dict) and item.get("type") == "button":
                errors += _button_errors(item, f"{where}/elements/{i}")
    return errors


def _text_errors(value: Any, where: str, limit: int, *, plain_only: bool = False) -> list[str]:
    if not isinstance(value, dict) or value.get("type") not in ("plain_text", "mrkdwn"):
        return [f"must be a text object [json-pointer:{where}]"]
    if plain_only and value["type"] != "plain_text":
        return [f"must be plain_text [json-pointer:{where}/type]"]
    text = value.get("text")
    if not isinstance(text, str) or not text:
        return [f"must be more than 0 characters [json-pointer:{where}/text]"]
    if len(text) > limit:
        return [f"must be less than {limit + 1} characters [json-pointer:{where}/text]"]
    if "emoji" in value and value["type"] != "plain_text":
        return [f"emoji is only allowed in plain_text [json-pointer:{where}/emoji]"]
    if "verbatim" in value and value["type"] != "mrkdwn":
        return [f"verbatim is only allowed in mrkdwn [json-pointer:{where}/verbatim]"]
    return []


def _button_errors(button: dict[str, Any], where: str) -> list[str]:
    errors = _text_errors(button.get("text"), f"{where}/text", LIMITS["button.text"], plain_only=True)
    url = button.get("url")
    if url is not None:
        parts = urlsplit(str(url))
        if len(str(url)) > LIMITS["button.url"] or parts.scheme not in ("http", "https") or not parts.netloc:
            errors.append(f"must be a valid URL up to {LIMITS['button.url']} characters [json-pointer:{where}/url]")
        elif re.search(r"[\s<>|\"]", str(url)):
            errors.append(f"invalid characters in URL [json-pointer:{where}/url]")
    if len(str(button.get("value", ""))) > LIMITS["button.value"]:
        errors.append(f"must be less than {LIMITS['button.value'] + 1} characters [json-pointer:{where}/value]")
    if len(str(button.get("action_id", ""))) > LIMITS["button.action_id"]:
        errors.append(f"must be less than {LIMITS['button.action_id'] + 1} characters [json-pointer:{where}/action_id]")
    if button.get("style") not in (None, "primary", "danger"):
        errors.append(f"must be primary or danger [json-pointer:{where}/style]")
    return errors


def _sdk_errors(blocks: list[Any]) -> list[str]:
    """slack-sdk's model classes re-check what they know (lengths, counts, element types)."""
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.blocks import Block

    errors: list[str] = []
    for index, raw in enumerate(blocks):
        try:
            model = Block.parse(raw)
            if model is None:
                errors.append(f"unsupported block [json-pointer:/blocks/{index}]")
            else:
                model.validate_json()
        except (SlackObjectFormationError, ValueError, TypeError, KeyError) as err:
            errors.append(f"{err} [json-pointer:/blocks/{index}]")
    return errors


# -- the demo report ------------------------------------------------------------------------


def report(server: StandIn) -> tuple[str, list[str]]:
    slack = state(server)
    with slack.lock:
        messages, refused = list(slack.posted), list(slack.refused)
    title = f"Slack (stand-in for chat.postMessage): {len(messages)} message(s) posted"
    if refused:
        title += f", {len(refused)} refused (" + ", ".join(sorted({code for _, code in refused})) + ")"
    lines: list[str] = []
    for message in messages:
        lines.append(f"{message['channel_name']}  ({message['channel']}, ts {message['ts']})")
        lines += [f"  {row}" for row in render(message)]
    return title, lines or ["(nothing posted)"]


def render(message: dict[str, Any]) -> list[str]:
    """A message as a person would read it, in plain text (links as ``text <url>``)."""
    rows: list[str] = []
    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            rows.append("▌ " + _plain(block["text"]["text"]))
        elif kind == "section":
            if "text" in block:
                rows.append(_mrkdwn(block["text"]["text"]))
            if block.get("fields"):
                rows.append(" | ".join(_mrkdwn(item["text"]).replace("\n", ": ", 1) for item in block["fields"]))
        elif kind == "actions":
            buttons = [e for e in block.get("elements", []) if e.get("type") == "button"]
            rows.append("  ".join(f"[{_plain(b['text']['text'])}] {b.get('url', '')}" for b in buttons))
        elif kind == "context":
            rows.append(" ".join(_mrkdwn(e.get("text", "")) for e in block.get("elements", [])))
    if not rows:
        rows.append(_mrkdwn(str(message.get("text") or "")))
    return [row if len(row) <= 240 else row[:239] + "…" for row in rows]


def _plain(text: str) -> str:
    return html.unescape(text)


def _mrkdwn(text: str) -> str:
    text = re.sub(r"<([^<>|]+)\|([^<>]*)>", lambda m: f"{m.group(2)} <{m.group(1)}>", text)
    text = re.sub(r"\*([^*\n]+)\*", r"\1", text)
    return html.unescape(text)
