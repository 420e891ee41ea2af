"""gcs-archive: keep every Buildkite event in Cloud Storage, once, at a predictable path."""

from __future__ import annotations

import re
from dataclasses import dataclass
from functools import cache
from typing import Any

import functions_framework

from buildkite_events import BuildkiteEvent, ConfigError, InvalidEvent, TransientError, env, pubsub_handler


@dataclass(frozen=True)
class Config:
    bucket: str = env("ARCHIVE_BUCKET")
    prefix: str = env("ARCHIVE_PREFIX", default="")


@functions_framework.cloud_event
@pubsub_handler(Config)
def archive_build_data(event: BuildkiteEvent, config: Config) -> str:
    from google.api_core import exceptions as gexc

    path = archive_path(event, config.prefix)
    where = f"gs://{config.bucket}/{path}"
    blob = _bucket(config.bucket).blob(path)
    # Look first (objectViewer): a redelivery acks without writing. Real Cloud Storage may answer
    # a create-only write on an existing name with 403 rather than 412 when the writer cannot delete.
    if _exists(blob, config.bucket):
        return f"already archived {where}"
    blob.metadata = archive_metadata(event)
    try:
        # if_generation_match=0: create only; never overwrite.
        blob.upload_from_string(
            event.payload, content_type="application/json", if_generation_match=0, retry=None, timeout=20
        )
    except gexc.PreconditionFailed:
        return f"already archived {where}"
    except gexc.Forbidden as err:
        if _exists(blob, config.bucket):  # a racing delivery wrote it first: that is what the 403 means
            return f"already archived {where}"
        raise _failure(err, config.bucket, "write to") from None
    except gexc.GoogleAPICallError as err:
        raise _failure(err, config.bucket, "write to") from None
    except OSError as err:  # requests' connection errors and timeouts
        raise TransientError(f"Cloud Storage: {type(err).__name__}") from None
    return f"archived {where}"


def _exists(blob: Any, bucket: str) -> bool:
    from google.api_core import exceptions as gexc

    try:
        return bool(blob.exists(retry=None, timeout=20))
    except gexc.GoogleAPICallError as err:
        raise _failure(err, bucket, "read objects in") from None
    except OSError as err:
        raise TransientError(f"Cloud Storage: {type(err).__name__}") from None


def _failure(err: Any, bucket: str, action: str) -> Exception:
    """What a Cloud Storage error means for this message: retry, fix the configuration, or drop it."""
    code = getattr(err, "code", None)
    if code == 404:
        return ConfigError(f"archive bucket {bucket!r} does not exist")
    if code in (401, 403):
        role = "roles/storage.objectViewer" if action.startswith("read") else "roles/storage.objectCreator"
        return ConfigError(f"no permission to {action} bucket {bucket!r} ({code}; needs {role})")
    if code is None or code in (408, 429) or code >= 500:
        return TransientError(f"Cloud Storage answered {code or type(err).__name__}")
    if code == 413:
        return InvalidEvent("the event is larger than Cloud Storage accepts for one object")
    # Any other 4xx is permanent: retrying cannot help, so the message waits in the dead-letter queue.
    return ConfigError(f"Cloud Storage refused to {action} bucket {bucket!r}: {code} {str(err)[:200]}")


@cache
def _bucket(name: str) -> Any:
    from google.cloud import storage  # heavy: keep it off the import path

    return storage.Client().bucket(name)


_UNSAFE = re.compile(r"[^A-Za-z0-9._=-]+")


def _segment(value: object, fallback: str) -> str:
    """A path segment that cannot escape its folder or break a URL."""
    text = _UNSAFE.sub("_", str(value)).strip("._")[:100] if value not in (None, "") else ""
    return text or fallback


def archive_path(event: BuildkiteEvent, prefix: str = "") -> str:
    """<org>/<pipeline>/<yyyy>/<mm>/<dd>/<build number>/<event>-<key>.json (agents and pings by kind)."""
    when = event.occurred_at
    day = f"{when:%Y/%m/%d}" if when else "undated"
    org = _segment(event.organization, "_unknown-org")
    build = event.build
    if event.kind in ("build", "job") or build:
        number = _segment(build.number if build else None, "_unknown-build")
        where = f"{_segment(event.pipeline_slug, '_unknown-pipeline')}/{day}/{number}"
    elif event.kind == "agent":
        agent = event.agent
        where = f"_agents/{day}/{_segment(agent.name or agent.id if agent else None, '_unknown-agent')}"
    else:
        where = f"_{_segment(event.kind, 'other')}/{day}"
    name = f"{_segment(event.event_type, 'event')}-{event.key_hash}.json"
    folders = [_segment(part, "") for part in prefix.split("/") if part.strip("./")]
    return "/".join([*folders, org, where, name])


def archive_metadata(event: BuildkiteEvent) -> dict[str, str]:
    build = event.build
    values = {
        "event_type": event.event_type,
        "pipeline": event.pipeline_slug,
        "state": build.effective_state if build else None,
        "build_number": build.number if build else None,
        "event_key": event.key_hash,
        "source_format": event.format,
    }
    return {k: str(v)[:256] for k, v in values.items() if v not in (None, "")}
