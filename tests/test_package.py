"""A bundle from `make package` deploys: fresh venv, its own requirements, served, fed a push."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
import uuid
import zipfile
from pathlib import Path
from typing import Any

import pytest

from buildkite_events.manifest import load_manifest
from tests.support import envelope, payload
from tools import ROOT, bundle
from tools.local import emulators
from tools.manifests import LOCAL_SUPPORT, all_manifests, function_dir
from tools.ops import deploy


def own(name: str) -> str:
    return (function_dir(name) / "requirements.txt").read_text()


def test_every_function_packages_with_the_shared_package_vendored(tmp_path: Path) -> None:
    for name, manifest in all_manifests().items():
        folder = deploy.package(name)
        assert (folder / "main.py").read_bytes() == (ROOT / "functions" / name / "main.py").read_bytes()
        assert (folder / "function.yaml").is_file()
        assert json.loads((folder / "function.json").read_text()) == manifest.raw  # read at run time, no YAML
        assert load_manifest(folder / "function.yaml") == manifest
        assert (folder / "buildkite_events" / "handler.py").is_file()
        assert not list(folder.rglob("__pycache__"))
        assert not (folder / LOCAL_SUPPORT).exists()
        requirements = "\n".join(
            line for line in (folder / "requirements.txt").read_text().splitlines() if line[:1] != "#"
        )
        assert "functions-framework" in requirements and "tenacity" in requirements
        assert "google-cloud-firestore" not in requirements  # state speaks Firestore's REST API
        assert ("google-auth" in requirements) == (manifest.uses_firestore or "google-auth" in own(name))
        with zipfile.ZipFile(folder.parent / f"{name}.zip") as archive:
            assert "main.py" in archive.namelist()
        first = (folder.parent / f"{name}.zip").read_bytes()
        deploy.package(name)
        assert (folder.parent / f"{name}.zip").read_bytes() == first  # reproducible: no spurious redeploys


def test_deploy_dry_run_prints_the_gcloud_command(monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("PROJECT", "acme-ci")
    monkeypatch.setenv("REGION", "europe-west1")
    assert deploy.main(["deploy", "gcs-archive"]) == 0
    command = capsys.readouterr().out
    assert command.startswith("gcloud functions deploy gcs-archive --gen2")
    for part in (
        "--runtime=python312",
        "--entry-point=archive_build_data",
        "--region=europe-west1",
        "--no-allow-unauthenticated",
        "ARCHIVE_BUCKET=acme-ci-buildkite-archive",
        "--timeout=60s",
    ):
        assert part in command
    assert deploy.main(["deploy", "ingress"]) == 0
    ingress = capsys.readouterr().out
    assert "--allow-unauthenticated" in ingress
    assert "--update-secrets=BUILDKITE_WEBHOOK_TOKEN=ingress-buildkite-webhook-token:latest" in ingress


def test_terraform_reads_first_bundles_from_a_path_deploy_never_writes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    """The provider diffs the MD5 of bundle_dir/<name>.zip at every plan: deploys must never rewrite it."""
    main_tf = (ROOT / "terraform" / "main.tf").read_text()
    default = re.search(r'bundle_dir\s+=\s+coalesce\(var\.bundle_dir, "\$\{path\.module\}/([^"]+)"\)', main_tf)
    assert default, "terraform/main.tf: bundle_dir default not found"
    terraform_dir = (ROOT / "terraform" / default.group(1)).resolve()
    assert terraform_dir == bundle.FIRST_BUNDLE_DIR.resolve()
    # What `make deploy-<name>` writes (its --source folder and the zip) lies outside it.
    for written in (bundle.BUILD_DIR / "gcs-archive", bundle.BUILD_DIR / "gcs-archive.zip"):
        assert not written.resolve().is_relative_to(terraform_dir), written

    first = tmp_path / "first"
    monkeypatch.setattr(bundle, "FIRST_BUNDLE_DIR", first)
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("PROJECT", "acme-ci")
    assert deploy.main(["deploy", "gcs-archive"]) == 0
    assert not first.exists()  # a deploy writes no first bundle
    assert deploy.main(["package", "gcs-archive"]) == 0
    normalised = json.loads((bundle.BUILD_DIR / "manifests.json").read_text())  # what Terraform reads
    assert sorted(normalised["functions"]) == sorted(all_manifests())  # every function, whichever were packaged
    first_zip = first / "gcs-archive.zip"
    assert first_zip.read_bytes() == (bundle.BUILD_DIR / "gcs-archive.zip").read_bytes()
    first_zip.write_bytes(b"the first code Terraform uploaded")
    assert deploy.main(["package", "gcs-archive"]) == 0
    assert deploy.main(["deploy", "gcs-archive"]) == 0
    assert first_zip.read_bytes() == b"the first code Terraform uploaded"  # written once, never again
    capsys.readouterr()


def test_deploy_builds_as_the_build_account_and_keeps_pubsub_functions_internal(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("PROJECT", "acme-ci")
    monkeypatch.delenv("PUBLIC_INGRESS", raising=False)
    account = "buildkite-fanout-build@acme-ci.iam.gserviceaccount.com"
    build_account = f"--build-service-account=projects/acme-ci/serviceAccounts/{account}"
    assert deploy.main(["deploy", "slack-notify"]) == 0
    (slack,) = capsys.readouterr().out.splitlines()
    assert build_account in slack and "--ingress-settings=internal-only" in slack
    assert "--no-allow-unauthenticated" in slack
    assert deploy.main(["deploy", "ingress"]) == 0
    (ingress,) = capsys.readouterr().out.splitlines()
    assert build_account in ingress and "--ingress-settings=all" in ingress
    assert "--allow-unauthenticated" in ingress.split()


def test_deploy_ingress_under_domain_restricted_sharing_turns_the_invoker_check_off(
    monkeypatch: pytest.MonkeyPatch, capsys: Any
) -> None:
    monkeypatch.setenv("DRY_RUN", "1")
    monkeypatch.setenv("PROJECT", "acme-ci")
    monkeypatch.setenv("REGION", "europe-west1")
    monkeypatch.setenv("PUBLIC_INGRESS", "invoker_iam_disabled")
    assert deploy.main(["deploy", "ingress"]) == 0
    functions_deploy, run_update = capsys.readouterr().out.splitlines()
    assert "--no-allow-unauthenticated" in functions_deploy.split()  # no allUsers grant is attempted
    assert run_update == (
        "gcloud run services update ingress --no-invoker-iam-check --project=acme-ci --region=europe-west1 --quiet"
    )
    assert deploy.main(["deploy", "github-status"]) == 0
    assert len(capsys.readouterr().out.splitlines()) == 1  # only the ingress is public
    monkeypatch.setenv("PUBLIC_INGRESS", "everyone")
    with pytest.raises(SystemExit, match="PUBLIC_INGRESS must be allUsers or invoker_iam_disabled"):
        deploy.main(["deploy", "ingress"])


def test_a_bundle_installs_into_a_fresh_venv_and_serves_a_push(
    tmp_path: Path, gcs_server: Any, gcp_project: str
) -> None:
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    folder = deploy.package("gcs-archive")
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    subprocess.run(
        [str(python), "-m", "pip", "install", "--quiet", "-r", str(folder / "requirements.txt")],
        check=True,
        timeout=600,
    )
    bucket = storage.Client(project=gcp_project, credentials=AnonymousCredentials()).create_bucket(
        f"bundle-{uuid.uuid4().hex[:8]}"
    )
    env = {"ARCHIVE_BUCKET": bucket.name, "GOOGLE_CLOUD_PROJECT": gcp_project, **gcs_server.env}
    server = emulators.start_function(
        folder, "archive_build_data", env=env, log_dir=tmp_path, python=python, timeout=60
    )
    with server:
        body = json.dumps(envelope(payload("build.finished.failed"))).encode()
        request = urllib.request.Request(
            server.url + "/", data=body, headers={"Content-Type": "application/json"}, method="POST"
        )
        with urllib.request.urlopen(request, timeout=30) as response:
            assert response.status == 200
        deadline = time.monotonic() + 10
        while not (names := [b.name for b in bucket.client.list_blobs(bucket.name)]) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert len(names) == 1 and names[0].startswith("my-great-org/my-pipeline/2025/06/12/2042/build.finished-")
    freeze = subprocess.run([str(python), "-m", "pip", "freeze"], capture_output=True, text=True, check=True).stdout
    assert "buildkite" not in freeze  # the vendored copy served it, not an installed one


def test_helper_modules_beside_main_ship_in_the_bundle() -> None:
    shipped_helpers = 0
    for name in all_manifests():
        source = function_dir(name)
        helpers = {p.name for p in source.glob("*.py") if not p.name.startswith("test_")} - {"main.py", LOCAL_SUPPORT}
        folder = deploy.package(name)
        assert helpers <= {p.name for p in folder.glob("*.py")}, name
        assert not list(folder.glob("test_*.py")), name
        shipped_helpers += len(helpers)
    assert shipped_helpers  # slack-notify's slack_web.py at least


def test_a_deployed_function_reads_its_manifest_without_a_yaml_parser(tmp_path: Path) -> None:
    """The ingress checks its publish deadline against the manifest's timeout at start-up: from
    the bundle that is function.json, and PyYAML (~15 ms of imports) is never loaded."""
    folder = bundle.package("ingress", build_dir=tmp_path)
    code = (
        "import os, sys\n"
        "sys.path.insert(0, sys.argv[1])\n"
        "import main\n"
        "config, _ = main._setup()\n"
        "assert 'yaml' not in sys.modules, 'PyYAML was imported'\n"
        "print(config.publish_deadline_seconds, main._timeout_seconds())\n"
    )
    env = {"GOOGLE_CLOUD_PROJECT": "p", "BUILDKITE_WEBHOOK_TOKEN": "t" * 20, "PATH": "/usr/bin:/bin"}
    result = subprocess.run(
        [sys.executable, "-c", code, str(folder)], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.split() == [
        "20.0",
        str(load_manifest(function_dir("ingress") / "function.yaml").timeout_seconds),
    ]
