"""``make package`` and ``make deploy-<name>``.

    python -m tools.ops.deploy package [NAME ...]   # build/<name>/, build/<name>.zip, build/first/<name>.zip once
    python -m tools.ops.deploy deploy NAME          # gcloud functions deploy (DRY_RUN=1 prints it)

``package`` builds each bundle (tools/bundle.py) and writes ``build/manifests.json``, the
normalised manifests Terraform reads (tools/manifests.py); a manifest with problems fails it,
after the file is written (Terraform's plan stops on the same problems).

The deploy passes what Terraform sets (terraform/functions.tf) from the same manifest model:
the function's own service account, the build account, the ingress settings, and for the
ingress the same way of being public as ``public_ingress`` (``PUBLIC_INGRESS``: ``allUsers``
or ``invoker_iam_disabled``).
``TRACE_EXPORTER`` (and for ``otlp`` ``OTEL_EXPORTER_OTLP_ENDPOINT``) must match
``trace_exporter``: bundles then carry that exporter's packages and functions are told to use it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys

from buildkite_events.state import DEFAULT_COLLECTION
from tools import ROOT, bundle
from tools.bundle import package as package  # what `make package` runs, for each function
from tools.bundle import trace_exporter
from tools.manifests import NORMALISED, manifest, write_normalised

BUILD_ACCOUNT = "buildkite-fanout-build"  # terraform/iam.tf google_service_account.build
PUBLIC_INGRESS = ("allUsers", "invoker_iam_disabled")  # terraform/variables.tf public_ingress


def placeholder_values() -> dict[str, str]:
    """Deploy-time values for the manifests' ``${...}`` placeholders (same defaults as Terraform)."""
    project = os.environ.get("PROJECT") or _gcloud_config("project")
    if not project:
        raise SystemExit("set PROJECT (or `gcloud config set project ...`) to deploy")
    return {
        "project": project,
        "region": os.environ.get("REGION") or _gcloud_config("functions/region") or "us-central1",
        "topic": os.environ.get("TOPIC", "buildkite-events"),
        "archive_bucket": os.environ.get("ARCHIVE_BUCKET", f"{project}-buildkite-archive"),
        "bigquery_dataset": os.environ.get("BIGQUERY_DATASET", "buildkite"),
        "state_collection": os.environ.get("STATE_COLLECTION", DEFAULT_COLLECTION),
    }


def public_ingress() -> str:
    value = os.environ.get("PUBLIC_INGRESS") or PUBLIC_INGRESS[0]
    if value not in PUBLIC_INGRESS:
        raise SystemExit(
            f"PUBLIC_INGRESS must be {' or '.join(PUBLIC_INGRESS)} (as terraform's public_ingress), not {value!r}"
        )
    return value


def _gcloud_config(key: str) -> str:
    if shutil.which("gcloud") is None:
        return ""
    try:
        result = subprocess.run(["gcloud", "config", "get-value", key], capture_output=True, text=True, timeout=20)
    except (OSError, subprocess.TimeoutExpired):
        return ""
    return result.stdout.strip()


def deploy_command(name: str, values: dict[str, str], public: str = PUBLIC_INGRESS[0]) -> list[str]:
    m = manifest(name)
    res, env, project = m.resources, m.environment(values) | trace_env(), values["project"]
    allow = "--allow-unauthenticated" if m.trigger == "http" and public == "allUsers" else "--no-allow-unauthenticated"
    command = [
        "gcloud", "functions", "deploy", name,
        "--gen2",
        f"--project={values['project']}",
        f"--region={values['region']}",
        f"--runtime={m.runtime}",
        f"--source={bundle.BUILD_DIR / name}",
        f"--entry-point={m.entry_point}",
        f"--memory={res.memory}",
        f"--timeout={res.timeout_seconds}s",
        f"--max-instances={res.max_instances}",
        f"--min-instances={res.min_instances}",
        f"--concurrency={res.concurrency}",
        f"--service-account={name}@{project}.iam.gserviceaccount.com",
        f"--build-service-account=projects/{project}/serviceAccounts/{BUILD_ACCOUNT}@{project}.iam.gserviceaccount.com",
        "--trigger-http",
        # Pub/Sub push from the project is internal traffic; only the ingress faces the internet.
        f"--ingress-settings={'all' if m.trigger == 'http' else 'internal-only'}",
        allow,
    ]  # fmt: skip
    if res.cpu is not None:
        command.append(f"--cpu={res.cpu}")
    if env:
        command.append("--set-env-vars=^|^" + "|".join(f"{k}={v}" for k, v in sorted(env.items())))
    if m.secrets:
        # --update, not --set: an optional secret Terraform passes (a rotation's previous token) stays.
        pairs = ",".join(f"{var}={m.secret_id(var)}:latest" for var in m.secrets)
        command.append(f"--update-secrets={pairs}")
    return command


def trace_env() -> dict[str, str]:
    """What terraform/main.tf's trace_env sets, from TRACE_EXPORTER and OTEL_EXPORTER_OTLP_ENDPOINT."""
    exporter = trace_exporter()
    if exporter == "none":
        return {}
    if exporter == "gcp":
        return {"TRACE_EXPORTER": exporter}
    endpoint = os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT", "")
    if not endpoint.startswith(("http://", "https://")):
        raise SystemExit("TRACE_EXPORTER=otlp needs OTEL_EXPORTER_OTLP_ENDPOINT (as terraform's trace_otlp_endpoint)")
    return {"TRACE_EXPORTER": exporter, "OTEL_EXPORTER_OTLP_ENDPOINT": endpoint}


def after_deploy_commands(name: str, values: dict[str, str], public: str) -> list[list[str]]:
    """What Terraform does beside the function: turn the invoker IAM check off for a public ingress."""
    if manifest(name).trigger != "http" or public != "invoker_iam_disabled":
        return []
    return [
        ["gcloud", "run", "services", "update", name, "--no-invoker-iam-check",
         f"--project={values['project']}", f"--region={values['region']}", "--quiet"],
    ]  # fmt: skip


def deploy(name: str) -> int:
    problems = manifest(name).problems()
    if problems:
        raise SystemExit(f"functions/{name}/function.yaml: " + "; ".join(problems))
    package(name)
    values, public = placeholder_values(), public_ingress()
    for command in [deploy_command(name, values, public), *after_deploy_commands(name, values, public)]:
        printable = shlex.join(command)
        if os.environ.get("DRY_RUN"):
            print(printable)
            continue
        print(f"$ {printable}", file=sys.stderr)
        status = subprocess.call(command)
        if status:
            return status
    return 0


def main(argv: list[str]) -> int:
    if len(argv) < 2 or argv[0] not in ("package", "deploy"):
        print(__doc__, file=sys.stderr)
        return 2
    if argv[0] == "package":
        for name in argv[1:]:
            print(f"packaged {package(name, first=True).relative_to(ROOT)}")
        problems = write_normalised()
        stops = " (with problems: terraform plan stops on them)" if problems else ""
        print(f"wrote {NORMALISED.relative_to(ROOT)}{stops}")
        for problem in problems:
            print(problem, file=sys.stderr)
        return 1 if problems else 0
    return deploy(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
