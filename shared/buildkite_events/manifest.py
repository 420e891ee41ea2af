"""``function.yaml``, the single source of truth for one function, as one typed model.

Everything that reads a manifest reads it through this module: the handler and the ingress
at run time, ``make package`` (the bundles, and ``build/manifests.json`` that Terraform
reads), ``make deploy-<name>``, the local stack and the tests. So the manifest's vocabulary
is written here once: the defaults of optional keys, the ``${placeholders}`` and how they
are filled in, the names derived from a function's name (secret ids, subscriptions), and
the rules a manifest must keep (``problems``). ``manifest.schema.json`` beside it documents
every key and checks the structure; the rules that span keys are ``problems``'.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any, NamedTuple

MANIFEST_NAME = "function.yaml"
SHIPPED_NAME = "function.json"
"""What ``make package`` puts beside ``function.yaml`` in a bundle: the same mapping as JSON, so
that a deployed function reads its manifest without importing a YAML parser (~15 ms)."""

PLACEHOLDERS = {
    "project": "the Google Cloud project id",
    "region": "the functions' region",
    "topic": "the events topic",
    "archive_bucket": "the archive bucket",
    "bigquery_dataset": "the BigQuery dataset id",
    "state_collection": "the Firestore collection of every function's state",
}
"""Filled in by Terraform (terraform/main.tf ``placeholders``), ``make deploy-<name>`` and the local stack."""
LOCAL_PLACEHOLDERS = {
    "standin": "the local stand-in server's base URL",
    "bigquery_api_url": "the local bqemulator's URL",
}
"""Only in ``local_env``: the local stack and the tests fill them in."""

TRIGGERS = ("http", "pubsub")
STATE_KINDS = ("idempotency", "records")
"""What a function may keep in Firestore (buildkite_events.state): claims per event, ordered records."""
IAM_SCOPES = ("project", "topic", "archive_bucket", "bigquery_dataset", "bigquery_tables", "own_secrets")
UPSTREAMS = ("standin", "gcs", "bigquery")
"""What a function calls on the local stack: the third-party stand-in, fake-gcs-server or bqemulator."""

_PLACEHOLDER = re.compile(r"\$\{([^}]*)\}")
_TEMPLATE_SYNTAX = re.compile(r"\$\{([^}]*)\}|%\{")


def secret_id(function: str, variable: str) -> str:
    """Secret Manager id of a manifest secret: ``slack-notify-slack-token``."""
    return f"{function}-{variable.lower().replace('_', '-')}"


def subscription_name(topic: str, function: str) -> str:
    """A function's push subscription on the events topic."""
    return f"{topic}-{function}"


def dead_letter_name(topic: str, function: str) -> str:
    """A function's dead-letter topic and the pull subscription on it (the same name)."""
    return f"{subscription_name(topic, function)}-dead-letter"


def replay_name(topic: str, function: str) -> str:
    """The topic (and its one push subscription) that replays dead letters to one function."""
    return f"{subscription_name(topic, function)}-replay"


def min_ack_deadline(timeout_seconds: int) -> int:
    """The shortest ack deadline that leaves a push room to finish (cold start, queueing): the
    timeout rounded up to a whole minute, plus a minute, at most Pub/Sub's 600 s. A shorter one
    makes Pub/Sub redeliver a push while the first call still runs."""
    return min(600, 60 * (-(-timeout_seconds // 60) + 1))


def fill(template: str, values: dict[str, str]) -> str:
    """``"${project}-archive"`` → ``"my-proj-archive"``; a placeholder without a value is a KeyError."""

    def value(match: re.Match[str]) -> str:
        if match.group(1) not in values:
            raise KeyError(f"no value for placeholder ${{{match.group(1)}}}")
        return values[match.group(1)]

    return _PLACEHOLDER.sub(value, template)


class Resources(NamedTuple):  # NamedTuples: a dataclass costs each cold start ~1 ms to make
    memory: str = "256Mi"
    timeout_seconds: int = 60
    max_instances: int = 10
    cpu: str | None = None  # None: the platform's default for the memory
    min_instances: int = 0
    concurrency: int = 1


class Delivery(NamedTuple):
    """The push subscription's settings (Pub/Sub functions)."""

    ack_deadline_seconds: int = 120  # parse_manifest: min_ack_deadline(timeout) unless set
    min_backoff_seconds: int = 10
    max_backoff_seconds: int = 600
    max_delivery_attempts: int = 5


class Binding(NamedTuple):
    role: str
    scope: str


class Local(NamedTuple):
    """What only the local tools read: ``upstream`` (what the function calls on the local
    stack) and ``client_library`` (the third-party import its integration needs, which the bare
    baseline of ``make bench`` imports too; empty: none)."""

    upstream: str = "standin"
    client_library: str = ""


@dataclass(frozen=True)
class Manifest:
    name: str
    entry_point: str
    trigger: str
    description: str = ""
    runtime: str = "python312"
    filter: str = ""
    state: frozenset[str] = frozenset()
    env: dict[str, str] = field(default_factory=dict)
    local_env: dict[str, str] = field(default_factory=dict)  # the local stack's overrides
    secrets: tuple[str, ...] = ()
    optional_secrets: tuple[str, ...] = ()  # mounted only when Terraform is told they have a version
    iam: tuple[Binding, ...] = ()
    resources: Resources = field(default_factory=Resources)
    delivery: Delivery = field(default_factory=Delivery)
    local: Local = field(default_factory=Local)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    path: Path | None = field(default=None, compare=False)  # where it was read: provenance, not content

    @property
    def is_pubsub(self) -> bool:
        return self.trigger == "pubsub"

    @property
    def timeout_seconds(self) -> int:
        return self.resources.timeout_seconds

    @property
    def idempotency(self) -> bool:
        """Claim each event in Firestore before the side effect (the handler does it)."""
        return "idempotency" in self.state

    @property
    def uses_firestore(self) -> bool:
        """Any state at all: Terraform grants the function the database."""
        return bool(self.state)

    def secret_id(self, variable: str) -> str:
        return secret_id(self.name, variable)

    def subscription(self, topic: str) -> str:
        return subscription_name(topic, self.name)

    def environment(self, values: dict[str, str], *, local: bool = False) -> dict[str, str]:
        """The env with placeholders filled in; ``local`` adds the ``local_env`` overrides."""
        env = {**self.env, **self.local_env} if local else self.env
        return {key: fill(value, values) for key, value in env.items()}

    def problems(self) -> list[str]:
        """What is wrong with this manifest, each as a sentence (empty: nothing). The schema's
        findings when ``jsonschema`` is installed (the tools have it; a deployed function never
        asks), then the rules that span keys."""
        found = _schema_errors(self.raw)
        if self.path is not None and self.name != self.path.parent.name:
            found.append(f'name is "{self.name}", but a manifest\'s name must equal its folder name')
        found += _unknown_placeholders("env", self.env, PLACEHOLDERS)
        found += _unknown_placeholders("local_env", self.local_env, {**PLACEHOLDERS, **LOCAL_PLACEHOLDERS})
        found += _unknown_placeholders("iam role", {b.scope: b.role for b in self.iam}, PLACEHOLDERS)
        for variable in sorted(set(self.env) & {*self.secrets, *self.optional_secrets}):
            found.append(f"{variable} is a secret and must not have a plain env value")
        for variable in sorted(set(self.secrets) & set(self.optional_secrets)):
            found.append(f"{variable} is listed as required and optional: one or the other")
        if self.is_pubsub:
            found += self._delivery_problems()
        return found

    def _delivery_problems(self) -> list[str]:
        from .filters import FilterSyntaxError, parse_filter

        found = []
        try:
            parse_filter(self.filter)
        except FilterSyntaxError as err:
            reason = str(err).splitlines()[0]  # the rest points at the column
            found.append(f"filter is not a valid Pub/Sub subscription filter ({reason}): {self.filter}")
        d, least = self.delivery, min_ack_deadline(self.timeout_seconds)
        if d.ack_deadline_seconds < least:
            found.append(
                f"delivery.ack_deadline_seconds ({d.ack_deadline_seconds}) must be at least {least}: the timeout"
                f" ({self.timeout_seconds} s) rounded up to a whole minute, plus a minute. Pub/Sub redelivers a push"
                " it has not had an answer to by the deadline, while the first call still runs"
            )
        if d.min_backoff_seconds > d.max_backoff_seconds:
            found.append(
                f"delivery.min_backoff_seconds ({d.min_backoff_seconds}) must not exceed"
                f" max_backoff_seconds ({d.max_backoff_seconds})"
            )
        return found

    def normalised(self) -> dict[str, Any]:
        """The manifest as Terraform reads it from ``build/manifests.json``: every default filled
        in, every derived name made, placeholders left for Terraform's ``templatestring`` (an
        unknown one escaped so that it shows as written), and the problems found."""
        topic = "${topic}"
        return {
            "name": self.name,
            "description": self.description,
            "trigger": self.trigger,
            "runtime": self.runtime,
            "entry_point": self.entry_point,
            "filter": self.filter,
            "uses_firestore": self.uses_firestore,
            "env": {key: _template(value) for key, value in self.env.items()},
            "secrets": {variable: self.secret_id(variable) for variable in self.secrets},
            "optional_secrets": {variable: self.secret_id(variable) for variable in self.optional_secrets},
            "iam": [{"role": _template(b.role), "scope": b.scope} for b in self.iam],
            "resources": self.resources._asdict(),
            "delivery": self.delivery._asdict(),
            "subscription": subscription_name(topic, self.name),
            "dead_letter": dead_letter_name(topic, self.name),
            "replay": replay_name(topic, self.name),
            "problems": self.problems(),
        }


def parse_manifest(raw: dict[str, Any], path: Path | None = None) -> Manifest:
    """The model of a manifest mapping, defaults filled in. A key of the wrong shape is a
    ValueError; rules that span keys are left to ``Manifest.problems``."""
    try:
        resources = Resources(**_known(Resources, raw.get("resources")))
        delivery = {"ack_deadline_seconds": min_ack_deadline(resources.timeout_seconds)}
        delivery |= _known(Delivery, raw.get("delivery"))
        return Manifest(
            name=str(raw["name"]),
            entry_point=str(raw["entry_point"]),
            trigger=str(raw["trigger"]),
            description=str(raw.get("description") or ""),
            runtime=str(raw.get("runtime") or Manifest.runtime),
            filter=str(raw.get("filter") or "").strip(),
            state=frozenset(str(kind) for kind in raw.get("state") or ()),
            env=_strings(raw.get("env")),
            local_env=_strings(raw.get("local_env")),
            secrets=tuple(str(v) for v in raw.get("secrets") or ()),
            optional_secrets=tuple(str(v) for v in raw.get("optional_secrets") or ()),
            iam=tuple(dict.fromkeys(Binding(str(b["role"]), str(b["scope"])) for b in raw.get("iam") or ())),
            resources=resources,
            delivery=Delivery(**{k: int(v) for k, v in delivery.items()}),
            local=Local(**{k: str(v or "") for k, v in _known(Local, raw.get("local")).items()}),
            raw=raw,
            path=path,
        )
    except (KeyError, TypeError, ValueError, AttributeError) as err:
        raise ValueError(f"{path or 'manifest'}: not a manifest ({type(err).__name__}: {err})") from None


def _known(cls: Any, value: Any) -> dict[str, Any]:
    """The keys of ``value`` that the NamedTuple ``cls`` has (the schema reports the others)."""
    return {k: v for k, v in (value or {}).items() if k in cls._fields}


def _strings(value: Any) -> dict[str, str]:
    return {str(k): "" if v is None else str(v) for k, v in (value or {}).items()}


def _unknown_placeholders(what: str, values: dict[str, str], known: dict[str, str]) -> list[str]:
    found = []
    for key, value in values.items():
        for name in _PLACEHOLDER.findall(value):
            if name not in known:
                choices = ", ".join(f"${{{k}}}" for k in known)
                found.append(f"{what} {key} uses ${{{name}}}, which is no placeholder; the known ones are {choices}")
    return found


def _template(value: str) -> str:
    """``value`` as a Terraform template: known placeholders stay, anything else that template
    syntax would read (an unknown ``${...}``, ``%{``) is escaped to show as written."""

    def escape(match: re.Match[str]) -> str:
        text = match.group(0)
        if match.group(1) in PLACEHOLDERS:
            return text
        return "$" + text if text.startswith("$") else "%" + text

    return _TEMPLATE_SYNTAX.sub(escape, value)


def _schema_errors(raw: dict[str, Any]) -> list[str]:
    try:
        import jsonschema
    except ImportError:  # a deployed function: the tools checked its manifest before it shipped
        return []
    validator = jsonschema.Draft202012Validator(_schema())
    errors = sorted(validator.iter_errors(raw), key=lambda e: list(map(str, e.absolute_path)))
    return [f"{'.'.join(map(str, e.absolute_path)) or 'manifest'}: {e.message}" for e in errors]


@cache
def _schema() -> dict[str, Any]:
    return dict(json.loads(Path(__file__).with_name("manifest.schema.json").read_text(encoding="utf-8")))


@cache
def _yaml_loader() -> Any:
    """A safe loader with YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default)
    would read ``yes``, ``on`` or ``off`` as booleans; manifest authors mean the words."""
    import yaml  # only where no function.json was shipped (a source folder)

    class Loader(getattr(yaml, "CSafeLoader", yaml.SafeLoader)):  # type: ignore[misc]
        pass

    Loader.yaml_implicit_resolvers = {
        first: [(tag, regexp) for tag, regexp in resolvers if tag != "tag:yaml.org,2002:bool"]
        for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
    }
    Loader.add_implicit_resolver(
        "tag:yaml.org,2002:bool", re.compile(r"^(?:true|True|TRUE|false|False|FALSE)$"), list("tTfF")
    )
    return Loader


def read_yaml(path: Path) -> Any:
    with open(path, encoding="utf-8") as handle:
        loader = _yaml_loader()(handle)
        try:
            return loader.get_single_data()
        finally:
            loader.dispose()


@cache
def load_manifest(path: Path) -> Manifest:
    """The manifest at ``path`` (a ``function.yaml``); a ``function.json`` beside it (a bundle) is
    the same mapping and is read instead."""
    shipped = path.with_name(SHIPPED_NAME)
    raw = json.loads(shipped.read_bytes()) if shipped.is_file() else read_yaml(path)
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a mapping")
    return parse_manifest(raw, path)
