"""Whom a build's message mentions: its author (else its creator), as a Slack user ID.

``SLACK_USER_MAP`` (``email=U123;...``) is asked first, then ``users.lookupByEmail`` (scope
``users:read.email``), whose answers this instance keeps. Only IDs found this way become
``<@U…>``; a lookup that fails is logged and the message posts without a mention.
"""

from __future__ import annotations

import logging
import re
import threading
from functools import cache

from slack_web import Slack, is_user_id

from buildkite_events import Build, ConfigError
from buildkite_events.log import log

MAX_KNOWN = 2000  # emails this instance remembers (a workspace's committers, with room)

_known: dict[str, str | None] = {}  # email (lower case) → user ID, or None: nobody has it
_lock = threading.Lock()


@cache
def parse_user_map(text: str) -> dict[str, str]:
    """``SLACK_USER_MAP``: ``email=U123`` entries separated by ``;`` or newlines."""
    found: dict[str, str] = {}
    for number, raw in enumerate(re.split(r"[;\n]", text), start=1):
        entry = raw.strip()
        if not entry:
            continue
        email, equals, user = (part.strip() for part in entry.rpartition("="))
        if not equals or "@" not in email or not is_user_id(user):
            raise ValueError(
                f"SLACK_USER_MAP entry {number} is not email=UserID (for example keith@example.com=U0123ABCD; "
                "separate entries with ;)"
            )
        found[email.lower()] = user
    return found


def mention(build: Build, user_map: dict[str, str], slack: Slack | None) -> str | None:
    """The user ID of the build's author, else of its creator; None when neither resolves.
    ``slack`` None: ``SLACK_USER_MAP`` only."""
    for person in (build.author, build.creator):
        email = (person.email or "").strip().lower() if person else ""
        if not email or "@" not in email:
            continue
        user = user_map.get(email) or (_lookup(slack, email) if slack else None)
        if user:
            return user
    return None


def _lookup(slack: Slack, email: str) -> str | None:
    with _lock:
        if email in _known:
            return _known[email]
    try:
        user = slack.lookup(email)
    except Exception as err:  # a mention is a nicety: the message posts without it
        log(logging.WARNING, f"no mention: users.lookupByEmail failed: {type(err).__name__}: {str(err)[:300]}")
        if not isinstance(err, ConfigError):
            return None  # a passing failure: ask again next time
        user = None  # a missing scope or a revoked token: not asked again by this instance
    with _lock:
        if len(_known) >= MAX_KNOWN:
            _known.clear()
        _known[email] = user
    return user


def forget() -> None:
    """Drop what this instance learnt (tests act as a fresh instance)."""
    with _lock:
        _known.clear()
