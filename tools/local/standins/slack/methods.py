"""The Web API methods the stand-in answers, with Slack's own checks and error codes."""

from __future__ import annotations

import json
import re
import time
from typing import Any
from urllib.parse import parse_qs

from tools.local.blockkit import LIMITS, block_kit_errors
from tools.local.standin import Recorded, Reply, StandIn

from .workspace import APP_ID, PREFIX, Channel, SlackState, state

NEEDS = {
    "chat.postMessage": "chat:write",
    "chat.update": "chat:write",
    "users.lookupByEmail": "users:read.email",
    "conversations.history": "channels:history",
}


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


def register(server: StandIn) -> None:
    for method, verbs, answer in (
        ("chat.postMessage", ("POST",), _post_message),
        ("chat.update", ("POST",), _update),
        ("users.lookupByEmail", ("GET", "POST"), _lookup_by_email),
        ("conversations.history", ("GET", "POST"), _history),
    ):
        for verb in verbs:
            server.route(verb, PREFIX + "/" + re.escape(method), _authorized(server, method, answer))
