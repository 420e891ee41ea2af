"""The message the ingress publishes: data for the handlers, attributes for the filters.

``data`` is the Buildkite body, unchanged, plus what the Integration Patterns handlers
read: ``event_type`` at the top and ``build.pipeline`` (the pipeline slug) and
``build.organization`` inside the build. Attributes carry what subscription filters need,
plus the event's trace as ``googclient_traceparent`` (``tracing``), which no filter reads.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from .event import BuildkiteEvent
from .tracing import TRACEPARENT_ATTRIBUTE

ORIGIN = "buildkite-webhook"
MAX_ATTRIBUTE_BYTES = 1024  # Pub/Sub's limit for an attribute value


def build_message_data(
    body: Mapping[str, Any], event_type: str, *, organization: str | None, pipeline_slug: str | None
) -> dict[str, Any]:
    # The verified event name wins over any "event_type" key the body may carry.
    data: dict[str, Any] = {"event_type": event_type, **{k: v for k, v in body.items() if k != "event_type"}}
    build = body.get("build")
    if isinstance(build, Mapping) and (build.get("id") or build.get("number")):  # a build, not a husk
        build = dict(build)
        # Webhook builds carry no nested pipeline; if a future one does, keep it at the top.
        nested = build.get("pipeline")
        if isinstance(nested, Mapping) and not isinstance(body.get("pipeline"), Mapping):
            data["pipeline"] = nested
        if not isinstance(nested, str):
            build["pipeline"] = pipeline_slug
        build.setdefault("organization", organization)
        data["build"] = build
    return data


def encode_data(data: Mapping[str, Any]) -> bytes:
    """Compact UTF-8 JSON. Lone surrogates (valid JSON escapes, invalid UTF-8) stay escaped."""
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"))
    try:
        return text.encode("utf-8")
    except UnicodeEncodeError:
        return json.dumps(data, separators=(",", ":")).encode("ascii")


def truncate_utf8(value: str, limit: int = MAX_ATTRIBUTE_BYTES) -> str:
    """Cut to at most ``limit`` UTF-8 bytes without splitting a character."""
    raw = value.encode("utf-8", "replace")
    if len(raw) <= limit:
        return raw.decode("utf-8")
    return raw[:limit].decode("utf-8", "ignore")


def message_attributes(event: BuildkiteEvent) -> dict[str, str]:
    """Filterable attributes; empty ones are omitted (a filter can then test ``attributes:k``)."""
    build, job = event.build, event.job
    values: dict[str, Any] = {
        "event_type": event.event_type,
        "organization": event.organization,
        "pipeline": event.pipeline_slug,
        "origin": ORIGIN,
    }
    if build:
        values.update(
            branch=build.branch,
            build_state=build.state,
            build_number=build.number,
            source=build.source,
        )
        if event.kind == "build":
            values["blocked"] = "true" if build.is_blocked else "false"
    if job and event.kind == "job":
        values.update(job_state=job.state, job_type=job.type)
    return {key: truncate_utf8(str(value)) for key, value in values.items() if value not in (None, "")}


def to_message(
    body: Mapping[str, Any], event_type: str, *, traceparent: str | None = None
) -> tuple[bytes, dict[str, str]]:
    """Turn a verified Buildkite body into Pub/Sub (data, attributes); ``traceparent`` (W3C)
    goes where Google's Pub/Sub client libraries put it, so their tracing picks it up too."""
    view = BuildkiteEvent(event_type=event_type, data=body)
    data = build_message_data(body, event_type, organization=view.organization, pipeline_slug=view.pipeline_slug)
    attributes = message_attributes(view)
    if traceparent:
        attributes[TRACEPARENT_ATTRIBUTE] = traceparent
    return encode_data(data), attributes
