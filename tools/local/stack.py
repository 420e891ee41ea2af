"""The whole fan-out on one machine: ``make demo`` and ``make run-local``.

Emulators (Pub/Sub, Firestore, fake-gcs-server), a stand-in for the third-party APIs,
every function under functions-framework on its own port, and the Pub/Sub wiring from
the manifests (push subscriptions, retry and dead-letter policies). ``demo`` posts the
sample webhooks (HMAC-signed) to the ingress, waits for every delivery to settle and
prints what each function did and each webhook's timeline (tools/local/timeline.py);
``run`` keeps it all up until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import json
import sys
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from buildkite_events.errors import ACKED_OUTCOMES
from buildkite_events.manifest import Manifest
from buildkite_events.signature import sign
from tools import LOCAL_PROJECT, LOCAL_STATE_COLLECTION, ROOT, TOPIC, environ
from tools.local import emulators
from tools.manifests import all_manifests, function_dir, function_env, local_support

from . import timeline
from .standin import StandIn
from .standins import github as github_standin
from .topology import Wiring, create_topology, publish_raw, pull_all

PROJECT = LOCAL_PROJECT
ARCHIVE_BUCKET = "buildkite-archive-local"
BIGQUERY_DATASET = "buildkite"
WEBHOOK_TOKEN = "local-webhook-token-0123456789abcdef"  # noqa: S105 - a local-only demo value
FIXTURES = ROOT / "tests" / "fixtures" / "buildkite"


@dataclass
class LocalStack:
    """Everything running; ``outcomes()`` reads what each function logged."""

    log_dir: Path
    services: dict[str, emulators.Service] = field(default_factory=dict)
    functions: dict[str, emulators.Service] = field(default_factory=dict)
    wiring: dict[str, Wiring] = field(default_factory=dict)
    manifests: dict[str, Manifest] = field(default_factory=dict)
    standin: StandIn | None = None
    dead_lettered: Counter[str] = field(default_factory=Counter)
    function_envs: dict[str, dict[str, str]] = field(default_factory=dict)
    # Each function's environment as its manifest configures it, without the demo's choices
    # (github-status reports check runs too on the stack): what ``make bench`` times.
    shipped_envs: dict[str, dict[str, str]] = field(default_factory=dict)

    @property
    def ingress_url(self) -> str:
        return self.functions["ingress"].url + "/"

    def post_webhook(self, body: bytes, event: str, *, signed: bool = True) -> tuple[int, dict[str, Any]]:
        headers = {"Content-Type": "application/json", "X-Buildkite-Event": event}
        if signed:
            headers["X-Buildkite-Signature"] = sign(body, WEBHOOK_TOKEN, int(time.time()))
        else:
            headers["X-Buildkite-Token"] = WEBHOOK_TOKEN
        request = urllib.request.Request(self.ingress_url, data=body, headers=headers, method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as response:
                return response.status, json.loads(response.read())
        except urllib.error.HTTPError as err:
            return err.code, json.loads(err.read() or b"{}")

    def outcomes(self, name: str) -> list[dict[str, Any]]:
        """The final ``outcome`` line of every delivery the function handled, in order."""
        lines: list[dict[str, Any]] = []
        for raw in self.functions[name].log_path.read_text(errors="replace").splitlines():
            if raw.startswith("{") and '"outcome"' in raw:
                with contextlib.suppress(ValueError):
                    lines.append(json.loads(raw))
        return lines

    def dead_letters(self, name: str) -> list[dict[str, Any]]:
        return pull_all(self.wiring[name].dead_letter_subscription) if name in self.wiring else []


def _local_values(stack: LocalStack) -> dict[str, str]:
    return {
        "project": PROJECT,
        "region": "local",
        "topic": TOPIC,
        "archive_bucket": ARCHIVE_BUCKET,
        "bigquery_dataset": BIGQUERY_DATASET,
        "state_collection": LOCAL_STATE_COLLECTION,
        "bigquery_api_url": stack.services["bigquery"].url if "bigquery" in stack.services else "",
        "standin": stack.standin.url if stack.standin else "",
    }


@contextlib.contextmanager
def local_stack(
    log_dir: Path, *, max_backoff_seconds: int = 2, extra_env: dict[str, str] | None = None
) -> Iterator[LocalStack]:
    """Start everything; stop everything on exit, even after a failure."""
    log_dir.mkdir(parents=True, exist_ok=True)
    stack = LocalStack(log_dir=log_dir, manifests=all_manifests())
    with contextlib.ExitStack() as exits:
        for name, start in (
            ("pubsub", emulators.start_pubsub),
            ("firestore", emulators.start_firestore),
            ("gcs", emulators.start_gcs),
            ("bigquery", lambda logs: emulators.start_bigquery(logs, project=PROJECT)),
        ):
            stack.services[name] = exits.enter_context(start(log_dir))
        cloud_env = {"GOOGLE_CLOUD_PROJECT": PROJECT}
        for service in stack.services.values():
            cloud_env.update(service.env)
        exits.enter_context(environ(cloud_env))
        stack.standin = exits.enter_context(StandIn().load_providers())
        _create_bucket(ARCHIVE_BUCKET)
        _create_bigquery_dataset(stack)

        values = _local_values(stack)
        # github-status reports statuses and check runs; check runs need a GitHub App, made for the stand-in.
        demo_env = {"github-status": {"GITHUB_REPORT": "both", **github_standin.demo_app_env(stack.standin)}}
        for name, m in stack.manifests.items():
            shipped = {
                **cloud_env,
                **{secret: _local_secret(name, secret) for secret in m.secrets},
                **function_env(m, values, local=True),  # local_env wins: e.g. a webhook URL kept as a secret
            }
            stack.shipped_envs[name] = shipped
            stack.function_envs[name] = env = {**shipped, **demo_env.get(name, {}), **(extra_env or {})}
            stack.functions[name] = exits.enter_context(
                emulators.start_function(function_dir(name), m.entry_point, env=env, log_dir=log_dir)
            )
        endpoints = {name: svc.url + "/" for name, svc in stack.functions.items() if stack.manifests[name].is_pubsub}
        stack.wiring = create_topology(
            PROJECT, TOPIC, endpoints, stack.manifests, max_backoff_seconds=max_backoff_seconds
        )
        yield stack


def _local_secret(function: str, variable: str) -> str:
    return WEBHOOK_TOKEN if variable == "BUILDKITE_WEBHOOK_TOKEN" else f"local-{function}-{variable.lower()}"


def _create_bucket(name: str) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    storage.Client(project=PROJECT, credentials=AnonymousCredentials()).create_bucket(name)


def _create_bigquery_dataset(stack: LocalStack) -> None:
    """bigquery-metrics' tables and views, from schemas/bigquery and queries/views, as Terraform makes them."""
    from tools.bigquery import bigquery_client, create_dataset

    create_dataset(bigquery_client(PROJECT, stack.services["bigquery"].url), PROJECT, BIGQUERY_DATASET)


# The story of main told by the demo, in the order it happened: #2041 passes; #2042 starts
# failing (posted early), its RSpec job fails and it finishes failed (the same message,
# updated); #2047 fails too (a streak); #2050 passes (fixed).
STORY = (
    "build.finished.passed",
    "build.failing",
    "job.finished.failed",
    "build.finished.failed",
    "build.finished.blocked.failed",
    "build.finished.passed.fixed",
)


def sample_webhooks() -> list[tuple[str, bytes]]:
    """(event, body) for every payload fixture: the others first, then ``STORY`` in its order."""
    files = sorted((FIXTURES / "payloads").glob("*.json"))
    files.sort(key=lambda p: STORY.index(p.stem) if p.stem in STORY else -1)  # stable: the others stay sorted
    return [(json.loads(p.read_bytes())["event"], p.read_bytes()) for p in files]


def wait_settled(stack: LocalStack, expected: int, timeout: float = 90.0) -> bool:
    """True once every Pub/Sub function has acked or dead-lettered ``expected`` messages."""
    deadline = time.monotonic() + timeout
    dead = stack.dead_lettered
    while time.monotonic() < deadline:
        for name in stack.wiring:
            dead[name] += len(pull_all(stack.wiring[name].dead_letter_subscription, ack=True))
        settled = all(
            len({line.get("message_id") for line in stack.outcomes(name) if line["outcome"] in ACKED_OUTCOMES})
            + dead[name]
            >= expected
            for name in stack.wiring
        )
        if settled:
            return True
        time.sleep(0.5)
    return False


def report(stack: LocalStack, posted: list[tuple[str, int]]) -> str:
    out = ["", "buildkite-fanout local demo", "=" * 27, ""]
    ok = sum(1 for _, status in posted if status == 200)
    out.append(f"ingress: {len(posted)} webhooks posted (HMAC-signed), {ok} published")
    for event, status in posted:
        if status != 200:
            out.append(f"  ! {event}: HTTP {status}")
    dead = stack.dead_lettered
    for name in stack.wiring:
        lines = stack.outcomes(name)
        counts = Counter(line["outcome"] for line in lines)
        m = stack.manifests[name]
        out += ["", f"{name}  (filter: {m.filter or 'every event'})"]
        summary = ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))
        out.append(f"  deliveries: {len(lines)} — {summary}; dead-lettered: {dead[name]}")
        for line in lines:
            if line["outcome"] in ("done", "duplicate"):
                out.append(f"  ✓ {line.get('event_type', '?'):<22} {line['message'].split(': ', 1)[-1]}")
        for line in lines:
            if line["outcome"] not in ("done", "duplicate", "filtered"):
                out.append(f"  · {line['outcome']:<8} {line.get('event_type', '-'):<22} {line['message']}")
        extra = _function_report(stack, name)
        out += [f"  {row}" for row in extra]
    if stack.standin:
        for title, rows in stack.standin.reports():
            out += ["", title, *(f"  {row}" for row in rows)]
    return "\n".join(out) + "\n"


def _function_report(stack: LocalStack, name: str) -> list[str]:
    """A function's own lines: ``demo_report(stack)`` in its local_support.py, if it has one
    (what third-party stand-ins received, their providers report)."""
    report = getattr(local_support(name), "demo_report", None)
    return list(report(stack)) if report else []


def demo() -> int:
    log_dir = ROOT / ".stack" / "logs"
    traces = ROOT / ".stack" / "traces.jsonl"  # every function's spans: the timelines
    traces.unlink(missing_ok=True)
    with local_stack(log_dir, extra_env=timeline.trace_env(traces)) as stack:
        webhooks = sample_webhooks()
        story = len(webhooks) - len(STORY)  # the story's webhooks go one at a time, each settled first
        posted = [(event, stack.post_webhook(body, event)[0]) for event, body in webhooks[:story]]
        for event, body in webhooks[story:]:
            wait_settled(stack, sum(1 for _, status in posted if status == 200))
            posted.append((event, stack.post_webhook(body, event)[0]))
        mcncl = sorted((FIXTURES / "pubsub").glob("mcncl.*.json"))
        for path in mcncl:  # another producer's format, published straight to the topic
            sample = json.loads(path.read_text())
            publish_raw(PROJECT, TOPIC, sample["data"].encode(), sample["attributes"])
        expected = sum(1 for _, status in posted if status == 200) + len(mcncl)
        settled = wait_settled(stack, expected)
        print(report(stack, posted))
        print(timeline.report(traces))
        print(f"(+ {len(mcncl)} messages in mcncl/buildkite-pubsub's format published straight to the topic)")
        print(f"logs: {log_dir.relative_to(ROOT)}/")
        if not settled:
            print("deliveries did not settle in time", file=sys.stderr)
            return 1
    return 0 if all(status == 200 for _, status in posted) else 1


def run() -> int:
    traces = ROOT / ".stack" / "traces.jsonl"
    with local_stack(ROOT / ".stack" / "logs", extra_env=timeline.trace_env(traces)) as stack:
        print(f"Local stack is up. Ingress: {stack.ingress_url}\n")
        print("Send a webhook (plain token):")
        print(
            f"  curl -s -X POST {stack.ingress_url} -H 'X-Buildkite-Event: ping' "
            f"-H 'X-Buildkite-Token: {WEBHOOK_TOKEN}' -d @tests/fixtures/buildkite/payloads/ping.json\n"
        )
        print("Functions:")
        for name, svc in stack.functions.items():
            print(f"  {name:<18} {svc.url}  logs: {svc.log_path.relative_to(ROOT)}")
        print(
            f"\nPUBSUB_EMULATOR_HOST={stack.services['pubsub'].host}  STORAGE_EMULATOR_HOST={stack.services['gcs'].url}"
        )
        print(
            f"Analytics on what it stored: BIGQUERY_PROJECT={PROJECT} "
            f"BIGQUERY_API_URL={stack.services['bigquery'].url} make report"
        )
        print(f"Spans of every event: {traces.relative_to(ROOT)} (timelines: python -m tools.local.timeline)")
        print("Ctrl-C stops everything.")
        try:
            while True:
                time.sleep(3600)
        except KeyboardInterrupt:
            print("\nstopping")
    return 0


def main(argv: list[str]) -> int:
    commands = {"demo": demo, "run": run}
    if len(argv) != 1 or argv[0] not in commands:
        print("usage: python -m tools.local.stack demo|run", file=sys.stderr)
        return 2
    return commands[argv[0]]()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
