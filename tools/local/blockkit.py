"""Block Kit as Slack checks it (the layout rules and limits Slack's reference documents, then
slack-sdk's own model validation: the Slack stand-in answers ``invalid_blocks`` with these) and
as a person reads it (``render``, plain text for reports)."""

from __future__ import annotations

import html
import re
from typing import Any
from urllib.parse import urlsplit

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


def render(message: dict[str, Any]) -> list[str]:
    """A message as a person would read it, in plain text (links as ``text <url>``)."""
    rows: list[str] = []
    for block in message.get("blocks") or []:
        kind = block.get("type")
        if kind == "header":
            rows.append("▌ " + _plain(block["text"]["text"]))
        elif kind == "section":
            if "text" in block:
                rows += _mrkdwn(block["text"]["text"]).splitlines()
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
    text = re.sub(r"<@([UW][A-Z0-9]+)>", r"@\1", text)  # a mention, as the person's handle
    text = re.sub(r"<([^<>|]+)\|([^<>]*)>", lambda m: f"{m.group(2)} <{m.group(1)}>", text)
    text = re.sub(r"\*([^*\n]+)\*", r"\1", text)
    return html.unescape(text)
