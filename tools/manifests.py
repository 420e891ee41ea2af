"""Read every function's manifest; fill in its ``${placeholders}``."""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path

from buildkite_events.manifest import MANIFEST_NAME, Manifest, load_manifest
from tools import ROOT

FUNCTIONS_DIR = ROOT / "functions"
_PLACEHOLDER = re.compile(r"\$\{([a-z_]+)\}")


def function_dir(name: str) -> Path:
    return FUNCTIONS_DIR / name


def all_manifests() -> dict[str, Manifest]:
    """Every ``functions/<name>/function.yaml``, by name (the folder is the source of truth)."""
    return {path.parent.name: load_manifest(path) for path in sorted(FUNCTIONS_DIR.glob(f"*/{MANIFEST_NAME}"))}


def manifest(name: str) -> Manifest:
    path = function_dir(name) / MANIFEST_NAME
    if not path.is_file():
        known = ", ".join(all_manifests())
        raise SystemExit(f"unknown function {name!r}; known: {known}")
    return load_manifest(path)


def resolve(template: str, values: Mapping[str, str]) -> str:
    """``"${project}-archive"`` → ``"my-proj-archive"``; an unknown placeholder is an error."""

    def fill(match: re.Match[str]) -> str:
        key = match.group(1)
        if key not in values:
            raise KeyError(f"no value for placeholder ${{{key}}}")
        return values[key]

    return _PLACEHOLDER.sub(fill, template)


def function_env(m: Manifest, values: Mapping[str, str], *, local: bool = False) -> dict[str, str]:
    """The manifest's env with placeholders filled; ``local`` adds its ``local_env`` overrides."""
    env = dict(m.env)
    if local:
        env.update({str(k): str(v) for k, v in (m.raw.get("local_env") or {}).items()})
    return {key: resolve(value, values) for key, value in env.items()}
