"""Every functions/*/function.yaml: valid against the schema and consistent with its folder."""

from __future__ import annotations

import ast
import copy
import json
import re
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import yaml

from buildkite_events.filters import FilterSyntaxError, parse_filter
from buildkite_events.manifest import load_manifest, parse_manifest

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
    return [error.message for error in VALIDATOR.iter_errors(document)]


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
        (VALID_PUBSUB, "delivery.ack_deadline_seconds", _DELETE),
        (VALID_PUBSUB, "delivery.retries", 5),
        (VALID_PUBSUB, "filter", _DELETE),
        (VALID_PUBSUB, "delivery", _DELETE),
        (VALID_PUBSUB, "entry_point", "notify-slack"),
        (VALID_PUBSUB, "runtime", "python27"),
        (VALID_PUBSUB, "resources.timeout_seconds", 541),
        (VALID_PUBSUB, "resources.memory", "256MB"),
        (VALID_PUBSUB, "resources", _DELETE),
        (VALID_PUBSUB, "env", {"lower_case": "x"}),
        (VALID_PUBSUB, "env", {"PORT": 8080}),
        (VALID_PUBSUB, "secrets", ["SLACK_TOKEN", "SLACK_TOKEN"]),
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
    assert _errors(broken) == []  # syntax is beyond the schema: that is why the filter test exists
    with pytest.raises(FilterSyntaxError):
        parse_filter(broken["filter"])
