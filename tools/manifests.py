"""Every function's manifest, the normalised file Terraform reads, and each function's local support.

    python -m tools.manifests                           # build/manifests.json from functions/
    python -m tools.manifests FUNCTIONS_DIR OUTPUT      # e.g. a Terraform test fixture

``build/manifests.json`` (``make package`` writes it) holds each manifest as
``Manifest.normalised()`` makes it, with the SHA-256 of its ``function.yaml`` so that
Terraform can tell when it is older than the manifests (terraform/main.tf).

``functions/<name>/local_support.py`` is optional and never shipped: what the local tools
need to know about a function beyond its manifest, as module attributes. The fault lanes
(tests/test_faults.py) read how to see its side effect: ``FIXTURE`` (an event it acts on),
``SIDE_EFFECT`` (a regex of the upstream request that makes it), ``side_effects(lanes, lane)``
(how many happened so far), and optionally ``METHOD``, ``TIMEOUT_HOLD``; ``make demo`` adds
the lines of ``demo_report(stack)`` when there is one.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
from collections.abc import Mapping
from functools import cache
from pathlib import Path
from types import ModuleType
from typing import Any

from buildkite_events.manifest import MANIFEST_NAME, Manifest, load_manifest
from tools import ROOT

FUNCTIONS_DIR = ROOT / "functions"
NORMALISED = ROOT / "build" / "manifests.json"  # terraform/main.tf: the default manifests_file
LOCAL_SUPPORT = "local_support.py"


def function_dir(name: str) -> Path:
    return FUNCTIONS_DIR / name


def all_manifests(functions_dir: Path = FUNCTIONS_DIR) -> dict[str, Manifest]:
    """Every ``<functions_dir>/<name>/function.yaml``, by name (the folder is the source of truth)."""
    return {path.parent.name: load_manifest(path) for path in sorted(functions_dir.glob(f"*/{MANIFEST_NAME}"))}


def manifest(name: str) -> Manifest:
    path = function_dir(name) / MANIFEST_NAME
    if not path.is_file():
        known = ", ".join(all_manifests())
        raise SystemExit(f"unknown function {name!r}; known: {known}")
    return load_manifest(path)


def function_env(m: Manifest, values: Mapping[str, str], *, local: bool = False) -> dict[str, str]:
    """The manifest's env with placeholders filled; ``local`` adds its ``local_env`` overrides."""
    return m.environment(dict(values), local=local)


def normalised(functions_dir: Path = FUNCTIONS_DIR, output: Path = NORMALISED) -> dict[str, Any]:
    """What ``output`` holds: the manifests under ``functions_dir`` as Terraform reads them."""
    functions = {}
    for name, m in all_manifests(functions_dir).items():
        assert m.path is not None
        functions[name] = {**m.normalised(), "sha256": hashlib.sha256(m.path.read_bytes()).hexdigest()}
    return {
        "about": "Written by `make package` from each function.yaml, which is what to edit; terraform/ reads this.",
        "functions_dir": Path(os.path.relpath(functions_dir, output.parent)).as_posix(),
        "functions": functions,
    }


def write_normalised(functions_dir: Path = FUNCTIONS_DIR, output: Path = NORMALISED) -> list[str]:
    """Write ``output``; return each problem found, as ``functions/<name>/function.yaml: ...``.
    A manifest with problems is written all the same: Terraform's plan stops on them too."""
    document = normalised(functions_dir, output)
    output.parent.mkdir(parents=True, exist_ok=True)
    output.write_text(json.dumps(document, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")
    return [
        f"{functions_dir.name}/{name}/{MANIFEST_NAME}: {problem}"
        for name, fn in document["functions"].items()
        for problem in fn["problems"]
    ]


@cache
def local_support(name: str) -> ModuleType | None:
    """``functions/<name>/local_support.py``, imported under a name of its own; None if absent."""
    path = function_dir(name) / LOCAL_SUPPORT
    if not path.is_file():
        return None
    module_name = f"local_support_{name.replace('-', '_')}"
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str]) -> int:
    if len(argv) not in (0, 2):
        print(__doc__, file=sys.stderr)
        return 2
    functions_dir, output = (Path(argv[0]), Path(argv[1])) if argv else (FUNCTIONS_DIR, NORMALISED)
    problems = write_normalised(functions_dir.resolve(), output.resolve())
    for problem in problems:
        print(problem, file=sys.stderr)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
