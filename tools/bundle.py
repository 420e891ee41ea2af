"""A function's bundle: what Cloud Functions builds from (``make package``, ``make deploy-<name>``,
and ``make bench``, which times cold starts of what would be deployed).

``build/<name>/`` holds the function's ``main.py``, its helper modules and ``function.yaml``;
``function.json`` beside it, the same manifest read at run time without a YAML parser; the
``buildkite_events`` package vendored; and one ``requirements.txt`` = the function's own +
the shared package's dependencies (+ its ``state`` extra when the manifest declares state, and
the ``trace-<exporter>`` extra when ``TRACE_EXPORTER`` names one, as Terraform's ``trace_exporter``).
Tests, test data, READMEs and ``local_support.py`` stay behind.

``build/first/<name>.zip`` is the bundle Terraform deploys a function's first code from:
written only when it is missing, never by a deploy (the google provider compares that file's
MD5 with the uploaded object at every plan, so rewriting it would make every plan after a
deploy show a change).
"""

from __future__ import annotations

import json
import os
import shutil
import tomllib
import zipfile
from pathlib import Path

from buildkite_events.manifest import SHIPPED_NAME, Manifest
from tools import ROOT
from tools.manifests import LOCAL_SUPPORT, function_dir, manifest

BUILD_DIR = ROOT / "build"
FIRST_BUNDLE_DIR = BUILD_DIR / "first"  # terraform/main.tf's default bundle_dir
SHARED = ROOT / "shared"
_ZIP_TIME = (1980, 1, 1, 0, 0, 0)
NOT_SHIPPED = (
    "test_*.py", "testdata", "conftest.py", "README.md", LOCAL_SUPPORT, SHIPPED_NAME, "__pycache__", "*.pyc"
)  # fmt: skip
"""Left out of every bundle (and fixed, so that an unchanged bundle zips to identical bytes)."""


TRACE_EXPORTERS = ("none", "gcp", "otlp")  # terraform/variables.tf trace_exporter


def trace_exporter() -> str:
    """``TRACE_EXPORTER``, as Terraform's trace_exporter: what bundles carry and functions are told."""
    value = (os.environ.get("TRACE_EXPORTER") or "none").strip().lower()
    if value not in TRACE_EXPORTERS:
        raise SystemExit(f"TRACE_EXPORTER must be {', '.join(TRACE_EXPORTERS)} (as terraform's trace_exporter)")
    return value


def shared_requirements(m: Manifest, exporter: str = "none") -> list[str]:
    project = tomllib.loads((SHARED / "pyproject.toml").read_text())["project"]
    requirements = list(project["dependencies"])
    if m.uses_firestore:  # state: [...] in the manifest
        requirements += project["optional-dependencies"]["state"]
    if exporter != "none":  # only then do bundles carry OpenTelemetry
        requirements += project["optional-dependencies"][f"trace-{exporter}"]
    return requirements


def package(name: str, *, first: bool = False, build_dir: Path = BUILD_DIR) -> Path:
    """Build ``<build_dir>/<name>/`` and a reproducible ``<build_dir>/<name>.zip``; return the folder.

    ``first``: also write ``build/first/<name>.zip`` for Terraform, unless it exists.
    """
    m = manifest(name)
    source, out = function_dir(name), build_dir / name
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    shutil.copytree(source, out, ignore=shutil.ignore_patterns(*NOT_SHIPPED), dirs_exist_ok=True)
    shutil.copytree(
        SHARED / "buildkite_events",
        out / "buildkite_events",
        ignore=shutil.ignore_patterns("__pycache__", "*.pyc"),
    )
    (out / SHIPPED_NAME).write_text(json.dumps(m.raw, indent=1, sort_keys=True) + "\n", encoding="utf-8")
    own = [line for line in (out / "requirements.txt").read_text().splitlines() if line.strip()]
    lines = [*own, "", "# vendored buildkite_events", *shared_requirements(m, trace_exporter())]
    (out / "requirements.txt").write_text("\n".join(lines) + "\n")
    _zip(out, build_dir / f"{name}.zip")
    first_bundle = FIRST_BUNDLE_DIR / f"{name}.zip"
    if first and not first_bundle.exists():
        FIRST_BUNDLE_DIR.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(build_dir / f"{name}.zip", first_bundle)
    return out


def _zip(folder: Path, target: Path) -> None:
    with zipfile.ZipFile(target, "w", zipfile.ZIP_DEFLATED) as archive:
        for path in sorted(p for p in folder.rglob("*") if p.is_file()):
            info = zipfile.ZipInfo(str(path.relative_to(folder)), _ZIP_TIME)
            info.external_attr = 0o644 << 16
            archive.writestr(info, path.read_bytes(), zipfile.ZIP_DEFLATED)
