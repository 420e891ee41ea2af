"""The build's Slack message: Block Kit blocks plus a plain ``text`` fallback.

Every string taken from the event is cleaned, escaped and cut to Block Kit's limits, so a
commit message can neither mention ``@channel`` nor hide a link. The only mention is one
this function resolved itself (an author's user ID).
"""

from __future__ import annotations

from typing import Any

from buildkite_events import BuildkiteEvent, InvalidEvent
from buildkite_events.builds import BranchStanding, FailedJob
from buildkite_events.notify import context_line, headline, job_detail
from buildkite_events.text import clean, fit, safe_url, units
from buildkite_events.timeutil import format_duration

# Block Kit limits (https://docs.slack.dev/reference/block-kit/blocks). Lengths are counted
# here in UTF-16 code units, never fewer than the characters Slack counts.
HEADER_LIMIT = 150
SECTION_LIMIT = 3000
FIELD_LIMIT = 2000
URL_LIMIT = 3000
MAX_BLOCKS = 50
FALLBACK_LIMIT = 3000  # Slack cuts `text` at 40,000; a notification needs far less
VALUE_LIMIT = 300  # one field of the grid: readable, far below FIELD_LIMIT
JOBS_SHOWN = 5  # failed jobs named, then "and N more"
JOB_NAME_LIMIT = 150
JOB_URL_LIMIT = 400  # five lines of a name, a link and a detail stay far below SECTION_LIMIT
METADATA_TYPE = "buildkite_build"  # marks our messages (Slack message metadata)


def slack_message(
    event: BuildkiteEvent,
    channel: str,
    *,
    standing: BranchStanding | None = None,
    jobs: list[FailedJob] | tuple[FailedJob, ...] = (),
    mention: str | None = None,
    metadata: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """chat.postMessage arguments for ``event``'s build, where it stands and its failed jobs.
    ``mention`` is a user ID this function resolved (never text from the event)."""
    build = event.build
    if build is None:
        raise InvalidEvent("no build to describe")
    shown, what = headline(build, standing)
    pipeline = event.pipeline
    name = clean(pipeline.name if pipeline and pipeline.name else event.pipeline_slug) or "unknown pipeline"
    number = f"#{build.number}" if build.number is not None else "(no number)"
    build_url = safe_url(build.web_url, URL_LIMIT)
    title = clean(build.message_title)
    branch = clean(build.branch)

    suffix = escape(f" {what}")
    header = f"{shown.icon} " + fit(name, HEADER_LIMIT - units(f"{shown.icon} {suffix}"), escape) + suffix
    if units(header) > HEADER_LIMIT:  # a very long branch in the standing: keep the verdict
        header = fit(f"{shown.icon} {name} {what}", HEADER_LIMIT, escape)
    author = clean(build.author.display if build.author else None)
    creator = clean(build.creator.display if build.creator else None)
    fields = [
        ("Pipeline", link(safe_url(pipeline.web_url if pipeline else None, URL_LIMIT), name)),
        ("Build", link(build_url, number)),
        ("Branch", fit(branch, VALUE_LIMIT, escape) if branch else None),
        ("Commit", fit(clean(build.short_commit), VALUE_LIMIT, escape) or None),
        ("Author", f"<@{mention}>" if mention else fit(author or creator, VALUE_LIMIT, escape) or None),
        ("Triggered by", fit(creator, VALUE_LIMIT, escape) if author and creator and author != creator else None),
        ("Duration", format_duration(build.duration_seconds)),
    ]
    blocks: list[dict[str, Any]] = [
        {"type": "header", "text": {"type": "plain_text", "text": header, "emoji": True}},
        {"type": "section", "fields": [_mrkdwn(f"*{label}*\n{value}") for label, value in fields if value][:10]},
    ]
    if title:
        blocks.append({"type": "section", "text": _mrkdwn(fit(title, SECTION_LIMIT, escape))})
    if jobs:
        blocks.append({"type": "section", "text": _mrkdwn(failed_jobs_text(jobs))})
    if build_url:
        button = {"type": "plain_text", "text": "View Build", "emoji": False}
        blocks.append(
            {"type": "actions", "elements": [{"type": "button", "text": button, "url": build_url, "action_id": "view"}]}
        )
    context = context_line(event)
    if context:
        blocks.append({"type": "context", "elements": [_mrkdwn(fit(context, VALUE_LIMIT, escape))]})

    fallback = f"{shown.icon} {name} {what}" + (f" on {branch}" if branch else "") + (f": {title}" if title else "")
    text = fit(fallback, FALLBACK_LIMIT - (40 if mention else 0), escape)
    if mention:  # the notification names the author (markup of ours, added after the cut)
        text += f" (<@{mention}>)"
    message: dict[str, Any] = {
        "channel": channel,
        "text": text,
        "blocks": blocks[:MAX_BLOCKS],
        "unfurl_links": False,
        "unfurl_media": False,
        "link_names": False,
        "parse": "none",
    }
    if metadata is not None:
        message["metadata"] = {"event_type": METADATA_TYPE, "event_payload": metadata}
    return message


def failed_jobs_text(jobs: list[FailedJob] | tuple[FailedJob, ...]) -> str:
    """ "*Failed jobs*" and a line per job, linked, up to ``JOBS_SHOWN``, then "and N more"."""
    lines = ["*Failed jobs*" if len(jobs) > 1 else "*Failed job*"]
    for job in jobs[:JOBS_SHOWN]:
        name = fit(clean(job.name), JOB_NAME_LIMIT, escape) or "unnamed job"
        url = safe_url(job.web_url, JOB_URL_LIMIT)
        lines.append(f"• {f'<{escape(url)}|{name}>' if url else name} — {escape(job_detail(job))}")
    if len(jobs) > JOBS_SHOWN:
        lines.append(f"and {len(jobs) - JOBS_SHOWN} more")
    return "\n".join(lines)


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
