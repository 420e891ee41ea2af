"""``function.yaml``: the single source of truth for one function.

Terraform, the Makefile, the local stack, the tests and the function itself read it.
The JSON schema beside this module (``manifest.schema.json``) documents every key.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

MANIFEST_NAME = "function.yaml"


@dataclass(frozen=True)
class Delivery:
    ack_deadline_seconds: int = 60
    min_backoff_seconds: int = 10
    max_backoff_seconds: int = 600
    max_delivery_attempts: int = 5


STATE_KINDS = ("idempotency", "records")
"""What a function may keep in Firestore (buildkite_events.state): claims per event, ordered records."""


@dataclass(frozen=True)
class Manifest:
    name: str
    entry_point: str
    trigger: str
    filter: str = ""
    timeout_seconds: int = 60
    state: frozenset[str] = frozenset()
    env: dict[str, str] = field(default_factory=dict)
    secrets: tuple[str, ...] = ()
    optional_secrets: tuple[str, ...] = ()  # mounted only when Terraform is told they have a version
    delivery: Delivery = field(default_factory=Delivery)
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)
    path: Path | None = None

    @property
    def is_pubsub(self) -> bool:
        return self.trigger == "pubsub"

    @property
    def idempotency(self) -> bool:
        """Claim each event in Firestore before the side effect (the handler does it)."""
        return "idempotency" in self.state

    @property
    def uses_firestore(self) -> bool:
        """Any state at all: the Firestore client ships, and Terraform grants the database."""
        return bool(self.state)


def parse_manifest(raw: dict[str, Any], path: Path | None = None) -> Manifest:
    resources = raw.get("resources") or {}
    delivery = raw.get("delivery") or {}
    return Manifest(
        name=raw["name"],
        entry_point=raw["entry_point"],
        trigger=raw["trigger"],
        filter=raw.get("filter") or "",
        timeout_seconds=int(resources.get("timeout_seconds", 60)),
        state=_state(raw.get("state"), path),
        env={str(k): "" if v is None else str(v) for k, v in (raw.get("env") or {}).items()},
        secrets=tuple(raw.get("secrets") or ()),
        optional_secrets=tuple(raw.get("optional_secrets") or ()),
        delivery=Delivery(**{k: int(v) for k, v in delivery.items() if k in Delivery.__dataclass_fields__}),
        raw=raw,
        path=path,
    )


def _state(value: Any, path: Path | None) -> frozenset[str]:
    kinds = frozenset(str(kind) for kind in value or ())
    unknown = sorted(kinds - set(STATE_KINDS))
    if unknown:
        raise ValueError(f"{path or 'manifest'}: unknown state {', '.join(unknown)}; known: {', '.join(STATE_KINDS)}")
    return kinds


@cache
def _loader() -> Any:
    """A safe loader with YAML 1.2 booleans: only true/false. YAML 1.1 (PyYAML's default)
    would read ``yes``, ``on`` or ``off`` as booleans; manifest authors mean the words.
    (Terraform's yamldecode does the same, which is why no manifest key is such a word.)
    """
    import yaml  # only on the first delivery of an instance

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


@cache
def load_manifest(path: Path) -> Manifest:
    with open(path, encoding="utf-8") as handle:
        loader = _loader()(handle)
        try:
            raw = loader.get_single_data()
        finally:
            loader.dispose()
    if not isinstance(raw, dict):
        raise ValueError(f"{path} is not a mapping")
    return parse_manifest(raw, path)
