"""Finding each function's dead-letter queue in Pub/Sub, and holding its messages while we look.

The queues are found from Pub/Sub itself, not from naming rules: a function's push
subscription is the one labelled ``function=<name>`` (Terraform) or named ``<name>`` /
``…-<name>`` (the local stack), other than its replay subscription; its dead-letter policy
names the dead-letter topic, whose pull subscription holds the messages.
"""

from __future__ import annotations

import base64
import os
import shutil
import subprocess
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from tools import LOCAL_PROJECT
from tools.manifests import all_manifests

SOURCE_PREFIX = "CloudPubSubDeadLetterSource"
DELIVERY_COUNT = SOURCE_PREFIX + "DeliveryCount"
SOURCE_SUBSCRIPTION = SOURCE_PREFIX + "Subscription"
SOURCE_PROJECT = SOURCE_PREFIX + "SubscriptionProject"
SOURCE_PUBLISH_TIME = SOURCE_PREFIX + "TopicPublishTime"
REPLAY_SUFFIX = "-replay"
LEASE_SECONDS = 600  # Pub/Sub's longest ack deadline: a message being looked at is not handed out twice
PULL_BATCH = 100


class DlqError(RuntimeError):
    """Something an operator must fix (no such function, no queue, no token); the message says what."""


# --- finding the queues -----------------------------------------------------------------------


@dataclass(frozen=True)
class Queue:
    """One Pub/Sub function's push subscription and the dead-letter subscription behind it."""

    function: str
    subscription: str  # projects/P/subscriptions/S, the push subscription
    endpoint: str
    dead_letter_topic: str
    dead_letter_subscription: str
    max_delivery_attempts: int
    audience: str = ""
    service_account: str = ""
    ack_deadline_seconds: int = 60
    retry_policy: Any = None  # the push subscription's, copied onto its replay subscription

    @property
    def replay_topic(self) -> str:
        """``<push subscription>-replay``, as terraform/pubsub.tf names it (a topic and its subscription)."""
        project = self.subscription.split("/")[1]
        return f"projects/{project}/topics/{short_name(self.subscription)}{REPLAY_SUFFIX}"

    @property
    def replay_subscription(self) -> str:
        return self.replay_topic.replace("/topics/", "/subscriptions/")


def resolve_project(explicit: str | None = None) -> str:
    """``--project``, then PROJECT, GOOGLE_CLOUD_PROJECT, the local stack's (emulator), gcloud's default."""
    for value in (explicit, os.environ.get("PROJECT"), os.environ.get("GOOGLE_CLOUD_PROJECT")):
        if value:
            return value
    if os.environ.get("PUBSUB_EMULATOR_HOST"):
        return LOCAL_PROJECT
    gcloud = shutil.which("gcloud")
    if gcloud:
        result = subprocess.run(
            [gcloud, "config", "get-value", "project"], capture_output=True, text=True, timeout=30, check=False
        )
        value = result.stdout.strip()
        if result.returncode == 0 and value and value != "(unset)":
            return value
    raise DlqError("no project: pass --project, set PROJECT, or `gcloud config set project ...`")


def pubsub_functions() -> list[str]:
    return [name for name, m in all_manifests().items() if m.is_pubsub]


def short_name(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _is_replay(subscription: Any) -> bool:
    return dict(subscription.labels).get("delivery") == "replay" or short_name(subscription.name).endswith(
        REPLAY_SUFFIX
    )


def _match(function: str, subscriptions: Sequence[Any]) -> Any | None:
    """The push subscription of ``function``: labelled, else named exactly, else ``…-<function>``."""
    for rule in (
        lambda s: dict(s.labels).get("function") == function,
        lambda s: short_name(s.name) == function,
        lambda s: short_name(s.name).endswith(f"-{function}"),
    ):
        found = [s for s in subscriptions if rule(s)]
        if len(found) > 1:
            names = ", ".join(sorted(s.name for s in found))
            raise DlqError(f"several subscriptions could be {function}'s: {names}")
        if found:
            return found[0]
    return None


def discover(project: str, functions: Iterable[str], subscriber: Any, publisher: Any) -> dict[str, Queue | str]:
    """Per function its ``Queue``, or a sentence saying why it has none."""
    candidates = [
        s
        for s in subscriber.list_subscriptions(request={"project": f"projects/{project}"})
        if s.push_config.push_endpoint and s.dead_letter_policy.dead_letter_topic and not _is_replay(s)
    ]
    found: dict[str, Queue | str] = {}
    for function in functions:
        sub = _match(function, candidates)
        if sub is None:
            found[function] = f"no push subscription with a dead-letter policy for {function} in {project}"
            continue
        topic = sub.dead_letter_policy.dead_letter_topic
        pulls = list(publisher.list_topic_subscriptions(request={"topic": topic}))
        named = [p for p in pulls if short_name(p) == short_name(topic)]
        if len(named) == 1 or len(pulls) == 1:
            dead_letter_subscription = (named or pulls)[0]
        else:
            why = "no subscription" if not pulls else f"several subscriptions ({', '.join(pulls)})"
            found[function] = f"dead-letter topic {topic} has {why}: cannot tell where its messages wait"
            continue
        oidc = sub.push_config.oidc_token
        found[function] = Queue(
            function=function,
            subscription=sub.name,
            endpoint=sub.push_config.push_endpoint,
            dead_letter_topic=topic,
            dead_letter_subscription=dead_letter_subscription,
            max_delivery_attempts=sub.dead_letter_policy.max_delivery_attempts or 5,
            audience=oidc.audience or "",
            service_account=oidc.service_account_email or "",
            ack_deadline_seconds=sub.ack_deadline_seconds or 60,
            retry_policy=sub.retry_policy,
        )
    return found


# --- the messages ---------------------------------------------------------------------------


@dataclass
class DeadLetter:
    """One message in a dead-letter subscription, as pulled."""

    message_id: str
    ack_id: str
    data: bytes
    attributes: dict[str, str]
    dead_lettered_at: datetime | None = None
    problem: str | None = None  # why it cannot even be read as an event
    event: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def from_received(cls, received: Any) -> DeadLetter:
        message = received.message
        at = message.publish_time
        letter = cls(
            message_id=message.message_id,
            ack_id=received.ack_id,
            data=bytes(message.data),
            attributes=dict(message.attributes),
            dead_lettered_at=datetime.fromtimestamp(at.timestamp(), UTC) if at else None,
        )
        letter.event = letter._describe_event()
        return letter

    @property
    def delivery_count(self) -> int | None:
        value = self.attributes.get(DELIVERY_COUNT, "")
        return int(value) if value.isdigit() else None

    @property
    def source_subscription(self) -> str | None:
        name = self.attributes.get(SOURCE_SUBSCRIPTION)
        if not name:
            return None
        if name.startswith("projects/"):
            return name
        project = self.attributes.get(SOURCE_PROJECT)
        return f"projects/{project}/subscriptions/{name}" if project else name

    @property
    def original_attributes(self) -> dict[str, str]:
        return {k: v for k, v in self.attributes.items() if not k.startswith(SOURCE_PREFIX)}

    @property
    def originally_published(self) -> str | None:
        return self.attributes.get(SOURCE_PUBLISH_TIME)

    def _describe_event(self) -> dict[str, Any]:
        from buildkite_events.errors import InvalidEvent
        from buildkite_events.parse import parse_delivery

        try:
            event = parse_delivery(self.push_body("projects/-/subscriptions/-"))
        except InvalidEvent as err:
            self.problem = str(err)
            attributes = self.original_attributes
            return {k: attributes.get(k) for k in ("event_type", "pipeline", "build_number", "build_state")}
        build = event.build
        return {
            "event_type": event.event_type,
            "pipeline": event.pipeline_slug,
            "build_number": build.number if build else None,
            "build_state": build.effective_state if build else None,
            "event_key": event.key_hash,
        }

    def push_body(self, subscription: str) -> dict[str, Any]:
        """What Pub/Sub would have pushed: the original data, attributes and publish time."""
        published = self.originally_published
        if not published and self.dead_lettered_at:
            published = self.dead_lettered_at.isoformat(timespec="milliseconds").replace("+00:00", "Z")
        message: dict[str, Any] = {
            "data": base64.b64encode(self.data).decode("ascii"),
            "attributes": self.original_attributes,
            "messageId": self.message_id,
            "message_id": self.message_id,
        }
        if published:
            message["publishTime"] = message["publish_time"] = published
        return {"message": message, "subscription": self.source_subscription or subscription}

    def summary(self) -> dict[str, Any]:
        return {
            "message_id": self.message_id,
            "dead_lettered_at": _iso(self.dead_lettered_at),
            "published_at": self.originally_published,
            "delivery_count": self.delivery_count,
            "source_subscription": self.source_subscription,
            **self.event,
            **({"unreadable": self.problem} if self.problem else {}),
        }


def _iso(value: datetime | None) -> str | None:
    return value.isoformat(timespec="seconds").replace("+00:00", "Z") if value else None


class Lease:
    """Messages pulled from one dead-letter subscription and held until acked or handed back."""

    def __init__(self, subscriber: Any, subscription: str) -> None:
        self.subscriber = subscriber
        self.subscription = subscription
        self.held: dict[str, DeadLetter] = {}  # ack_id -> message, still ours to settle

    def pull(self, limit: int | None = None) -> list[DeadLetter]:
        """Everything the subscription holds now (up to ``limit``), each leased for ``LEASE_SECONDS``.

        An empty pull ends it. Against the emulator the pull returns at once when nothing is
        there (otherwise it waits ~10 s); Pub/Sub itself answers promptly while messages wait.
        """
        from google.api_core.exceptions import DeadlineExceeded

        seen: dict[str, DeadLetter] = {}
        immediately = {"return_immediately": True} if os.environ.get("PUBSUB_EMULATOR_HOST") else {}
        while limit is None or len(seen) < limit:
            batch = PULL_BATCH if limit is None else min(PULL_BATCH, limit - len(seen))
            try:
                response = self.subscriber.pull(
                    request={"subscription": self.subscription, "max_messages": batch, **immediately}, timeout=10
                )
                received = list(response.received_messages)
            except DeadlineExceeded:
                received = []
            if not received:
                break
            ack_ids = [r.ack_id for r in received]
            self.subscriber.modify_ack_deadline(
                request={"subscription": self.subscription, "ack_ids": ack_ids, "ack_deadline_seconds": LEASE_SECONDS}
            )
            for item in received:
                letter = DeadLetter.from_received(item)
                self.held[letter.ack_id] = letter
                if letter.message_id in seen:  # a redelivery of one we hold: settle the newer lease only
                    self.held.pop(seen[letter.message_id].ack_id, None)
                seen[letter.message_id] = letter
        return sorted(seen.values(), key=lambda m: m.dead_lettered_at or datetime.min.replace(tzinfo=UTC))

    def ack(self, letter: DeadLetter) -> None:
        self.subscriber.acknowledge(request={"subscription": self.subscription, "ack_ids": [letter.ack_id]})
        self.held.pop(letter.ack_id, None)

    def release(self) -> None:
        """Hand back every message still held: it is at once available again, nothing is lost."""
        if self.held:
            ack_ids = list(self.held)
            for start in range(0, len(ack_ids), 1000):
                self.subscriber.modify_ack_deadline(
                    request={
                        "subscription": self.subscription,
                        "ack_ids": ack_ids[start : start + 1000],
                        "ack_deadline_seconds": 0,
                    }
                )
            self.held.clear()


@contextmanager
def leased(subscriber: Any, subscription: str) -> Iterator[Lease]:
    lease = Lease(subscriber, subscription)
    try:
        yield lease
    finally:
        lease.release()


def clients(subscriber: Any, publisher: Any) -> tuple[Any, Any]:
    if subscriber is None or publisher is None:
        from google.cloud import pubsub_v1

        subscriber = subscriber or pubsub_v1.SubscriberClient()
        publisher = publisher or pubsub_v1.PublisherClient()
    return subscriber, publisher
