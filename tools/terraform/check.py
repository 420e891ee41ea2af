"""Check ``terraform/`` offline: what `make terraform-check` runs, and what the tests call.

    python -m tools.terraform.check                  # every step
    python -m tools.terraform.check validate test    # some of them

Steps: ``schema`` (the stand-in provider's schema covers every resource type used), ``fmt``,
``validate`` and ``test`` (against the stand-in google provider, mocked in tests), and
``checkov``. Tools come from ``tools.terraform.toolchain``, installed on first use.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from tools import manifests

from . import schema, toolchain
from .schema import ROOT, TERRAFORM_DIR

FUNCTIONS_DIR = manifests.FUNCTIONS_DIR


@dataclass(frozen=True)
class Result:
    step: str
    ok: bool
    output: str
    seconds: float

    def __str__(self) -> str:
        return f"{self.step}: {'ok' if self.ok else 'FAILED'} ({self.seconds:.1f}s)"


def _run(step: str, command: Sequence[str], env: dict[str, str] | None = None, cwd: Path = ROOT) -> Result:
    started = time.monotonic()
    process = subprocess.run(
        list(command),
        cwd=cwd,
        env=os.environ | toolchain.QUIET_ENV | (env or {}),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        check=False,
    )
    return Result(step, process.returncode == 0, process.stdout, time.monotonic() - started)


def check_schema() -> Result:
    started = time.monotonic()
    used = schema.used_types()
    missing = schema.missing_types(schema.load_schema(), used)
    lines = [f"{schema.SCHEMA_FILE.name} lacks {item}: run `make terraform-schema`" for item in missing]
    count = len(used["resource"]) + len(used["data"])
    lines.append(f"{count - len(missing)} of {count} resource and data source types covered")
    return Result("schema", not missing, "\n".join(lines), time.monotonic() - started)


def check_fmt() -> Result:
    tf = toolchain.terraform()
    return _run("fmt", [*tf.command, "fmt", "-check", "-recursive", "-diff", "-no-color", str(TERRAFORM_DIR)])


def _with_standin(step: str, args: Sequence[str]) -> Result:
    """Run ``terraform -chdir=terraform <args>`` with the stand-in google provider.

    The CLI configuration points Terraform at the stand-in through ``dev_overrides``; one
    running instance of it, attached through TF_REATTACH_PROVIDERS, serves every operation.
    """
    tf = toolchain.terraform()
    plugins = toolchain.standin_plugin_dir()
    with tempfile.TemporaryDirectory(prefix="terraform-check-") as tmp, toolchain.standin_server() as reattach:
        folder = Path(tmp)
        env = {"TF_CLI_CONFIG_FILE": str(toolchain.cli_config(plugins, folder)), "TF_REATTACH_PROVIDERS": reattach}
        # Substitute bundles and the normalised manifests (`make package` makes both) for the
        # tests that read the repository's own manifests.
        bundles = folder / "bundles"
        bundles.mkdir()
        for manifest in FUNCTIONS_DIR.glob("*/function.yaml"):
            zipfile.ZipFile(bundles / f"{manifest.parent.name}.zip", "w").close()
        normalised = folder / "manifests.json"
        manifests.write_normalised(FUNCTIONS_DIR, normalised)
        argv = [arg.replace("{bundles}", str(bundles)).replace("{manifests}", str(normalised)) for arg in args]
        return _run(step, [*tf.command, f"-chdir={TERRAFORM_DIR}", *argv], env=env)


def check_validate() -> Result:
    return _with_standin("validate", ["validate", "-no-color"])


def check_test() -> Result:
    test = ["test", "-no-color", "-compact-warnings", "-var=bundle_dir={bundles}", "-var=manifests_file={manifests}"]
    return _with_standin("test", test)


def check_checkov() -> Result:
    command = [
        str(toolchain.checkov()),
        "--directory",
        str(TERRAFORM_DIR),
        "--framework",
        "terraform",
        "--skip-download",  # no network: policies come with the package
        "--quiet",  # print failed checks only
        "--compact",
        "--output",
        "cli",
    ]
    return _run("checkov", command)


STEPS: dict[str, Callable[[], Result]] = {
    "schema": check_schema,
    "fmt": check_fmt,
    "validate": check_validate,
    "test": check_test,
    "checkov": check_checkov,
}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("steps", nargs="*", metavar="STEP", help=f"any of {', '.join(STEPS)} (default: all)")
    args = parser.parse_args(argv)
    unknown = [step for step in args.steps if step not in STEPS]
    if unknown:
        parser.error(f"unknown step {', '.join(unknown)}; steps: {', '.join(STEPS)}")
    steps = args.steps or list(STEPS)
    started = time.monotonic()
    results = []
    for step in steps:
        result = STEPS[step]()
        results.append(result)
        if not result.ok or step == "test":
            print(result.output.rstrip())
        print(result, flush=True)
    failed = [r.step for r in results if not r.ok]
    summary = f"terraform-check: {len(results) - len(failed)} passed, {len(failed)} failed"
    print(f"{summary} in {time.monotonic() - started:.0f}s" + (f" ({', '.join(failed)})" if failed else ""))
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
