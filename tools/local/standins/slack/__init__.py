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

import re
from collections import Counter
from typing import Any

from tools.local.blockkit import LIMITS, block_kit_errors, render
from tools.local.standin import StandIn

from .methods import NEEDS, register
from .workspace import (
    APP_ID,
    DEMO_TOKEN,
    PREFIX,
    SCOPES,
    Channel,
    SlackState,
    add_channel,
    add_user,
    allow_token,
    post_as_another_app,
    posted,
    rate_limit,
    state,
    updates,
)

__all__ = [
    "APP_ID",
    "DEMO_TOKEN",
    "LIMITS",
    "NEEDS",
    "PREFIX",
    "SCOPES",
    "Channel",
    "SlackState",
    "add_channel",
    "add_user",
    "allow_token",
    "block_kit_errors",
    "post_as_another_app",
    "posted",
    "rate_limit",
    "register",
    "render",
    "report",
    "state",
    "updates",
]


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
