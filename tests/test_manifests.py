"""Every functions/*/function.yaml: valid against the schema and consistent with its folder."""

from __future__ import annotations

import ast
import copy
import hashlib
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from buildkite_events.filters import FilterSyntaxError, parse_filter
from buildkite_events.manifest import (
    PLACEHOLDERS,
    Delivery,
    Local,
    Resources,
    dead_letter_name,
    load_manifest,
    min_ack_deadline,
    parse_manifest,
    replay_name,
    secret_id,
)
from tools.manifests import normalised, write_normalised

ROOT = Path(__file__).resolve().parent.parent
SCHEMA_PATH = ROOT / "shared" / "buildkite_events" / "manifest.schema.json"
SCHEMA: dict[str, Any] = json.loads(SCHEMA_PATH.read_text())
VALIDATOR = jsonschema.Draft202012Validator(SCHEMA)
MANIFESTS = sorted((ROOT / "functions").glob("*/function.yaml"))

# The GUIDE's entry points (the reference guide's names).
ENTRY_POINTS = {
    "ingress": "receive_webhook",
    "slack-notify": "notify_slack",
    "teams-notify": "notify_teams",
    "github-status": "update_github_status",
    "jira-update": "update_jira_tickets",
    "bigquery-metrics": "store_build_metrics",
    "gcs-archive": "archive_build_data",
}


class _Yaml12Loader(yaml.SafeLoader):
    """Booleans as YAML 1.2 (and Terraform's yamldecode) read them: only true/false, not on/off/yes/no."""


_Yaml12Loader.yaml_implicit_resolvers = {
    first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}
_Yaml12Loader.add_implicit_resolver(
    "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
)


def _raw(path: Path) -> dict[str, Any]:
    """The manifest as Terraform's yamldecode (YAML 1.2) reads it."""
    data = yaml.load(path.read_text(encoding="utf-8"), Loader=_Yaml12Loader)  # noqa: S506 - a SafeLoader
    assert isinstance(data, dict), path
    return data


def _non_string_keys(value: Any) -> list[Any]:
    if isinstance(value, dict):
        return [k for k in value if not isinstance(k, str)] + [
            bad for v in value.values() for bad in _non_string_keys(v)
        ]
    if isinstance(value, list):
        return [bad for v in value for bad in _non_string_keys(v)]
    return []


def _python_reading_cases() -> list[Any]:
    return [pytest.param(path, id=path.parent.name) for path in MANIFESTS]


def _ids() -> list[str]:
    return [p.parent.name for p in MANIFESTS]


def _errors(document: dict[str, Any]) -> list[str]:
    """What is wrong: the schema's findings and the rules across keys (Manifest.problems)."""
    schema = [error.message for error in VALIDATOR.iter_errors(document)]
    try:
        return schema + parse_manifest(document).problems()
    except ValueError as err:  # not even the shape of a manifest
        return [*schema, str(err)]


def _entry_function(tree: ast.Module, name: str) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    for node in tree.body:
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name == name:
            return node
    return None


def _decorator_names(node: ast.FunctionDef | ast.AsyncFunctionDef) -> list[str]:
    names = []
    for decorator in node.decorator_list:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        names.append(ast.unparse(target))
    return names


def test_schema_itself_is_valid() -> None:
    jsonschema.Draft202012Validator.check_schema(SCHEMA)


def test_there_are_manifests() -> None:
    assert MANIFESTS, "no functions/*/function.yaml found"
    assert "ingress" in _ids()


def test_every_function_folder_has_a_manifest() -> None:
    for folder in sorted((ROOT / "functions").iterdir()):
        if (folder / "main.py").is_file():
            assert (folder / "function.yaml").is_file(), f"{folder.name} has main.py but no function.yaml"


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids())
def test_manifest_validates_against_the_schema(path: Path) -> None:
    assert _errors(_raw(path)) == []


@pytest.mark.parametrize("path", _python_reading_cases())
def test_python_and_terraform_read_the_same_manifest(path: Path) -> None:
    raw = load_manifest(path).raw
    assert _non_string_keys(raw) == []
    assert raw == _raw(path)
    assert _errors(raw) == []


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids())
def test_name_is_the_folder(path: Path) -> None:
    assert _raw(path)["name"] == path.parent.name


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids())
def test_entry_point_is_defined_in_main(path: Path) -> None:
    raw = _raw(path)
    main = path.parent / "main.py"
    assert main.is_file()
    tree = ast.parse(main.read_text(encoding="utf-8"), filename=str(main))
    function = _entry_function(tree, raw["entry_point"])
    assert function is not None, f"{raw['entry_point']} is not a top-level function in {main}"
    if path.parent.name in ENTRY_POINTS:
        assert raw["entry_point"] == ENTRY_POINTS[path.parent.name]
    decorators = _decorator_names(function)
    if raw["trigger"] == "http":
        assert "functions_framework.http" in decorators, decorators
    else:
        assert "functions_framework.cloud_event" in decorators, decorators


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids())
def test_requirements_exist(path: Path) -> None:
    requirements = path.parent / "requirements.txt"
    assert requirements.is_file()
    lines = [line.strip() for line in requirements.read_text().splitlines()]
    assert any(line and not line.startswith("#") for line in lines), "requirements.txt is empty"


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids())
def test_filter_parses(path: Path) -> None:
    raw = _raw(path)
    if raw["trigger"] == "pubsub":
        text = raw["filter"]
        parsed = parse_filter(text)
        assert parsed is not None
        assert len(text.encode("utf-8")) <= 256
    else:
        assert "filter" not in raw and "delivery" not in raw


PUBSUB_MANIFESTS = [path for path in MANIFESTS if _raw(path)["trigger"] == "pubsub"]


@pytest.mark.parametrize("path", PUBSUB_MANIFESTS, ids=[p.parent.name for p in PUBSUB_MANIFESTS])
def test_pubsub_delivery_settings_are_sane(path: Path) -> None:
    raw = _raw(path)
    delivery = raw["delivery"]
    assert delivery.get("min_backoff_seconds", 10) <= delivery.get("max_backoff_seconds", 600)
    assert delivery.get("ack_deadline_seconds", 60) >= raw["resources"]["timeout_seconds"]


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids())
def test_secrets_are_not_given_values_in_env(path: Path) -> None:
    raw = _raw(path)
    env = raw.get("env") or {}
    for secret in [*(raw.get("secrets") or []), *(raw.get("optional_secrets") or [])]:
        assert secret not in env, f"{secret} is a secret and must not have a plain env value"
    assert not set(raw.get("secrets") or []) & set(raw.get("optional_secrets") or []), "required or optional, not both"


@pytest.mark.parametrize("path", MANIFESTS, ids=_ids())
def test_manifest_loads_through_the_package(path: Path) -> None:
    raw = _raw(path)
    manifest = load_manifest(path)
    assert manifest.name == raw["name"] and manifest.entry_point == raw["entry_point"]
    assert manifest.is_pubsub is (raw["trigger"] == "pubsub")
    assert manifest.timeout_seconds == raw["resources"]["timeout_seconds"]
    assert manifest.secrets == tuple(raw.get("secrets") or ())
    assert manifest.optional_secrets == tuple(raw.get("optional_secrets") or ())
    if manifest.is_pubsub:
        for key, value in raw["delivery"].items():
            assert getattr(manifest.delivery, key) == value
    assert parse_manifest(raw, path) == manifest


# --- the schema refuses bad manifests ---------------------------------------------------------

VALID_PUBSUB: dict[str, Any] = {
    "name": "slack-notify",
    "description": "Posts failed builds to Slack.",
    "entry_point": "notify_slack",
    "trigger": "pubsub",
    "runtime": "python312",
    "filter": 'attributes.event_type = "build.finished"',
    "secrets": ["SLACK_TOKEN"],
    "resources": {"memory": "256Mi", "timeout_seconds": 60, "max_instances": 10},
    "delivery": {"ack_deadline_seconds": 120, "max_delivery_attempts": 5},
}
VALID_HTTP: dict[str, Any] = {
    "name": "ingress",
    "description": "Receives webhooks.",
    "entry_point": "receive_webhook",
    "trigger": "http",
    "runtime": "python312",
    "resources": {"memory": "256Mi", "timeout_seconds": 30, "max_instances": 20},
}


def test_the_valid_examples_are_valid() -> None:
    assert _errors(VALID_PUBSUB) == []
    assert _errors(VALID_HTTP) == []


def _mutated(base: dict[str, Any], path: str, value: Any) -> dict[str, Any]:
    document = copy.deepcopy(base)
    node = document
    *parents, last = path.split(".")
    for key in parents:
        node = node[key]
    if value is _DELETE:
        del node[last]
    else:
        node[last] = value
    return document


_DELETE = object()


@pytest.mark.parametrize(
    ("base", "path", "value"),
    [
        (VALID_PUBSUB, "name", "Slack_Notify"),
        (VALID_PUBSUB, "name", "a"),
        (VALID_PUBSUB, "name", "slack-"),
        (VALID_PUBSUB, "name", "1slack"),
        (VALID_PUBSUB, "name", "s" * 64),
        (VALID_PUBSUB, "trigger", "cron"),
        (VALID_PUBSUB, "trigger", "eventarc"),
        (VALID_PUBSUB, "filter", "attributes.event_type = " + '"' + "x" * 250 + '"'),
        (VALID_PUBSUB, "delivery.max_delivery_attempts", 3),
        (VALID_PUBSUB, "delivery.max_delivery_attempts", 101),
        (VALID_PUBSUB, "delivery.ack_deadline_seconds", 5),
        (VALID_PUBSUB, "delivery.ack_deadline_seconds", 60),  # no room past the 60 s timeout
        (VALID_PUBSUB, "delivery.ack_deadline_seconds", 119),
        (VALID_PUBSUB, "delivery.min_backoff_seconds", 601),
        (VALID_PUBSUB, "delivery.retries", 5),
        (VALID_PUBSUB, "filter", _DELETE),
        (VALID_PUBSUB, "filter", "attributes.event_type == build.finished"),
        (VALID_PUBSUB, "entry_point", "notify-slack"),
        (VALID_PUBSUB, "runtime", "python27"),
        (VALID_PUBSUB, "resources.timeout_seconds", 541),
        (VALID_PUBSUB, "resources.memory", "256MB"),
        (VALID_PUBSUB, "resources", _DELETE),
        (VALID_PUBSUB, "env", {"lower_case": "x"}),
        (VALID_PUBSUB, "env", {"PORT": 8080}),
        (VALID_PUBSUB, "env", {"DATASET": "${dataset}"}),  # no such placeholder
        (VALID_PUBSUB, "env", {"SLACK_URL": "${standin}/slack"}),  # the local stack's only: local_env
        (VALID_PUBSUB, "env", {"SLACK_TOKEN": "xoxb"}),  # a secret's value in plain env
        (VALID_PUBSUB, "secrets", ["SLACK_TOKEN", "SLACK_TOKEN"]),
        (VALID_PUBSUB, "optional_secrets", ["SLACK_TOKEN"]),  # required and optional
        (VALID_PUBSUB, "state", ["cache"]),
        (VALID_PUBSUB, "local", {"upstream": "s3"}),
        (VALID_PUBSUB, "local", {"client_library": "slack-sdk"}),  # a distribution, not an import
        (VALID_PUBSUB, "iam", [{"role": "roles/pubsub.subscriber", "scope": "everything"}]),
        (VALID_PUBSUB, "iam", [{"role": "owner", "scope": "project"}]),
        (VALID_PUBSUB, "unknown_key", True),
        (VALID_PUBSUB, "description", ""),
        (VALID_HTTP, "filter", ""),
        (VALID_HTTP, "delivery", {"max_delivery_attempts": 5}),
    ],
)
def test_invalid_manifests_are_refused(base: dict[str, Any], path: str, value: Any) -> None:
    assert _errors(_mutated(base, path, value)), f"{path}={value!r} was accepted"


def test_filter_length_limit_is_exact() -> None:
    prefix = 'attributes.event_type = "'
    at_limit = prefix + "x" * (256 - len(prefix) - 1) + '"'
    assert len(at_limit) == 256
    assert _errors(_mutated(VALID_PUBSUB, "filter", at_limit)) == []
    parse_filter(at_limit)
    assert _errors(_mutated(VALID_PUBSUB, "filter", at_limit[:-1] + 'x"'))


def test_a_filter_the_schema_accepts_can_still_be_unparseable() -> None:
    broken = _mutated(VALID_PUBSUB, "filter", "attributes.event_type == build.finished")
    assert not list(VALIDATOR.iter_errors(broken))  # syntax is beyond the schema: the model parses it
    with pytest.raises(FilterSyntaxError):
        parse_filter(broken["filter"])
    (problem,) = parse_manifest(broken).problems()
    assert problem.startswith("filter is not a valid Pub/Sub subscription filter (") and "\n" not in problem


# --- the model: defaults, derived names, placeholders, the normalised form --------------------

TERRAFORM = ROOT / "terraform"
FIXTURES = TERRAFORM / "tests" / "fixtures"


def test_optional_keys_take_the_models_defaults() -> None:
    minimal = {k: v for k, v in VALID_PUBSUB.items() if k not in ("runtime", "delivery", "secrets")}
    m = parse_manifest({**minimal, "resources": {"memory": "256Mi", "timeout_seconds": 90, "max_instances": 3}})
    assert _errors(minimal) == []
    assert (m.runtime, m.state, m.env, m.secrets, m.iam) == ("python312", frozenset(), {}, (), ())
    assert m.resources == Resources(memory="256Mi", timeout_seconds=90, max_instances=3, cpu=None)
    assert (m.resources.min_instances, m.resources.concurrency) == (0, 1)
    assert m.delivery == Delivery(ack_deadline_seconds=180, min_backoff_seconds=10, max_backoff_seconds=600)
    assert m.delivery.max_delivery_attempts == 5
    assert m.local == Local(upstream="standin", client_library="")


@pytest.mark.parametrize(("timeout", "deadline"), [(1, 120), (60, 120), (61, 180), (120, 180), (481, 600), (540, 600)])
def test_the_shortest_ack_deadline_is_the_timeout_in_whole_minutes_plus_one(timeout: int, deadline: int) -> None:
    assert min_ack_deadline(timeout) == deadline
    resources = {"memory": "256Mi", "timeout_seconds": timeout, "max_instances": 1}
    for ack, refused in ((deadline, False), (deadline - 1, True)):
        document = {**VALID_PUBSUB, "resources": resources, "delivery": {"ack_deadline_seconds": ack}}
        assert bool(_errors(document)) is refused, (timeout, ack)


def test_names_derived_from_a_function() -> None:
    m = parse_manifest(VALID_PUBSUB)
    assert m.secret_id("SLACK_TOKEN") == secret_id("slack-notify", "SLACK_TOKEN") == "slack-notify-slack-token"
    assert m.subscription("buildkite-events") == "buildkite-events-slack-notify"
    assert dead_letter_name("t", "slack-notify") == "t-slack-notify-dead-letter"
    assert replay_name("t", "slack-notify") == "t-slack-notify-replay"


def test_placeholders_are_filled_and_local_env_wins_locally() -> None:
    raw = {**VALID_PUBSUB, "env": {"A": "${project}.${bigquery_dataset}", "URL": "https://x"}}
    m = parse_manifest({**raw, "local_env": {"URL": "${standin}/x"}})
    values = {"project": "p", "bigquery_dataset": "d", "standin": "http://127.0.0.1:9"}
    assert m.environment(values) == {"A": "p.d", "URL": "https://x"}
    assert m.environment(values, local=True) == {"A": "p.d", "URL": "http://127.0.0.1:9/x"}
    with pytest.raises(KeyError, match="project"):
        m.environment({})


def test_terraform_fills_in_exactly_the_models_placeholders() -> None:
    main_tf = (TERRAFORM / "main.tf").read_text(encoding="utf-8")
    block = re.search(r"\n  placeholders = \{\n(.*?)\n  \}\n", main_tf, re.S)
    assert block, "terraform/main.tf: the placeholders map"
    assert re.findall(r"^\s+(\w+)\s+=", block.group(1), re.M) == list(PLACEHOLDERS)
    assert "state_collection = var.state_collection" in block.group(1)


def test_the_normalised_form_is_what_terraform_needs_and_nothing_to_compute() -> None:
    raw = {
        **VALID_PUBSUB,
        "env": {"T": "${project}.x", "ODD": "${dataset}", "PCT": "100%{x}"},
        "iam": [{"role": "projects/${project}/roles/r", "scope": "project"}] * 2,
        "state": ["idempotency"],
    }
    normalised = parse_manifest(raw).normalised()
    assert normalised["env"] == {"T": "${project}.x", "ODD": "$${dataset}", "PCT": "100%%{x}"}  # shown as written
    assert normalised["iam"] == [{"role": "projects/${project}/roles/r", "scope": "project"}]  # once
    assert normalised["secrets"] == {"SLACK_TOKEN": "slack-notify-slack-token"}
    assert normalised["subscription"] == "${topic}-slack-notify"
    assert normalised["dead_letter"] == "${topic}-slack-notify-dead-letter"
    assert normalised["replay"] == "${topic}-slack-notify-replay"
    assert normalised["uses_firestore"] is True
    assert normalised["resources"]["cpu"] is None and normalised["resources"]["concurrency"] == 1
    assert normalised["delivery"]["min_backoff_seconds"] == 10
    (problem,) = normalised["problems"]
    assert problem.startswith("env ODD uses ${dataset}, which is no placeholder; the known ones are ${project}")


def test_a_manifest_named_unlike_its_folder_is_a_problem(tmp_path: Path) -> None:
    folder = tmp_path / "slack-notfy"
    folder.mkdir()
    (folder / "function.yaml").write_text(yaml.safe_dump(VALID_PUBSUB))
    assert load_manifest(folder / "function.yaml").problems() == [
        'name is "slack-notify", but a manifest\'s name must equal its folder name'
    ]


def test_a_bundle_reads_the_json_beside_its_manifest(tmp_path: Path) -> None:
    (tmp_path / "function.yaml").write_text("this: [is not read")
    (tmp_path / "function.json").write_text(json.dumps(VALID_HTTP))
    assert load_manifest(tmp_path / "function.yaml") == parse_manifest(VALID_HTTP)


def _fixture_sets() -> list[Path]:
    return sorted(path.parent for path in FIXTURES.glob("**/manifests.json") if (path.parent / "functions").is_dir())


@pytest.mark.parametrize("folder", _fixture_sets(), ids=lambda p: str(p.relative_to(FIXTURES)) or "fixtures")
def test_terraform_fixtures_are_normalised_from_their_manifests(folder: Path) -> None:
    committed = json.loads((folder / "manifests.json").read_text())
    fresh = normalised(folder / "functions", folder / "manifests.json")
    relative = folder.relative_to(ROOT)
    assert committed == fresh, f"run: python -m tools.manifests {relative}/functions {relative}/manifests.json"


def test_every_fixture_set_terraform_tests_name_is_normalised() -> None:
    named = set(re.findall(r'manifests_file\s+=\s+"tests/fixtures/([^"]+)"', _terraform_tests()))
    assert {str((p / "manifests.json").relative_to(FIXTURES)) for p in _fixture_sets()} <= named
    assert named - {str((p / "manifests.json").relative_to(FIXTURES)) for p in _fixture_sets()} == {
        "empty/manifests.json",  # none at all
        "stale/manifests.json",  # older than the manifests beside it
    }


def _terraform_tests() -> str:
    return "".join(p.read_text() for p in (TERRAFORM / "tests").glob("*.tftest.hcl"))


def test_the_repository_manifests_normalise_without_problems(tmp_path: Path) -> None:
    assert write_normalised(ROOT / "functions", tmp_path / "manifests.json") == []
    written = json.loads((tmp_path / "manifests.json").read_text())
    assert sorted(written["functions"]) == _ids()
    for name, fn in written["functions"].items():
        assert fn["sha256"] == hashlib.sha256((ROOT / "functions" / name / "function.yaml").read_bytes()).hexdigest()
