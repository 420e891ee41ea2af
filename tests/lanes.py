"""Functions on the emulators, one isolated "lane" each, for the dead-letter and fault suites.

A lane is one Pub/Sub function from its manifest: its own project on the Pub/Sub emulator
(topic, push subscription with the manifest's filter, ack deadline and dead-letter policy,
dead-letter topic and subscription, made by ``tools.local.topology.create_topology``), the
function under functions-framework, and a ``FaultProxy`` in front of what it calls
(fake-gcs-server, bqemulator, or the third-party stand-in). Lanes share the emulators but
nothing else, so a message published for one function's scenario reaches no other.

Two emulator behaviours shape this (see tests/test_faults.py):
- the retry policy's minimum backoff is set to 0 here: with a minimum of 1 s or more, two
  messages failing on one push subscription at the same time are pushed a few times and then
  neither dead-lettered nor pushed again; with 0 they dead-letter as they should;
- dead-letter scenarios still run one message at a time per subscription.
"""

from __future__ import annotations

import contextlib
import json
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from buildkite_events.errors import ACKED_OUTCOMES
from buildkite_events.filters import parse_filter
from buildkite_events.manifest import Manifest
from buildkite_events.message import to_message
from tests.support import PAYLOADS
from tools import LOCAL_STATE_COLLECTION, TOPIC
from tools.local import emulators
from tools.local.faultproxy import FaultProxy
from tools.local.standin import StandIn
from tools.local.topology import Wiring, create_topology
from tools.manifests import all_manifests, function_dir, function_env, local_support

# Per-request client timeouts: above the 12 s a "slow" fault holds a call (to outlive the 10 s
# ack deadline), below what a "timeout" fault holds it (tests/test_faults.py). Each function
# names its timeout's variable in its local_support.py (TIMEOUT_VARIABLE).
CLIENT_TIMEOUT_SECONDS = 15


def pubsub_manifests() -> dict[str, Manifest]:
    return {name: m for name, m in all_manifests().items() if m.is_pubsub}


def upstream_of(name: str) -> str:
    """What the function calls on the local stack (its manifest's ``local.upstream``)."""
    return all_manifests()[name].local.upstream


UPSTREAM = {name: m.local.upstream for name, m in pubsub_manifests().items()}


def client_timeout(name: str) -> dict[str, str]:
    """The env that bounds one of the function's upstream calls to ``CLIENT_TIMEOUT_SECONDS``."""
    variable = getattr(local_support(name), "TIMEOUT_VARIABLE", None)
    return {variable: str(CLIENT_TIMEOUT_SECONDS)} if variable else {}


def fixture_message(name: str) -> tuple[bytes, dict[str, str]]:
    body = json.loads((PAYLOADS / f"{name}.json").read_text())
    return to_message(body, body["event"])


def accepted_fixtures(m: Manifest) -> list[str]:
    """Fixture names whose message passes the manifest's filter."""
    accepts = parse_filter(m.filter)
    return [p.stem for p in sorted(PAYLOADS.glob("*.json")) if accepts.matches(fixture_message(p.stem)[1])]


@dataclass
class Lane:
    name: str
    manifest: Manifest
    project: str
    wiring: Wiring
    service: emulators.Service
    env: dict[str, str]
    proxy: FaultProxy

    @property
    def topic(self) -> str:
        return f"projects/{self.project}/topics/{TOPIC}"

    @property
    def endpoint(self) -> str:
        return self.service.url + "/"

    def publish(self, data: bytes, attributes: Mapping[str, str]) -> str:
        from google.cloud import pubsub_v1

        publisher = pubsub_v1.PublisherClient()
        return str(publisher.publish(self.topic, data, **dict(attributes)).result(timeout=30))  # type: ignore[arg-type]

    def lines(self) -> list[dict[str, Any]]:
        """Every ``outcome`` line the function logged, in order."""
        found = []
        for raw in self.service.log_path.read_text(errors="replace").split("\n"):  # not splitlines(): U+2028
            if raw.startswith("{") and '"outcome"' in raw:
                with contextlib.suppress(ValueError):
                    found.append(json.loads(raw))
        return found

    def outcomes(self, message_id: str) -> list[str]:
        return [line["outcome"] for line in self.lines() if line.get("message_id") == message_id]

    def wait_acked(self, message_ids: Iterable[str], timeout: float = 90.0) -> bool:
        """True once the function acked each message (logged done/duplicate/filtered/invalid)."""
        wanted = set(message_ids)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            acked = {line.get("message_id") for line in self.lines() if line["outcome"] in ACKED_OUTCOMES}
            if wanted <= acked:
                return True
            time.sleep(0.2)
        return False

    def wait_dead_lettered(self, count: int = 1, timeout: float = 90.0) -> list[dict[str, Any]]:
        """Pull (and ack) until ``count`` messages came out of the dead-letter subscription."""
        got: list[dict[str, Any]] = []
        deadline = time.monotonic() + timeout
        while len(got) < count and time.monotonic() < deadline:
            got += drain(self.wiring.dead_letter_subscription)
            if len(got) < count:
                time.sleep(0.3)
        return got


@dataclass
class Lanes:
    lanes: dict[str, Lane]
    standin: StandIn
    bucket: str = ""
    bigquery_dataset: str = ""  # "project.dataset"
    services: dict[str, emulators.Service] = field(default_factory=dict)

    def __getitem__(self, name: str) -> Lane:
        return self.lanes[name]


def _project() -> str:
    return f"lane-{uuid.uuid4().hex[:12]}"


def _secret(function: str, variable: str) -> str:
    return f"local-{function}-{variable.lower()}"  # what the stand-ins accept (tools.local.stack does the same)


def _values(project: str, lanes_env: Mapping[str, str]) -> dict[str, str]:
    return {
        "project": project,
        "region": "local",
        "topic": TOPIC,
        "archive_bucket": lanes_env["archive_bucket"],
        "bigquery_dataset": lanes_env["bigquery_dataset"],
        "state_collection": LOCAL_STATE_COLLECTION,
        "bigquery_api_url": lanes_env["bigquery_api_url"],
        "standin": lanes_env["standin"],
    }


@contextlib.contextmanager
def open_lanes(
    names: Iterable[str],
    *,
    log_dir: Path,
    services: Mapping[str, emulators.Service],
    env: Mapping[str, str] | None = None,
    env_for: Callable[[str], Mapping[str, str]] | None = None,
    bigquery_dataset: str = "",
    max_backoff_seconds: int = 1,
) -> Iterator[Lanes]:
    """Start one lane per function; stop everything on exit.

    ``services``: the running emulators by name ("pubsub", "firestore", "gcs", "bigquery"),
    with their client env already in ``os.environ`` (the conftest fixtures do that).
    """
    manifests = pubsub_manifests()
    names = list(names)
    bucket = f"archive-{uuid.uuid4().hex[:12]}"
    with contextlib.ExitStack() as exits:
        standin = exits.enter_context(StandIn().load_providers())
        proxies: dict[str, FaultProxy] = {}
        upstreams = {"standin": standin.url}
        if "gcs" in services:
            upstreams["gcs"] = services["gcs"].url
            _create_bucket(bucket)
        if "bigquery" in services:
            upstreams["bigquery"] = services["bigquery"].url
        lanes: dict[str, Lane] = {}

        def start(name: str) -> Lane:
            m = manifests[name]
            proxy = exits.enter_context(FaultProxy(upstreams[upstream_of(name)]))
            proxies[name] = proxy
            project = _project()
            upstream = upstream_of(name)
            dataset_project, _, dataset = bigquery_dataset.rpartition(".")
            values = _values(
                project,
                {
                    "archive_bucket": bucket,
                    "bigquery_dataset": dataset or "buildkite",
                    "bigquery_api_url": proxy.url if upstream == "bigquery" else "",
                    "standin": proxy.url if upstream == "standin" else standin.url,
                },
            )
            if upstream == "bigquery" and dataset_project:
                values["project"] = dataset_project  # its tables' ${project}: where the test made the dataset
            fn_env = {
                "GOOGLE_CLOUD_PROJECT": project,
                **{secret: _secret(name, secret) for secret in m.secrets},
                **function_env(m, values, local=True),
                **client_timeout(name),
                **(env or {}),
            }
            if upstream == "gcs":
                fn_env["STORAGE_EMULATOR_HOST"] = proxy.url
            fn_env.update(env_for(name) if env_for else {})
            service = emulators.start_function(function_dir(name), m.entry_point, env=fn_env, log_dir=log_dir)
            exits.callback(service.stop)
            wiring = create_topology(
                project, TOPIC, {name: service.url + "/"}, manifests, max_backoff_seconds=max_backoff_seconds
            )[name]
            _no_minimum_backoff(wiring.subscription, max_backoff_seconds)
            return Lane(name, m, project, wiring, service, fn_env, proxy)

        with ThreadPoolExecutor(max_workers=4) as pool:
            futures = {name: pool.submit(start, name) for name in names}
            errors = []
            for name, future in futures.items():
                try:
                    lanes[name] = future.result()
                except Exception as err:  # every started lane is still stopped by the exit stack
                    errors.append(f"{name}: {err}")
            if errors:
                raise RuntimeError("lanes did not start:\n" + "\n".join(errors))
        yield Lanes(lanes, standin, bucket if "gcs" in services else "", bigquery_dataset, dict(services))


def set_ack_deadline(subscription: str, seconds: int) -> None:
    from google.cloud import pubsub_v1
    from google.protobuf import field_mask_pb2

    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.update_subscription(
            request={
                "subscription": {"name": subscription, "ack_deadline_seconds": seconds},
                "update_mask": field_mask_pb2.FieldMask(paths=["ack_deadline_seconds"]),  # type: ignore[attr-defined]
            }
        )
    finally:
        subscriber.close()


def _no_minimum_backoff(subscription: str, max_backoff_seconds: int) -> None:
    from google.cloud import pubsub_v1
    from google.protobuf import field_mask_pb2

    subscriber = pubsub_v1.SubscriberClient()
    try:
        subscriber.update_subscription(
            request={
                "subscription": {
                    "name": subscription,
                    "retry_policy": {
                        "minimum_backoff": timedelta(seconds=0),
                        "maximum_backoff": timedelta(seconds=max_backoff_seconds),
                    },
                },
                "update_mask": field_mask_pb2.FieldMask(paths=["retry_policy"]),  # type: ignore[attr-defined]
            }
        )
    finally:
        subscriber.close()


def _create_bucket(name: str) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    storage.Client(project="lanes", credentials=AnonymousCredentials()).create_bucket(name)


def storage_client() -> Any:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    return storage.Client(project="lanes", credentials=AnonymousCredentials())


def drain(subscription: str) -> list[dict[str, Any]]:
    """Pull and ack what a subscription holds right now (the emulator answers an empty pull at once)."""
    from google.cloud import pubsub_v1

    subscriber = pubsub_v1.SubscriberClient()
    got: list[dict[str, Any]] = []
    try:
        while True:
            request = {"subscription": subscription, "max_messages": 100, "return_immediately": True}
            response = subscriber.pull(request=request, timeout=10)
            if not response.received_messages:
                return got
            for received in response.received_messages:
                message = received.message
                got.append(
                    {"message_id": message.message_id, "attributes": dict(message.attributes), "data": message.data}
                )
            ack_ids = [r.ack_id for r in response.received_messages]
            subscriber.acknowledge(request={"subscription": subscription, "ack_ids": ack_ids})
    finally:
        subscriber.close()
