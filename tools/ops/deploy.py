"""``make package`` and ``make deploy-<name>``.

    python -m tools.ops.deploy package [NAME ...]   # build/<name>/, build/<name>.zip, build/first/<name>.zip once
    python -m tools.ops.deploy deploy NAME          # gcloud functions deploy (DRY_RUN=1 prints it)

A bundle is what Cloud Functions builds from: the function's ``main.py`` and
``function.yaml``, the ``buildkite_events`` package vendored beside them, and one
``requirements.txt`` = the function's own + the shared package's dependencies.

``build/first/<name>.zip`` is the bundle Terraform deploys a function's first code from.
``package`` writes it only when it is missing and ``deploy`` never touches it: the google
provider compares that file's MD5 with the uploaded object at every plan, so rewriting it
would make every ``terraform plan`` after a deploy show a change.

The deploy passes what Terraform sets (terraform/functions.tf): the function's own service
account, the build account, the ingress settings, and for the ingress the same way of
being public as ``public_ingress`` (``PUBLIC_INGRESS``: ``allUsers`` or
``invoker_iam_disabled``). ``TRACE_EXPORTER`` (and for ``otlp``
``OTEL_EXPORTER_OTLP_ENDPOINT``) must match ``trace_exporter``: bundles then carry that
exporter's packages and functions are told to use it.
"""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import tomllib
import zipfile
from pathlib import Path

from buildkite_events.manifest import Manifest
from buildkite_events.state import DEFAULT_COLLECTION
from tools import ROOT
from tools.manifests import function_dir, function_env, manifest

BUILD_DIR = ROOT / "build"
FIRST_BUNDLE_DIR = BUILD_DIR / "first"  # terraform/main.tf's default bundle_dir
BUILD_ACCOUNT = "buildkite-fanout-build"  # terraform/iam.tf google_service_account.build
PUBLIC_INGRESS = ("allUsers", "invoker_iam_disabled")  # terraform/variables.tf public_ingress
TRACE_EXPORTERS = ("none", "gcp", "otlp")  # terraform/variables.tf trace_exporter
SHARED = ROOT / "shared"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
_NOT_SHIPPED = shutil.ignore_patterns(
    "test_*.py", "testdata", "conftest.py", "README.md", "__pycache__", "*.pyc"
)  # fixed, so an unchanged bundle zips to identical bytes


def shared_requirements(m: Manifest, exporter: str = "none") -> list[str]:
    project = tomllib.loads((SHARED / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    if m.uses_firestore:  # state: [...] in the manifest
        requirements += project["optional-dependencies"]["firestore"]
    if exporter != "none":  # TRACE_EXPORTER: only then do bundles carry OpenTelemetry
        requirements += project["optional-dependencies"][f"trace-{exporter}"]
    return requirements


def trace_exporter() -> str:
    """``TRACE_EXPORTER``, as Terraform's trace_exporter: what bundles carry and functions are told."""
    value = (os.environ.get("TRACE_EXPORTER") or "none").strip().lower()
    if value not in TRACE_EXPORTERS:
        raise SystemExit(f"TRACE_EXPORTER must be {', '.join(TRACE_EXPORTERS)} (as terraform's trace_exporter)")
    return value


def package(name: str, *, first: bool = False) -> Path:
    """Build ``build/<name>/`` and a reproducible ``build/<name>.zip``; return the folder.

    ``first``: also write ``build/first/<name>.zip`` for Terraform, unless it exists.
    """
    m = manifest(name)
    source, out = function_dir(name), BUILD_DIR / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    # Everything the function ships (main.py, function.yaml, any helper module or data), not its tests.
    shutil.copytree(source, out, ignore=_NOT_SHIPPED, dirs_exist_ok=True)
    shutil.copytree(
        SHARED / "buildkite_events",
        out / "buildkite_events",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    own = [line for line in (out / "requirements.txt").read_text().splitlines() if line.strip()]
    lines = [*own, "", "# vendored buildkite_events", *shared_requirements(m, trace_exporter())]
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    _zip(out, BUILD_DIR / f"{name}.zip")
    first_bundle = FIRST_BUNDLE_DIR / f"{name}.zip"
    if first and not first_bundle.exists():
        FIRST_BUNDLE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(BUILD_DIR / f"{name}.zip", first_bundle)
    return out


def _zip(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)), _ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)


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


def secret_id(function: str, variable: str) -> str:
    """Secret Manager id for a manifest secret: ``slack-notify-slack-token``."""
    return f"{function}-{variable.lower().replace('_', '-')}"


def deploy_command(name: str, values: dict[str, str], public: str = PUBLIC_INGRESS[0]) -> list[str]:
    m = manifest(name)
    res = m.raw["resources"]
    env = function_env(m, values) | trace_env()
    project = values["project"]
    allow = "--allow-unauthenticated" if m.trigger == "http" and public == "allUsers" else "--no-allow-unauthenticated"
    command = [
        "gcloud", "functions", "deploy", name,
        "--gen2",
        f"--project={values['project']}",
        f"--region={values['region']}",
        f"--runtime={m.raw['runtime']}",
        f"--source={BUILD_DIR / name}",
        f"--entry-point={m.entry_point}",
        f"--memory={res['memory']}",
        f"--timeout={res['timeout_seconds']}s",
        f"--max-instances={res['max_instances']}",
        f"--min-instances={res.get('min_instances', 0)}",
        f"--service-account={name}@{project}.iam.gserviceaccount.com",
        f"--build-service-account=projects/{project}/serviceAccounts/{BUILD_ACCOUNT}@{project}.iam.gserviceaccount.com",
        "--trigger-http",
        # Pub/Sub push from the project is internal traffic; only the ingress faces the internet.
        f"--ingress-settings={'all' if m.trigger == 'http' else 'internal-only'}",
        allow,
    ]  # fmt: skip
    if "cpu" in res:
        command.append(f"--cpu={res['cpu']}")
    if "concurrency" in res:
        command.append(f"--concurrency={res['concurrency']}")
    if env:
        command.append("--set-env-vars=^|^" + "|".join(f"{k}={v}" for k, v in sorted(env.items())))
    if m.secrets:
        # --update, not --set: an optional secret Terraform passes (a rotation's previous token) stays.
        pairs = ",".join(f"{var}={secret_id(name, var)}:latest" for var in m.secrets)
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
        return 0
    return deploy(argv[1])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
