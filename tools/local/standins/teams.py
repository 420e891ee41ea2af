"""A Microsoft Teams Workflows webhook stand-in under ``/teams``.

``POST /teams/workflows/<id>/triggers/manual/paths/invoke?...&sig=<signature>`` answers as a
"When a Teams webhook request is received" trigger does: 202 Accepted with an empty body
and an ``x-ms-workflow-run-id`` header; 401 ``DirectApiAuthorizationRequired`` without a
signature and ``DirectApiInvalidAuthorizationSignature`` with a wrong one, 404
``WorkflowNotFound`` for an unknown or deleted workflow, 400 ``InvalidRequestContent`` for a
body that is not JSON. 429 with ``Retry-After`` comes from ``throttle()`` (or ``server.fail``).

Like the real trigger it accepts any JSON: the "Post card in a chat or channel" step runs
after the 202, so a message that step cannot post (not an Adaptive Card message, over
28 KB) shows as a failed run in ``runs()`` and the report, never in the HTTP answer.
``report(server)`` renders the cards that would have appeared, as text, for ``make demo``.
"""

from __future__ import annotations

import json
import re
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

from tools.local.standin import Fault, Recorded, Reply, StandIn

PREFIX = "/teams/workflows"
DEMO_WORKFLOW = "local-demo"
DEMO_SIGNATURE = "local-demo-signature"
CARD_CONTENT_TYPE = "application/vnd.microsoft.card.adaptive"
MAX_MESSAGE_BYTES = 28 * 1024  # Teams' limit for one message
_KEY = "teams"


@dataclass
class TeamsState:
    workflows: dict[str, str] = field(default_factory=lambda: {DEMO_WORKFLOW: DEMO_SIGNATURE})  # id -> sig
    runs: list[dict[str, Any]] = field(default_factory=list)  # one per accepted request, in order
    refused: list[tuple[int, str]] = field(default_factory=list)  # (HTTP status, error code)
    lock: threading.Lock = field(default_factory=threading.Lock, repr=False)


def state(server: StandIn) -> TeamsState:
    """This provider's data on ``server`` (seeded on first use, again after ``server.reset()``)."""
    return server.provider_state(_KEY, TeamsState, TeamsState)


# -- helpers for tests ----------------------------------------------------------------------


def webhook_url(server: StandIn, workflow: str = DEMO_WORKFLOW, signature: str | None = None) -> str:
    """A trigger URL shaped like Power Automate's (the signature is the secret part)."""
    sig = state(server).workflows.get(workflow, "") if signature is None else signature
    query = "api-version=1&sp=%2Ftriggers%2Fmanual%2Frun&sv=1.0" + (f"&sig={sig}" if sig else "")
    return f"{server.url}{PREFIX}/{workflow}/triggers/manual/paths/invoke?{query}"


def add_workflow(server: StandIn, workflow: str, signature: str) -> str:
    state(server).workflows[workflow] = signature
    return webhook_url(server, workflow)


def delete_workflow(server: StandIn, workflow: str) -> None:
    state(server).workflows.pop(workflow, None)


def throttle(server: StandIn, *, count: int = 1, retry_after: float = 1) -> None:
    """The next ``count`` requests answer 429 with ``Retry-After``, as Power Automate does."""
    body = {"error": {"code": "WorkflowTriggerIsThrottled", "message": "Rate limit is exceeded."}}
    server.fail(PREFIX + "/", Fault(429, retry_after=retry_after, body=body, remaining=count))


def runs(server: StandIn) -> list[dict[str, Any]]:
    """Every accepted request's run: ``workflow``, ``run_id``, ``status`` (Succeeded/Failed), ``error``, ``message``."""
    teams = state(server)
    with teams.lock:
        return list(teams.runs)


def cards(server: StandIn) -> list[dict[str, Any]]:
    """The Adaptive Cards that runs posted, in order."""
    return [run["message"]["attachments"][0]["content"] for run in runs(server) if run["status"] == "Succeeded"]


# -- routes ---------------------------------------------------------------------------------


def register(server: StandIn) -> None:
    server.route(
        "POST", PREFIX + r"/(?P<workflow>[^/]+)/triggers/manual/paths/invoke", lambda request: _invoke(server, request)
    )


def _error(teams: TeamsState, status: int, code: str, message: str) -> Reply:
    with teams.lock:
        teams.refused.append((status, code))
    return Reply(status, {"error": {"code": code, "message": message}})


def _invoke(server: StandIn, request: Recorded) -> Reply:
    teams = state(server)
    match = re.fullmatch(PREFIX + r"/(?P<workflow>[^/]+)/triggers/manual/paths/invoke", request.path)
    assert match is not None
    workflow = match["workflow"]
    signature = (parse_qs(request.query).get("sig") or [""])[-1]
    if workflow not in teams.workflows:
        return _error(teams, 404, "WorkflowNotFound", f"The workflow '{workflow}' could not be found.")
    if not signature:
        return _error(teams, 401, "DirectApiAuthorizationRequired", "The request must be authenticated.")
    if signature != teams.workflows[workflow]:
        return _error(teams, 401, "DirectApiInvalidAuthorizationSignature", "The provided signature is not valid.")
    try:
        message = json.loads(request.body.decode("utf-8"))
    except (UnicodeDecodeError, ValueError):
        return _error(teams, 400, "InvalidRequestContent", "The request content is not valid JSON.")
    run_id = "0858" + uuid.uuid4().hex[:22].upper()
    error = post_card_error(message, len(request.body))
    with teams.lock:
        teams.runs.append(
            {
                "workflow": workflow,
                "run_id": run_id,
                "status": "Failed" if error else "Succeeded",
                "error": error,
                "message": message,
                "bytes": len(request.body),
            }
        )
    return Reply(202, b"", {"Content-Type": "text/plain; charset=utf-8", "x-ms-workflow-run-id": run_id})


def post_card_error(message: Any, size: int) -> str | None:
    """Why "Post card in a chat or channel" would fail on this message (None: it posts)."""
    if size > MAX_MESSAGE_BYTES:
        return f"the message is {size} bytes; Teams takes at most {MAX_MESSAGE_BYTES}"
    if not isinstance(message, dict) or message.get("type") != "message":
        return 'the body is not a message ({"type": "message", "attachments": [...]})'
    attachments = message.get("attachments")
    if not isinstance(attachments, list) or not attachments:
        return "the message has no attachments"
    first = attachments[0]
    if not isinstance(first, dict) or first.get("contentType") != CARD_CONTENT_TYPE:
        return f"the attachment's contentType is not {CARD_CONTENT_TYPE}"
    card = first.get("content")
    if not isinstance(card, dict) or card.get("type") != "AdaptiveCard" or not isinstance(card.get("version"), str):
        return "the attachment's content is not an Adaptive Card with a version"
    if not isinstance(card.get("body"), list):
        return "the Adaptive Card has no body"
    return None


# -- the demo report ------------------------------------------------------------------------


def report(server: StandIn) -> tuple[str, list[str]]:
    teams = state(server)
    with teams.lock:
        done, refused = list(teams.runs), list(teams.refused)
    posted = [run for run in done if run["status"] == "Succeeded"]
    title = f"Microsoft Teams (stand-in Workflows webhook): {len(posted)} card(s) posted"
    failed = len(done) - len(posted)
    if failed:
        title += f", {failed} run(s) failed"
    if refused:
        title += f", {len(refused)} request(s) refused (" + ", ".join(sorted({c for _, c in refused})) + ")"
    lines: list[str] = []
    for run in done:
        lines.append(f"workflow {run['workflow']}, run {run['run_id']}: {run['status']} ({run['bytes']} bytes)")
        if run["error"]:
            lines.append(f"  ! {run['error']}")
        else:
            lines += [f"  {row}" for row in render_card(run["message"]["attachments"][0]["content"])]
    return title, lines or ["(nothing posted)"]


def render_card(card: dict[str, Any]) -> list[str]:
    """A card as a person would read it, in plain text (markdown escapes undone)."""
    rows: list[str] = []
    for element in card.get("body") or []:
        kind = element.get("type")
        if kind == "TextBlock":
            rows.append(_unescape(str(element.get("text", ""))))
        elif kind == "RichTextBlock":
            runs_ = [i if isinstance(i, str) else _run(i) for i in element.get("inlines", [])]
            linked = any(isinstance(i, dict) and "selectAction" in i for i in element.get("inlines", []))
            rows.append("".join(runs_) if linked else "“" + "".join(runs_) + "”")
        elif kind == "FactSet":
            facts = element.get("facts") or []
            rows.append(" | ".join(f"{_unescape(f['title'])}: {_unescape(f['value'])}" for f in facts))
    for action in card.get("actions") or []:
        if action.get("type") == "Action.OpenUrl":
            rows.append(f"[{action.get('title', '')}] {action.get('url', '')}")
    return [row if len(row) <= 240 else row[:239] + "…" for row in rows]


def _run(inline: dict[str, Any]) -> str:
    """A TextRun's text, and where it leads when it opens a URL."""
    text = str(inline.get("text", ""))
    action = inline.get("selectAction")
    return f"{text} <{action.get('url', '')}>" if isinstance(action, dict) else text


def _unescape(text: str) -> str:
    return re.sub(r"\\([!-/:-@\[-`{-~])", r"\1", text)
