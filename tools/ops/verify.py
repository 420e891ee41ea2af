"""``make verify-deploy PROJECT=...``: check a live deployment, read-only, after ``terraform apply``.

    python -m tools.ops.verify --project P [--region R] [--topic T]

What the offline checks cannot see, asked of the project itself with ``gcloud`` (describe
and get-iam-policy only: nothing is changed):

- every function is ACTIVE, runs as its own service account, builds as the build account,
  and takes internet traffic only if it is the ingress;
- every Pub/Sub function's push subscription has its manifest's filter, pushes to the
  function with the push account's token, leaves the function time to answer, dead-letters
  to its own topic, and the Pub/Sub service agent holds the grants dead-lettering needs
  (on the subscription, on the replay subscription, and on the dead-letter topic);
- the webhook URL answers 401 to an unsigned POST (it is public and checks Buildkite's
  token), and a Pub/Sub function's URL does not accept one.

Exit code 0 when every check passes; each failure names what to look at.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from buildkite_events.manifest import Manifest, dead_letter_name, min_ack_deadline, replay_name
from tools import TOPIC
from tools.manifests import all_manifests

BUILD_ACCOUNT = "buildkite-fanout-build"  # terraform/iam.tf
PUSH_ACCOUNT = "buildkite-fanout-push"


@dataclass(frozen=True)
class Check:
    subject: str
    what: str
    ok: bool
    detail: str = ""

    def __str__(self) -> str:
        return f"{'ok  ' if self.ok else 'FAIL'} {self.subject}: {self.what}" + (
            f" ({self.detail})" if self.detail else ""
        )


class Gcloud:
    """Read-only gcloud calls, answers parsed from JSON; a failed call is an answer of None."""

    def __init__(self, project: str, executable: str | None = None) -> None:
        self.project = project
        self.executable = executable or os.environ.get("GCLOUD") or shutil.which("gcloud") or "gcloud"
        self.errors: dict[str, str] = {}

    def __call__(self, *args: str) -> Any:
        argv = [self.executable, *args, f"--project={self.project}", "--format=json"]
        try:
            result = subprocess.run(argv, capture_output=True, text=True, timeout=120, check=False)
        except (OSError, subprocess.TimeoutExpired) as err:
            self.errors[" ".join(args)] = str(err)
            return None
        if result.returncode != 0:
            self.errors[" ".join(args)] = result.stderr.strip()[-300:]
            return None
        return json.loads(result.stdout or "null")


def _members(policy: Any, role: str) -> list[str]:
    bindings = (policy or {}).get("bindings", [])
    return [m for b in bindings if b.get("role") == role for m in b.get("members", [])]


def _post_unsigned(url: str) -> int | None:
    request = urllib.request.Request(url, data=b"{}", headers={"Content-Type": "application/json"}, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as err:
        return err.code
    except (OSError, ValueError):
        return None


def check_function(gcloud: Gcloud, name: str, m: Manifest, region: str) -> tuple[list[Check], str]:
    """Checks of one function, and its URL ("" when it could not be read)."""
    project = gcloud.project
    fn = gcloud("functions", "describe", name, "--gen2", f"--region={region}")
    if fn is None:
        error = gcloud.errors.get(f"functions describe {name} --gen2 --region={region}", "")
        return [Check(name, "function exists", False, error)], ""
    service = fn.get("serviceConfig", {})
    runtime = f"{name}@{project}.iam.gserviceaccount.com"
    build = f"projects/{project}/serviceAccounts/{BUILD_ACCOUNT}@{project}.iam.gserviceaccount.com"
    ingress = "ALLOW_ALL" if m.trigger == "http" else "ALLOW_INTERNAL_ONLY"
    account, built_as = service.get("serviceAccountEmail", ""), fn.get("buildConfig", {}).get("serviceAccount")
    checks = [
        Check(name, "state ACTIVE", fn.get("state") == "ACTIVE", str(fn.get("state"))),
        Check(name, f"runs as {runtime}", account == runtime, account),
        Check(name, "builds as the build account", built_as == build, built_as or "default"),
        Check(
            name, f"ingress {ingress}", service.get("ingressSettings") == ingress, service.get("ingressSettings", "")
        ),
    ]
    return checks, str(service.get("uri") or fn.get("url") or "")


def check_subscription(gcloud: Gcloud, name: str, m: Manifest, topic: str, url: str, agent: str) -> list[Check]:
    project = gcloud.project
    subject = m.subscription(topic)
    sub = gcloud("pubsub", "subscriptions", "describe", subject)
    if sub is None:
        return [
            Check(
                subject, "subscription exists", False, gcloud.errors.get(f"pubsub subscriptions describe {subject}", "")
            )
        ]
    push = sub.get("pushConfig", {})
    dead_letter = f"projects/{project}/topics/{dead_letter_name(topic, name)}"
    push_account = f"{PUSH_ACCOUNT}@{project}.iam.gserviceaccount.com"
    deadline = min_ack_deadline(m.timeout_seconds)
    endpoint, token = push.get("pushEndpoint", ""), push.get("oidcToken", {}).get("serviceAccountEmail")
    ack = int(sub.get("ackDeadlineSeconds", 0))
    checks = [
        Check(subject, "filter as in the manifest", sub.get("filter", "") == m.filter, repr(sub.get("filter", ""))),
        Check(subject, "pushes to the function", bool(url) and endpoint == url, endpoint),
        Check(subject, f"with {PUSH_ACCOUNT}'s token", token == push_account, str(token)),
        Check(subject, f"ack deadline at least {deadline} s", ack >= deadline, f"{ack} s"),
        Check(
            subject,
            "dead-letters to its own topic",
            sub.get("deadLetterPolicy", {}).get("deadLetterTopic") == dead_letter,
        ),
    ]
    for what, resource, role, command in (
        ("subscription", subject, "roles/pubsub.subscriber", ("pubsub", "subscriptions")),
        ("replay subscription", replay_name(topic, name), "roles/pubsub.subscriber", ("pubsub", "subscriptions")),
        ("dead-letter topic", dead_letter_name(topic, name), "roles/pubsub.publisher", ("pubsub", "topics")),
    ):
        policy = gcloud(*command, "get-iam-policy", resource)
        granted = agent in _members(policy, role)
        detail = "" if granted else gcloud.errors.get(" ".join((*command, "get-iam-policy", resource)), "not granted")
        checks.append(Check(resource, f"Pub/Sub service agent has {role} on the {what}", granted, detail))
    return checks


def verify(project: str, region: str, topic: str, gcloud: Gcloud | None = None) -> list[Check]:
    gcloud = gcloud or Gcloud(project)
    described = gcloud("projects", "describe", project)
    if not described:
        return [Check(project, "project readable", False, gcloud.errors.get(f"projects describe {project}", ""))]
    agent = f"serviceAccount:service-{described['projectNumber']}@gcp-sa-pubsub.iam.gserviceaccount.com"
    checks: list[Check] = []
    for name, m in all_manifests().items():
        function_checks, url = check_function(gcloud, name, m, region)
        checks += function_checks
        if m.is_pubsub:
            checks += check_subscription(gcloud, name, m, topic, url, agent)
        if not url:
            continue
        status = _post_unsigned(url)
        if m.trigger == "http":
            checks.append(Check(name, "answers 401 to an unsigned POST", status == 401, f"HTTP {status}"))
        else:
            refused = status is not None and 400 <= status < 500 and status != 401
            checks.append(Check(name, "refuses an unsigned POST from outside", refused, f"HTTP {status}"))
    return checks


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tools.ops.verify", description=__doc__.split("\n\n")[0])
    parser.add_argument("--project", default=os.environ.get("PROJECT"), help="project ID (default: PROJECT)")
    parser.add_argument("--region", default=os.environ.get("REGION") or "us-central1")
    parser.add_argument("--topic", default=os.environ.get("TOPIC") or TOPIC)
    args = parser.parse_args(argv)
    if not args.project:
        parser.error("set PROJECT (make verify-deploy PROJECT=<project id>)")
    checks = verify(args.project, args.region, args.topic)
    for check in checks:
        print(check)
    failed = [c for c in checks if not c.ok]
    print(f"verify-deploy: {len(checks) - len(failed)} passed, {len(failed)} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
