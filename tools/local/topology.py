"""The Pub/Sub wiring Terraform creates in production, made on the emulator from the manifests.

Per Pub/Sub function: a push subscription on the events topic with the manifest's filter,
ack deadline, retry policy and dead-letter policy, plus a dead-letter topic with a pull
subscription. The emulator ignores filters, which is why each function re-checks its own.
"""

from __future__ import annotations

import base64
import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from buildkite_events import manifest as model
from buildkite_events.manifest import Manifest


@dataclass(frozen=True)
class Wiring:
    function: str
    subscription: str
    dead_letter_topic: str
    dead_letter_subscription: str


def subscription_name(project: str, topic: str, function: str) -> str:
    """The function's push subscription, named as Terraform names it (buildkite_events.manifest)."""
    return f"projects/{project}/subscriptions/{model.subscription_name(topic, function)}"


def dead_letter_names(project: str, function: str, topic: str = "buildkite-events") -> tuple[str, str]:
    """(dead-letter topic, its pull subscription), named as Terraform names them (buildkite_events.manifest)."""
    name = model.dead_letter_name(topic, function)
    return f"projects/{project}/topics/{name}", f"projects/{project}/subscriptions/{name}"


def create_topology(
    project: str,
    topic: str,
    endpoints: Mapping[str, str],
    manifests: Mapping[str, Manifest],
    *,
    max_backoff_seconds: int | None = None,
) -> dict[str, Wiring]:
    """Create the topic and, for each function in ``endpoints``, its subscriptions.

    ``max_backoff_seconds`` caps the retry backoff, so a local run reaches the
    dead-letter queue in seconds instead of minutes.
    """
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    subscriber = pubsub_v1.SubscriberClient()
    topic_path = publisher.topic_path(project, topic)
    publisher.create_topic(name=topic_path)
    wiring: dict[str, Wiring] = {}
    for name, endpoint in endpoints.items():
        delivery = manifests[name].delivery
        dl_topic, dl_sub = dead_letter_names(project, name, topic)
        publisher.create_topic(name=dl_topic)
        subscriber.create_subscription(name=dl_sub, topic=dl_topic)
        min_backoff, max_backoff = delivery.min_backoff_seconds, delivery.max_backoff_seconds
        if max_backoff_seconds is not None:
            min_backoff, max_backoff = min(min_backoff, max_backoff_seconds), min(max_backoff, max_backoff_seconds)
        subscription = subscription_name(project, topic, name)
        subscriber.create_subscription(
            request={
                "name": subscription,
                "topic": topic_path,
                "push_config": {"push_endpoint": endpoint},
                "ack_deadline_seconds": delivery.ack_deadline_seconds,
                "filter": manifests[name].filter,
                "retry_policy": {
                    "minimum_backoff": timedelta(seconds=min_backoff),
                    "maximum_backoff": timedelta(seconds=max_backoff),
                },
                "dead_letter_policy": {
                    "dead_letter_topic": dl_topic,
                    "max_delivery_attempts": delivery.max_delivery_attempts,
                },
            }
        )
        wiring[name] = Wiring(name, subscription, dl_topic, dl_sub)
    subscriber.close()
    return wiring


def pull_all(subscription: str, *, ack: bool = False, max_messages: int = 100) -> list[dict[str, Any]]:
    """Drain what a pull subscription holds right now (dead-letter queues)."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    messages: list[dict[str, Any]] = []
    try:
        while True:
            # return_immediately: an empty pull on the emulator otherwise blocks for seconds
            request = {"subscription": subscription, "max_messages": max_messages, "return_immediately": True}
            response = subscriber.pull(request=request, timeout=5)
            if not response.received_messages:
                break
            for received in response.received_messages:
                message = received.message
                messages.append(
                    {
                        "message_id": message.message_id,
                        "attributes": dict(message.attributes),
                        "data": bytes(message.data),
                        "ack_id": received.ack_id,
                    }
                )
            if ack:
                subscriber.acknowledge(
                    request={"subscription": subscription, "ack_ids": [r.ack_id for r in response.received_messages]}
                )
            else:
                break
    finally:
        subscriber.close()
    return messages


def publish_raw(project: str, topic: str, data: bytes, attributes: Mapping[str, str]) -> str:
    """Publish as another producer would (e.g. mcncl/buildkite-pubsub), bypassing the ingress."""
    from google.cloud import pubsub_v1

    publisher = pubsub_v1.PublisherClient()
    future = publisher.publish(publisher.topic_path(project, topic), data, **attributes)  # type: ignore[arg-type]
    return str(future.result(timeout=30))


def push_envelope(
    data: bytes, attributes: Mapping[str, str], message_id: str = "1", subscription: str = "s"
) -> dict[str, Any]:
    """The JSON body Pub/Sub POSTs to a push endpoint."""
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": dict(attributes),
            "messageId": message_id,
            "publishTime": "2025-06-12T03:40:00.000Z",
        },
        "subscription": f"projects/p/subscriptions/{subscription}",
    }


def envelope_json(data: bytes, attributes: Mapping[str, str], message_id: str = "1") -> bytes:
    return json.dumps(push_envelope(data, attributes, message_id)).encode()
