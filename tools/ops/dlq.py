"""Dead-letter queues: what each function gave up on, and replaying it to that function only.

    python -m tools.ops.dlq list [FUNCTION ...] [--project P] [--logs DIR | --no-logs] [--json]
    python -m tools.ops.dlq replay FUNCTION [--project P] [--limit N] [--dry-run] [--endpoint URL]

Works against real Pub/Sub (project from ``--project``, ``PROJECT``, ``GOOGLE_CLOUD_PROJECT``
or gcloud's default) and against the emulator (``PUBSUB_EMULATOR_HOST``; the local stack's
project by default).

The queues are found from Pub/Sub itself, not from naming rules: a function's push
subscription is the one labelled ``function=<name>`` (Terraform) or named ``<name>`` /
``…-<name>`` (the local stack); its dead-letter policy names the dead-letter topic, whose
pull subscription holds the messages. ``list`` only looks: every message it pulls is handed
back (deadline 0) when it is done. Pub/Sub does not keep the function's error with the
message, so ``list`` shows what the message carries (the event, the delivery count and the
source subscription from the ``CloudPubSubDeadLetterSource*`` attributes) and looks the
function's last error up in its logs by ``event_key``: the local stack's log files, or
Cloud Logging through ``gcloud logging read``.

``replay`` POSTs each message as a Pub/Sub push body straight to that function's push
endpoint (read from its subscription), so no other function sees it again, and acknowledges
the dead-letter message only once the function answered 2xx. Anything else stays in the
queue. In production the endpoint needs an OIDC token the function accepts: the push
service account's, minted by impersonating it (``gcloud auth print-identity-token
--impersonate-service-account``; the operator needs ``roles/iam.serviceAccountOpenIdTokenCreator``
on it), or ``REPLAY_ID_TOKEN``, or google-auth's ``fetch_id_token`` for the application
default credentials. Functions are idempotent, so replaying a message that did get handled
meanwhile is harmless.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from buildkite_events.errors import ACKED_OUTCOMES
from tools import LOCAL_PROJECT, ROOT
from tools.manifests import all_manifests

SOURCE_PREFIX = "CloudPubSubDeadLetterSource"
DELIVERY_COUNT = SOURCE_PREFIX + "DeliveryCount"
SOURCE_SUBSCRIPTION = SOURCE_PREFIX + "Subscription"
SOURCE_PROJECT = SOURCE_PREFIX + "SubscriptionProject"
SOURCE_PUBLISH_TIME = SOURCE_PREFIX + "TopicPublishTime"
LOCAL_LOGS = ROOT / ".stack" / "logs"
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


def _short(path: str) -> str:
    return path.rsplit("/", 1)[-1]


def _match(function: str, subscriptions: Sequence[Any]) -> Any | None:
    """The push subscription of ``function``: labelled, else named exactly, else ``…-<function>``."""
    for rule in (
        lambda s: dict(s.labels).get("function") == function,
        lambda s: _short(s.name) == function,
        lambda s: _short(s.name).endswith(f"-{function}"),
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
        if s.push_config.push_endpoint and s.dead_letter_policy.dead_letter_topic
    ]
    found: dict[str, Queue | str] = {}
    for function in functions:
        sub = _match(function, candidates)
        if sub is None:
            found[function] = f"no push subscription with a dead-letter policy for {function} in {project}"
            continue
        topic = sub.dead_letter_policy.dead_letter_topic
        pulls = list(publisher.list_topic_subscriptions(request={"topic": topic}))
        named = [p for p in pulls if _short(p) == _short(topic)]
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


# --- the function's last error, from its logs -------------------------------------------------


def errors_from_lines(lines: Iterable[Mapping[str, Any]], function: str) -> dict[str, Mapping[str, Any]]:
    """event_key → the last non-acked ``outcome`` line ``function`` logged for it."""
    last: dict[str, Mapping[str, Any]] = {}
    for line in lines:
        key = line.get("event_key")
        if line.get("function") != function or not key or "outcome" not in line:
            continue
        if line["outcome"] in ACKED_OUTCOMES:
            continue
        if key not in last or str(line.get("time", "")) >= str(last[key].get("time", "")):
            last[key] = line
    return last


def local_log_lines(log_dir: Path) -> Iterator[dict[str, Any]]:
    """JSON lines of every ``*.log`` in ``log_dir`` (the local stack writes one per process)."""
    for path in sorted(Path(log_dir).glob("*.log")):
        with path.open(errors="replace") as handle:
            for raw in handle:
                if raw.startswith("{") and '"outcome"' in raw:
                    try:
                        value = json.loads(raw)
                    except ValueError:
                        continue
                    if isinstance(value, dict):
                        yield value


def cloud_log_lines(project: str, function: str, days: int = 7) -> list[dict[str, Any]]:
    """The function's failed-delivery lines from Cloud Logging, via ``gcloud logging read``."""
    gcloud = shutil.which("gcloud")
    if not gcloud:
        raise DlqError("gcloud is not on PATH (needed to read Cloud Logging; --no-logs skips it)")
    acked = " OR ".join(json.dumps(outcome) for outcome in sorted(ACKED_OUTCOMES))
    query = f'jsonPayload.function="{function}" AND jsonPayload.outcome:* AND NOT jsonPayload.outcome=({acked})'
    argv = [gcloud, "logging", "read", query, f"--project={project}", f"--freshness={days}d"]
    argv += ["--limit=2000", "--format=json"]
    result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise DlqError(f"gcloud logging read failed: {result.stderr.strip()[-500:]}")
    entries = json.loads(result.stdout or "[]")
    return [
        e["jsonPayload"] | {"time": e.get("timestamp", "")} for e in entries if isinstance(e.get("jsonPayload"), dict)
    ]


# --- list -----------------------------------------------------------------------------------


@dataclass
class Listing:
    function: str
    queue: Queue | None
    messages: list[DeadLetter]
    note: str = ""  # why there is no queue
    errors: dict[str, Mapping[str, Any]] = field(default_factory=dict)

    def rows(self) -> list[dict[str, Any]]:
        rows = []
        for letter in self.messages:
            row = {"function": self.function, **letter.summary()}
            error = self.errors.get(str(letter.event.get("event_key")))
            if error:
                row["last_error"] = {k: error.get(k) for k in ("time", "outcome", "message")}
            rows.append(row)
        return rows


def list_queues(
    project: str,
    functions: Sequence[str],
    *,
    logs: Path | None = None,
    cloud_logging: bool = False,
    subscriber: Any = None,
    publisher: Any = None,
) -> list[Listing]:
    """Peek at each function's dead-letter queue; every message is handed back afterwards."""
    subscriber, publisher = _clients(subscriber, publisher)
    local_lines: list[dict[str, Any]] | None = None
    listings = []
    for function, queue in discover(project, functions, subscriber, publisher).items():
        if not isinstance(queue, Queue):
            listings.append(Listing(function, None, [], note=queue))
            continue
        with leased(subscriber, queue.dead_letter_subscription) as lease:
            messages = lease.pull()
        listing = Listing(function, queue, messages)
        if messages and logs:
            if local_lines is None:  # read after pulling: the last failure is logged before dead-lettering
                local_lines = list(local_log_lines(logs))
            listing.errors = errors_from_lines(local_lines, function)
        elif messages and cloud_logging:
            listing.errors = errors_from_lines(cloud_log_lines(project, function), function)
        listings.append(listing)
    return listings


def render(listings: Sequence[Listing]) -> str:
    out: list[str] = []
    for listing in listings:
        queue = listing.queue
        if queue is None:
            out.append(f"{listing.function}: {listing.note}")
            continue
        count = len(listing.messages)
        out.append(
            f"{listing.function}: {count} dead-lettered in {queue.dead_letter_subscription}"
            f" (after {queue.max_delivery_attempts} attempts on {_short(queue.subscription)})"
        )
        for row in listing.rows():
            build = f"#{row['build_number']}" if row.get("build_number") is not None else "-"
            out.append(
                f"  {row['message_id']:<10} {row.get('event_type') or '?':<24} {row.get('pipeline') or '-':<20}"
                f" {build:<8} {row.get('build_state') or '-':<9} delivered {row.get('delivery_count') or '?'}x"
                f" via {row.get('source_subscription') or '?'}"
            )
            detail = [
                f"dead-lettered {row.get('dead_lettered_at') or '?'}",
                f"first published {row.get('published_at') or '?'}",
                f"event_key {row.get('event_key') or '-'}",
            ]
            out.append("             " + ", ".join(detail))
            if row.get("unreadable"):
                out.append(f"             unreadable: {row['unreadable']}")
            error = row.get("last_error")
            if error:
                out.append(f"             last error {error.get('time') or ''}: {error.get('message')}")
            elif listing.errors or row.get("event_key"):
                out.append(
                    f"             last error: not in the logs searched (look for event_key={row.get('event_key')})"
                )
    total = sum(len(listing.messages) for listing in listings)
    out.append(f"{total} dead-lettered message{'s' if total != 1 else ''} in all")
    return "\n".join(out)


# --- replay ---------------------------------------------------------------------------------


@dataclass
class Outcome:
    message_id: str
    status: int | None  # HTTP status from the function; None: not sent (dry run) or unreachable
    detail: str = ""

    @property
    def accepted(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class ReplayReport:
    function: str
    endpoint: str
    outcomes: list[Outcome] = field(default_factory=list)
    left: int = 0  # messages not attempted (limit, dry run, stopped after failures)

    @property
    def replayed(self) -> int:
        return sum(o.accepted for o in self.outcomes)

    @property
    def failed(self) -> int:
        return sum(not o.accepted for o in self.outcomes)


TokenSource = Callable[[Queue], "str | None"]


def id_token(queue: Queue, *, emulator: bool | None = None) -> str | None:
    """An OIDC token the function accepts, or None against the emulator (local functions check none).

    REPLAY_ID_TOKEN wins; then gcloud impersonating the push service account; then
    google-auth's ``fetch_id_token`` with the application default credentials.
    """
    if os.environ.get("REPLAY_ID_TOKEN"):
        return os.environ["REPLAY_ID_TOKEN"]
    if emulator if emulator is not None else bool(os.environ.get("PUBSUB_EMULATOR_HOST")):
        return None
    audience = queue.audience or queue.endpoint
    gcloud = shutil.which("gcloud")
    problems = []
    if gcloud and queue.service_account:
        argv = [
            gcloud,
            "auth",
            "print-identity-token",
            f"--impersonate-service-account={queue.service_account}",
            f"--audiences={audience}",
            "--include-email",
        ]
        result = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if result.returncode == 0 and result.stdout.strip():
            return result.stdout.strip()
        problems.append(f"gcloud: {result.stderr.strip()[-300:]}")
    try:
        import google.auth.transport.requests
        from google.oauth2 import id_token as google_id_token

        token: str = google_id_token.fetch_id_token(google.auth.transport.requests.Request(), audience)
        return token
    except Exception as err:  # google-auth raises several unrelated types here
        problems.append(f"google-auth: {type(err).__name__}: {err}")
    raise DlqError(
        f"no OIDC token for {audience}: impersonate the push service account {queue.service_account or '?'} "
        "(roles/iam.serviceAccountOpenIdTokenCreator) or set REPLAY_ID_TOKEN "
        f"(gcloud auth print-identity-token --audiences={audience} ...). " + "; ".join(problems)
    )


def post(endpoint: str, body: Mapping[str, Any], token: str | None, timeout: float) -> tuple[int | None, str]:
    """POST a push body; (status, short detail). Connection problems come back as (None, reason)."""
    headers = {"Content-Type": "application/json", "User-Agent": "buildkite-fanout-dlq-replay"}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    request = urllib.request.Request(endpoint, data=json.dumps(body).encode(), headers=headers, method="POST")
    host = urlsplit(endpoint).hostname or ""
    handlers = [urllib.request.ProxyHandler({})] if host in ("127.0.0.1", "localhost", "::1") else []
    opener = urllib.request.build_opener(*handlers)
    try:
        with opener.open(request, timeout=timeout) as response:
            return response.status, response.read(300).decode("utf-8", "replace")
    except urllib.error.HTTPError as err:
        return err.code, err.read(300).decode("utf-8", "replace")
    except (OSError, ValueError) as err:
        return None, f"{type(err).__name__}: {err}"


def replay(
    project: str,
    function: str,
    *,
    limit: int | None = None,
    dry_run: bool = False,
    endpoint: str | None = None,
    token_source: TokenSource = id_token,
    stop_after_failures: int = 3,
    subscriber: Any = None,
    publisher: Any = None,
) -> ReplayReport:
    """Replay ``function``'s dead-lettered messages to its push endpoint; ack each one it accepts."""
    manifests = all_manifests()
    if function not in manifests:
        raise DlqError(f"unknown function {function!r}; known: {', '.join(manifests)}")
    if not manifests[function].is_pubsub:
        raise DlqError(f"{function} is not a Pub/Sub function: it has no dead-letter queue")
    subscriber, publisher = _clients(subscriber, publisher)
    queue = discover(project, [function], subscriber, publisher)[function]
    if not isinstance(queue, Queue):
        raise DlqError(queue)
    target = endpoint or queue.endpoint
    report = ReplayReport(function, target)
    timeout = manifests[function].timeout_seconds + 15.0
    with leased(subscriber, queue.dead_letter_subscription) as lease:
        letters = lease.pull(limit)
        token = token_source(queue) if letters and not dry_run else None
        failures_in_a_row = 0
        for index, letter in enumerate(letters):
            if dry_run or failures_in_a_row >= stop_after_failures:
                report.left = len(letters) - index
                break
            status, detail = post(target, letter.push_body(queue.subscription), token, timeout)
            outcome = Outcome(letter.message_id, status, detail.strip()[:300])
            report.outcomes.append(outcome)
            if outcome.accepted:
                lease.ack(letter)
                failures_in_a_row = 0
            else:
                failures_in_a_row += 1
    return report


def render_replay(report: ReplayReport) -> str:
    out = [f"{report.function}: replaying to {report.endpoint}"]
    for outcome in report.outcomes:
        if outcome.accepted:
            out.append(f"  {outcome.message_id:<10} HTTP {outcome.status}: acknowledged, removed from the queue")
        else:
            answer = f"HTTP {outcome.status}" if outcome.status else "no answer"
            out.append(f"  {outcome.message_id:<10} {answer}: stays in the queue ({outcome.detail or 'no detail'})")
    summary = f"{report.replayed} replayed, {report.failed} failed (still queued)"
    if report.left:
        summary += f", {report.left} not attempted (still queued)"
    out.append(summary)
    return "\n".join(out)


# --- command line ---------------------------------------------------------------------------


def _clients(subscriber: Any, publisher: Any) -> tuple[Any, Any]:
    if subscriber is None or publisher is None:
        from google.cloud import pubsub_v1

        subscriber = subscriber or pubsub_v1.SubscriberClient()
        publisher = publisher or pubsub_v1.PublisherClient()
    return subscriber, publisher


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.dlq", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", help="Google Cloud project (default: PROJECT, GOOGLE_CLOUD_PROJECT, gcloud)")
    commands = parser.add_subparsers(dest="command", required=True)
    show = commands.add_parser("list", help="list dead-lettered messages per function (nothing is acknowledged)")
    show.add_argument("functions", nargs="*", help="functions to look at (default: every Pub/Sub function)")
    show.add_argument("--logs", type=Path, help="directory of function log files to find each last error in")
    show.add_argument("--no-logs", action="store_true", help="do not look for the last error")
    show.add_argument("--json", action="store_true", help="one JSON object per message")
    again = commands.add_parser("replay", help="replay one function's dead-lettered messages to it")
    again.add_argument("function")
    again.add_argument("--limit", type=int, help="replay at most this many")
    again.add_argument("--dry-run", action="store_true", help="show what would be replayed; change nothing")
    again.add_argument("--endpoint", help="POST here instead of the push endpoint of the function's subscription")
    again.add_argument("--stop-after-failures", type=int, default=3, help="stop after this many failures in a row")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        project = resolve_project(args.project)
        if args.command == "list":
            known = pubsub_functions()
            unknown = [f for f in args.functions if f not in known]
            if unknown:
                raise DlqError(f"not a Pub/Sub function: {', '.join(unknown)}; known: {', '.join(known)}")
            emulator = bool(os.environ.get("PUBSUB_EMULATOR_HOST"))
            logs = args.logs or (LOCAL_LOGS if emulator and LOCAL_LOGS.is_dir() else None)
            listings = list_queues(
                project,
                args.functions or known,
                logs=None if args.no_logs else logs,
                cloud_logging=not (args.no_logs or emulator or args.logs),
            )
            if args.json:
                for listing in listings:
                    for row in listing.rows():
                        print(json.dumps(row, default=str))
            else:
                print(render(listings))
            return 0
        started = time.monotonic()
        report = replay(
            project,
            args.function,
            limit=args.limit,
            dry_run=args.dry_run,
            endpoint=args.endpoint,
            stop_after_failures=args.stop_after_failures,
        )
        print(render_replay(report))
        if args.dry_run:
            print(f"dry run: {report.left} message(s) would be replayed; nothing changed")
        print(f"({time.monotonic() - started:.1f}s)")
        return 0 if report.failed == 0 else 1
    except DlqError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
