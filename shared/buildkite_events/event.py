"""A typed, null-safe view of one Buildkite event.

Every field Buildkite sends may be missing, null, empty or of the wrong type (and
mcncl/buildkite-pubsub adds its own quirks), so each accessor coerces defensively and
answers ``None`` rather than raising. The untouched body stays available as ``data``.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from types import MappingProxyType
from typing import Any, Generic, NamedTuple, TypeVar, overload

from .timeutil import parse_time, seconds_between

_ORG_IN_URL = re.compile(r"/organizations/([^/?#]+)")
_ORG_IN_WEB_URL = re.compile(r"^https?://[^/]+/([^/?#]+)/")
_INTEGER = re.compile(r"\s*-?[0-9]{1,18}\s*")  # ASCII digits only: str.isdigit() accepts "²"
_TERMINAL_BUILD_STATES = frozenset({"passed", "failed", "canceled", "skipped", "not_run"})


_EMPTY: Mapping[str, Any] = MappingProxyType({})
T = TypeVar("T")


class cached_property(Generic[T]):
    """functools.cached_property without its lock (Python 3.11 takes one on every first read):
    an event belongs to one delivery, so a race can at worst compute a value twice."""

    def __init__(self, function: Callable[[Any], T]) -> None:
        self.function = function
        self.name = function.__name__
        self.__doc__ = function.__doc__

    @overload
    def __get__(self, instance: None, owner: type | None = None) -> cached_property[T]: ...
    @overload
    def __get__(self, instance: object, owner: type | None = None) -> T: ...
    def __get__(self, instance: object | None, owner: type | None = None) -> T | cached_property[T]:
        if instance is None:
            return self
        value = self.function(instance)
        instance.__dict__[self.name] = value  # a plain attribute from now on
        return value


def _obj(value: Any) -> Mapping[str, Any]:
    """JSON objects are dicts; anything else reads as empty."""
    return value if isinstance(value, dict) else _EMPTY


def _str(value: Any) -> str | None:
    """Strings stay (empty → None); numbers become text; anything else is None."""
    if isinstance(value, str):
        return value or None
    if isinstance(value, bool) or value is None:
        return None
    if isinstance(value, int | float):
        return str(value)
    return None


def _int(value: Any) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, str) and _INTEGER.fullmatch(value):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _bool(value: Any) -> bool:
    return value is True or (isinstance(value, str) and value.lower() == "true")


class Person(NamedTuple):
    """A build's author or creator: Buildkite sends an object, a bare email string, or null."""

    name: str | None
    email: str | None
    id: str | None = None

    @classmethod
    def of(cls, value: Any) -> Person | None:
        if isinstance(value, str) and value:
            return cls(name=None, email=value)
        data = _obj(value)
        person = cls(name=_str(data.get("name")), email=_str(data.get("email")), id=_str(data.get("id")))
        return person if (person.name or person.email) else None

    @property
    def display(self) -> str | None:
        return self.name or self.email


class PullRequest(NamedTuple):
    id: str | None
    base: str | None
    repository: str | None

    @classmethod
    def of(cls, value: Any) -> PullRequest | None:
        data = _obj(value)  # null, {} or populated
        pr = cls(id=_str(data.get("id")), base=_str(data.get("base")), repository=_str(data.get("repository")))
        return pr if pr.id else None


class Pipeline(NamedTuple):
    id: str | None
    slug: str | None
    name: str | None
    repository: str | None
    default_branch: str | None
    provider: str | None
    provider_repository: str | None
    url: str | None
    web_url: str | None

    @classmethod
    def of(cls, value: Any) -> Pipeline | None:
        data = _obj(value)
        provider = _obj(data.get("provider"))
        pipeline = cls(
            id=_str(data.get("id")),
            slug=_str(data.get("slug")),
            name=_str(data.get("name")),
            repository=_str(data.get("repository")),
            default_branch=_str(data.get("default_branch")),
            provider=_str(provider.get("id")),
            provider_repository=_str(_obj(provider.get("settings")).get("repository")),
            url=_str(data.get("url")),
            web_url=_str(data.get("web_url")),
        )
        return pipeline if (pipeline.id or pipeline.slug or pipeline.name) else None


class Build(NamedTuple):
    id: str | None
    number: int | None
    state: str | None
    blocked: bool
    blocked_state: str | None
    branch: str | None
    tag: str | None
    commit: str | None
    message: str | None
    source: str | None
    url: str | None
    web_url: str | None
    cancel_reason: str | None
    author: Person | None
    creator: Person | None
    pull_request: PullRequest | None
    rebuilt_from_number: int | None
    created_at: datetime | None
    scheduled_at: datetime | None
    started_at: datetime | None
    failing_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, value: Any) -> Build | None:
        data = _obj(value)
        build = cls(
            id=_str(data.get("id")),
            number=_int(data.get("number")),
            state=_str(data.get("state")),
            blocked=_bool(data.get("blocked")),
            blocked_state=_str(data.get("blocked_state")),
            branch=_str(data.get("branch")),
            tag=_str(data.get("tag")),
            commit=_str(data.get("commit")),
            message=_str(data.get("message")),
            source=_str(data.get("source")),
            url=_str(data.get("url")),
            web_url=_str(data.get("web_url")),
            cancel_reason=_str(data.get("cancel_reason")),
            author=Person.of(data.get("author")),
            creator=Person.of(data.get("creator")),
            pull_request=PullRequest.of(data.get("pull_request")),
            rebuilt_from_number=_int(_obj(data.get("rebuilt_from")).get("number")),
            created_at=parse_time(data.get("created_at")),
            scheduled_at=parse_time(data.get("scheduled_at")),
            started_at=parse_time(data.get("started_at")),
            failing_at=parse_time(data.get("failing_at")),
            finished_at=parse_time(data.get("finished_at")),
        )
        # mcncl zeroes the build of agent events: id "" and number 0 mean "no build".
        return build if (build.id or build.number) else None

    @property
    def is_blocked(self) -> bool:
        """Webhooks keep the last state and set ``blocked``; notifications say state "blocked"."""
        return self.blocked or self.state == "blocked"

    @property
    def is_finished(self) -> bool:
        return self.state in _TERMINAL_BUILD_STATES or self.finished_at is not None

    @property
    def effective_state(self) -> str | None:
        """The verdict a person would name; every function, and the ``builds_latest`` view
        (queries/views/builds_latest.sql), uses this one definition.

        "failed" when ``state`` is failed, or when the build is stopped on a block step whose
        ``blocked_state`` (the state the block step sets the build to) is failed; "blocked" for
        any other build waiting on a block step; else ``state``.
        """
        if self.state == "failed" or (self.is_blocked and self.blocked_state == "failed"):
            return "failed"
        return "blocked" if self.is_blocked else self.state

    @property
    def latest_at(self) -> datetime | None:
        """The build's latest own timestamp. It only grows as the build moves on (after an
        unblock the same build sends ``build.running`` again, with later timestamps), so it
        orders two events of one build whichever arrives first."""
        stamps = (self.created_at, self.scheduled_at, self.started_at, self.failing_at, self.finished_at)
        return max((stamp for stamp in stamps if stamp is not None), default=None)

    @property
    def message_title(self) -> str | None:
        """First non-empty line of the commit message."""
        for line in (self.message or "").splitlines():
            if line.strip():
                return line.strip()
        return None

    @property
    def short_commit(self) -> str | None:
        return self.commit[:7] if self.commit and _is_sha(self.commit) else self.commit

    @property
    def wait_seconds(self) -> float | None:
        return seconds_between(self.scheduled_at, self.started_at)

    @property
    def duration_seconds(self) -> float | None:
        return seconds_between(self.started_at, self.finished_at)


def _is_sha(value: str) -> bool:
    return bool(re.fullmatch(r"[0-9a-f]{7,40}", value))


class Agent(NamedTuple):
    id: str | None
    name: str | None
    connection_state: str | None
    hostname: str | None
    version: str | None
    queue: str | None
    connected_at: datetime | None
    disconnected_at: datetime | None
    lost_at: datetime | None
    stopped_at: datetime | None

    @classmethod
    def of(cls, value: Any) -> Agent | None:
        data = _obj(value)
        agent = cls(
            id=_str(data.get("id")),
            name=_str(data.get("name")),
            connection_state=_str(data.get("connection_state")),
            hostname=_str(data.get("hostname")),
            version=_str(data.get("version")),
            queue=_meta_value(data.get("meta_data"), "queue"),
            connected_at=parse_time(data.get("connected_at")),
            disconnected_at=parse_time(data.get("disconnected_at")),
            lost_at=parse_time(data.get("lost_at")),
            stopped_at=parse_time(data.get("stopped_at")),
        )
        return agent if (agent.id or agent.name) else None


def _meta_value(meta: Any, key: str) -> str | None:
    """Agent meta_data is a list of "key=value" strings (sometimes a map)."""
    if isinstance(meta, Mapping):
        return _str(meta.get(key))
    if isinstance(meta, list):
        for item in meta:
            if isinstance(item, str) and item.startswith(key + "="):
                return item[len(key) + 1 :] or None
    return None


class Job(NamedTuple):
    id: str | None
    type: str | None
    name: str | None
    step_key: str | None
    state: str | None
    exit_status: int | None
    soft_failed: bool
    web_url: str | None
    retried: bool
    retries_count: int | None
    retry_type: str | None
    agent: Agent | None
    queue: str | None
    created_at: datetime | None
    scheduled_at: datetime | None
    runnable_at: datetime | None
    unblocked_at: datetime | None
    started_at: datetime | None
    finished_at: datetime | None

    @classmethod
    def of(cls, value: Any) -> Job | None:
        data = _obj(value)
        agent = Agent.of(data.get("agent"))
        rules = data.get("agent_query_rules")
        job = cls(
            id=_str(data.get("id")),
            type=_str(data.get("type")),
            name=_str(data.get("name")) or _str(data.get("label")),  # block steps use "label"
            step_key=_str(data.get("step_key")),
            state=_str(data.get("state")),
            exit_status=_int(data.get("exit_status")),
            soft_failed=_bool(data.get("soft_failed")),
            web_url=_str(data.get("web_url")),
            retried=_bool(data.get("retried")),
            retries_count=_int(data.get("retries_count")),
            retry_type=_str(data.get("retry_type")) or _str(_obj(data.get("retry_source")).get("retry_type")),
            agent=agent,
            queue=_meta_value(rules, "queue") or (agent.queue if agent else None),
            created_at=parse_time(data.get("created_at")),
            scheduled_at=parse_time(data.get("scheduled_at")),
            runnable_at=parse_time(data.get("runnable_at")),
            unblocked_at=parse_time(data.get("unblocked_at")),
            started_at=parse_time(data.get("started_at")),
            finished_at=parse_time(data.get("finished_at")),
        )
        return job if job.id else None

    @property
    def wait_seconds(self) -> float | None:
        return seconds_between(self.runnable_at or self.scheduled_at, self.started_at)

    @property
    def run_seconds(self) -> float | None:
        return seconds_between(self.started_at, self.finished_at)


@dataclass(frozen=True)
class BuildkiteEvent:
    """One Buildkite event, however it arrived (Pub/Sub push, CloudEvent, raw webhook body)."""

    event_type: str
    data: Mapping[str, Any]
    """The Buildkite body (``event``, ``build``, ``pipeline``, ``job``, ``agent``, ...), normalised
    from mcncl/buildkite-pubsub messages where needed. Nothing the sender gave is dropped."""
    payload: bytes = b""
    """The message data exactly as received (what an archive should keep)."""
    attributes: Mapping[str, str] = field(default_factory=dict)
    message_id: str | None = None
    publish_time: datetime | None = None
    format: str = "buildkite"
    """"buildkite" (a webhook body or our own message) or "mcncl" (mcncl/buildkite-pubsub)."""

    @property
    def kind(self) -> str:
        """build, job, agent, ping, cluster_token, or other."""
        head = self.event_type.split(".", 1)[0]
        return head if head in {"build", "job", "agent", "ping", "cluster_token"} else "other"

    @cached_property
    def build(self) -> Build | None:
        return Build.of(self.data.get("build"))

    @cached_property
    def job(self) -> Job | None:
        return Job.of(self.data.get("job"))

    @cached_property
    def agent(self) -> Agent | None:
        return Agent.of(self.data.get("agent"))

    @cached_property
    def pipeline(self) -> Pipeline | None:
        return Pipeline.of(self.data.get("pipeline"))

    @cached_property
    def pipeline_slug(self) -> str | None:
        slug = _str(_obj(self.data.get("pipeline")).get("slug"))
        if slug:
            return slug
        build_pipeline = _obj(self.data.get("build")).get("pipeline")
        return _str(build_pipeline) or _str(_obj(build_pipeline).get("slug"))

    @cached_property
    def organization(self) -> str | None:
        """Buildkite has no org slug field on builds: take it from the API/web URLs."""
        org = _obj(self.data.get("organization"))
        if _str(org.get("slug")):
            return _str(org.get("slug"))
        build = _obj(self.data.get("build"))
        if _str(build.get("organization")):  # our message and mcncl's carry it
            return _str(build.get("organization"))
        for source in (self.data.get("pipeline"), build, self.data.get("agent"), self.data.get("cluster_token")):
            url = _str(_obj(source).get("url"))
            match = _ORG_IN_URL.search(url or "")
            if match:
                return match.group(1)
        web_url = _str(_obj(self.data.get("pipeline")).get("web_url")) or _str(build.get("web_url"))
        match = _ORG_IN_WEB_URL.match(web_url or "")
        return match.group(1) if match else None

    @property
    def occurred_at(self) -> datetime | None:
        """The event's own latest timestamp, else the Pub/Sub publish time."""
        stamps: list[datetime | None] = []
        if self.kind == "job" and self.job:
            job = self.job
            stamps = [job.finished_at, job.started_at, job.unblocked_at, job.runnable_at, job.scheduled_at]
            stamps.append(job.created_at)
        elif self.kind == "agent" and self.agent:
            agent = self.agent
            stamps = [agent.stopped_at, agent.lost_at, agent.disconnected_at, agent.connected_at]
        elif self.build:
            build = self.build
            stamps = [build.finished_at, build.failing_at, build.started_at, build.scheduled_at, build.created_at]
        return next((s for s in stamps if s is not None), self.publish_time)

    @cached_property
    def key(self) -> str:
        """A deterministic identity for this event (Buildkite sends no delivery id).

        Event type + the object's id + its state + its timestamps: the same webhook
        redelivered gives the same key; a new transition of the same build gives a new one.
        Read from the raw body (it is on every delivery's path: no typed objects needed).
        """
        kind, data = self.kind, self.data
        job, agent, build = _obj(data.get("job")), _obj(data.get("agent")), _obj(data.get("build"))
        if kind == "job" and job.get("id"):
            parts = ["job", job.get("id"), job.get("state"), job.get("retried"), job.get("started_at")]
            parts.append(job.get("finished_at"))
        elif kind == "agent" and (agent.get("id") or agent.get("name")):
            parts = ["agent", agent.get("id") or agent.get("name"), agent.get("connection_state")]
            parts += [agent.get(k) for k in ("connected_at", "disconnected_at", "lost_at", "stopped_at")]
        elif build.get("id") or build.get("number"):
            identity = _scalar(build.get("id")) or f"{self.pipeline_slug}#{_scalar(build.get('number'))}"
            # blocked as a bool and no failing_at: mcncl/buildkite-pubsub drops both, and the same
            # event must get the same key whichever publisher carried it.
            parts = ["build", identity, build.get("state"), _bool(build.get("blocked"))]
            parts += [build.get(k) for k in ("started_at", "finished_at")]
        else:  # ping, cluster_token.*, future events: the body itself is the identity
            parts = ["body", _body_digest(data, self.payload)]
        text = "|".join([self.event_type, *(_scalar(p) or "" for p in parts)])
        return text if text.isascii() else _wire(text)

    @cached_property
    def key_hash(self) -> str:
        """Short, path-safe form of ``key``."""
        return hashlib.sha256(self.key.encode("utf-8", "surrogatepass")).hexdigest()[:16]

    def log_fields(self) -> dict[str, Any]:
        """Identifiers worth putting on every log line about this event (cheap: raw lookups)."""
        build = _obj(self.data.get("build"))
        fields: dict[str, Any] = {
            "event_type": self.event_type,
            "event_key": self.key_hash,
            "message_id": self.message_id,
            "organization": self.attributes.get("organization") or self.organization,
            "pipeline": self.pipeline_slug,
            "build_number": _int(build.get("number")) or None,
            "build_id": _str(build.get("id")),
        }
        return {k: v for k, v in fields.items() if v is not None}


def _scalar(value: Any) -> str | None:
    """A key part: only scalars count. An object where Buildkite sends a scalar (hostile input)
    would be keyed by its repr, which need not survive the trip through the topic."""
    return str(value) if isinstance(value, (str, int, float)) else None  # a tuple: faster than a union here


def _wire(text: str) -> str:
    """``text`` as it reads after a trip through the topic: lone surrogates (valid JSON escapes,
    invalid UTF-8) become U+FFFD, so an event keeps its key whichever way it arrived."""
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")


def _wired(value: Any) -> Any:
    if isinstance(value, str):
        return _wire(value)
    if isinstance(value, dict):
        return {_wire(k) if isinstance(k, str) else k: _wired(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_wired(v) for v in value]
    return value


def _body_digest(data: Mapping[str, Any], payload: bytes) -> str:
    """Hash of the body however it arrived (our message adds only ``event_type``)."""
    body = {k: v for k, v in data.items() if k != "event_type"}
    try:
        canonical = json.dumps(_wired(body), sort_keys=True, separators=(",", ":"), default=str)
    except (RecursionError, ValueError):  # nesting json.loads accepts but dumps cannot redo
        return hashlib.sha256(payload).hexdigest()
    return hashlib.sha256(canonical.encode("utf-8", "surrogatepass")).hexdigest()
