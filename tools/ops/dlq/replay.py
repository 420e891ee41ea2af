"""``make replay``: send one function's dead-lettered events back to that function only, through Pub/Sub.

The functions accept internal traffic only, so a replay cannot call them from a
workstation. Each message is published, with its original data and attributes, to the
function's replay topic (``<push subscription>-replay``), whose one push subscription
delivers to that function with the push account's token, the same retries and the same
dead-letter queue: no other function sees it, and one the function still cannot handle
comes back to the queue after ``max_delivery_attempts``. The dead-letter message is
acknowledged once Pub/Sub has the copy, so nothing is lost in between.

Terraform creates the replay topic and subscription; where they are missing (an older
deployment, the emulator) the first replay creates them from the function's push
subscription, and copies its IAM policy (the Pub/Sub service agent's grant that lets it
dead-letter) where Pub/Sub has one.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from tools.manifests import all_manifests

from .queues import DlqError, Queue, clients, discover, leased, short_name

PUBLISH_TIMEOUT = 60.0


@dataclass
class Outcome:
    message_id: str
    published: str | None  # the replayed copy's message id; None: not published
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.published is not None


@dataclass
class ReplayReport:
    function: str
    topic: str
    outcomes: list[Outcome] = field(default_factory=list)
    left: int = 0  # messages not attempted (limit, dry run, stopped after failures)
    created: list[str] = field(default_factory=list)  # what the replay had to create first

    @property
    def replayed(self) -> int:
        return sum(o.accepted for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(not o.accepted for o in self.outcomes)


def ensure_route(queue: Queue, subscriber: Any, publisher: Any) -> list[str]:
    """The replay topic and its push subscription, created like Terraform's when missing; what was created.

    Refuses a replay topic that another subscription reads, or whose subscription pushes
    anywhere but the function: a replay would reach someone else.
    """
    from google.api_core.exceptions import AlreadyExists, GoogleAPICallError, NotFound

    created = []
    labels = {"function": queue.function, "delivery": "replay"}
    try:
        publisher.get_topic(request={"topic": queue.replay_topic})
    except NotFound:
        try:
            publisher.create_topic(request={"name": queue.replay_topic, "labels": labels})
            created.append(queue.replay_topic)
        except AlreadyExists:
            pass  # created meanwhile by another replay
    try:
        existing = subscriber.get_subscription(request={"subscription": queue.replay_subscription})
    except NotFound:
        source = subscriber.get_subscription(request={"subscription": queue.subscription})
        request: dict[str, Any] = {
            "name": queue.replay_subscription,
            "topic": queue.replay_topic,
            "labels": labels,
            "push_config": source.push_config,
            "ack_deadline_seconds": source.ack_deadline_seconds,
            "dead_letter_policy": source.dead_letter_policy,
            "expiration_policy": {"ttl": None},
        }
        if source.retry_policy:
            request["retry_policy"] = source.retry_policy
        existing = subscriber.create_subscription(request=request)
        created.append(queue.replay_subscription)
        try:  # the service agent's subscriber grant, so that a failed replay can dead-letter again
            policy = subscriber.get_iam_policy(request={"resource": queue.subscription})
            if policy.bindings:
                subscriber.set_iam_policy(request={"resource": queue.replay_subscription, "policy": policy})
        except GoogleAPICallError:
            pass  # no IAM here (the emulator); Terraform's deployments carry the grant themselves
    if existing.push_config.push_endpoint != queue.endpoint:
        raise DlqError(
            f"{queue.replay_subscription} pushes to {existing.push_config.push_endpoint or 'nowhere'}, "
            f"not to {queue.function} ({queue.endpoint})"
        )
    readers = sorted(publisher.list_topic_subscriptions(request={"topic": queue.replay_topic}))
    if readers != [queue.replay_subscription]:
        raise DlqError(
            f"{queue.replay_topic} must have {queue.replay_subscription} as its only subscription: {readers}"
        )
    return created


def replay(
    project: str,
    function: str,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    stop_after_failures: int = 3,
    subscriber: Any = None,
    publisher: Any = None,
) -> ReplayReport:
    """Publish ``function``'s dead-lettered messages to its replay topic; ack each once Pub/Sub has it."""
    manifests = all_manifests()
    if function not in manifests:
        raise DlqError(f"unknown function {function!r}; known: {', '.join(manifests)}")
    if not manifests[function].is_pubsub:
        raise DlqError(f"{function} is not a Pub/Sub function: it has no dead-letter queue")
    subscriber, publisher = clients(subscriber, publisher)
    queue = discover(project, [function], subscriber, publisher)[function]
    if not isinstance(queue, Queue):
        raise DlqError(queue)
    report = ReplayReport(function, queue.replay_topic)
    with leased(subscriber, queue.dead_letter_subscription) as lease:
        letters = lease.pull(limit)
        if dry_run:
            report.left = len(letters)
            return report
        if letters:
            report.created = ensure_route(queue, subscriber, publisher)
        failures_in_a_row = 0
        for index, letter in enumerate(letters):
            if failures_in_a_row >= stop_after_failures:
                report.left = len(letters) - index
                break
            try:
                future = publisher.publish(queue.replay_topic, letter.data, **letter.original_attributes)
                outcome = Outcome(letter.message_id, str(future.result(timeout=PUBLISH_TIMEOUT)))
            except Exception as err:  # the publisher raises API and timeout errors of several kinds
                outcome = Outcome(letter.message_id, None, f"{type(err).__name__}: {err}"[:300])
            report.outcomes.append(outcome)
            if outcome.accepted:
                lease.ack(letter)
                failures_in_a_row = 0
            else:
                failures_in_a_row += 1
    return report


def render_replay(report: ReplayReport) -> str:
    out = [f"{report.function}: replaying through {report.topic}"]
    out += [f"  created {short_name(name)} (as Terraform would)" for name in report.created]
    for outcome in report.outcomes:
        if outcome.accepted:
            out.append(
                f"  {outcome.message_id:<10} published as {outcome.published}: removed from the dead-letter queue"
            )
        else:
            out.append(
                f"  {outcome.message_id:<10} not published, stays in the queue ({outcome.detail or 'no detail'})"
            )
    summary = f"{report.replayed} replayed, {report.failed} failed (still queued)"
    if report.left:
        summary += f", {report.left} not attempted (still queued)"
    out.append(summary)
    if report.replayed:
        out.append(
            f"{report.function} receives them from its replay subscription; any it still cannot handle come back "
            "to the dead-letter queue after its retries (`make dlq` shows them)."
        )
    return "\n".join(out)
