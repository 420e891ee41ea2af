"""Helpers the test suites share: fixtures as messages, functions loaded by path, log lines.

Function tests live beside each function (``functions/<name>/test_main.py``) and import
this module as ``tests.support``.
"""

from __future__ import annotations

import base64
import contextlib
import importlib.util
import json
import socket
import sys
import threading
from collections import Counter
from collections.abc import Iterator, Mapping
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from buildkite_events.manifest import load_manifest
from buildkite_events.message import to_message

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures" / "buildkite"
PAYLOADS = FIXTURES / "payloads"


def payload_names() -> list[str]:
    """Fixture file stems: build.finished.failed, ping, ..."""
    return sorted(p.stem for p in PAYLOADS.glob("*.json"))


def payload(name: str) -> dict[str, Any]:
    return dict(json.loads((PAYLOADS / f"{name}.json").read_text()))


def payload_bytes(name: str) -> bytes:
    return (PAYLOADS / f"{name}.json").read_bytes()


def mcncl(name: str) -> tuple[bytes, dict[str, str]]:
    """(data, attributes) as mcncl/buildkite-pubsub publishes them."""
    sample = json.loads((FIXTURES / "pubsub" / f"mcncl.{name}.json").read_text())
    return sample["data"].encode(), dict(sample["attributes"])


def message(body: Mapping[str, Any]) -> tuple[bytes, dict[str, str]]:
    """What the ingress publishes for ``body``."""
    return to_message(body, str(body.get("event")))


def envelope(
    data: bytes | Mapping[str, Any],
    attributes: Mapping[str, str] | None = None,
    *,
    message_id: str = "1000",
    publish_time: str = "2025-06-12T03:40:00.000Z",
) -> dict[str, Any]:
    """A Pub/Sub push body. ``data`` may be a Buildkite body (then made into our message)."""
    if not isinstance(data, bytes):
        data, derived = message(data)
        attributes = derived if attributes is None else attributes
    return {
        "message": {
            "data": base64.b64encode(data).decode(),
            "attributes": dict(attributes or {}),
            "messageId": message_id,
            "publishTime": publish_time,
        },
        "subscription": "projects/buildkite-fanout-test/subscriptions/test",
    }


def cloud_event(push: Mapping[str, Any]) -> Any:
    """The CloudEvent Eventarc (and functions-framework, for a raw push) delivers."""
    from cloudevents.http import CloudEvent

    attributes = {
        "id": push["message"].get("messageId", "1000"),
        "source": "//pubsub.googleapis.com/projects/buildkite-fanout-test/topics/buildkite-events",
        "type": "google.cloud.pubsub.topic.v1.messagePublished",
        "specversion": "1.0",
        "time": push["message"].get("publishTime"),
    }
    return CloudEvent(attributes, dict(push))


def deliver_to(entry: Any, body: Mapping[str, Any] | str, message_id: str = "1000") -> None:
    """Push a payload fixture (by name) or a Buildkite body to a function's entry point, as Pub/Sub would."""
    entry(cloud_event(envelope(payload(body) if isinstance(body, str) else body, message_id=message_id)))


def load_function(name: str) -> ModuleType:
    """Import ``functions/<name>/main.py`` under a unique module name (its helpers under their own)."""
    module_name = f"fn_{name.replace('-', '_')}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    folder = str(ROOT / "functions" / name)
    if folder not in sys.path:
        sys.path.append(folder)  # as functions-framework does: helper modules beside main.py import
    spec = importlib.util.spec_from_file_location(module_name, ROOT / "functions" / name / "main.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def off_the_wire(value: Any) -> Any:
    """What a parsed message holds for ``value``: lone surrogates (valid JSON, invalid UTF-8) become U+FFFD."""
    if isinstance(value, str):
        return value.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
    if isinstance(value, dict):
        return {off_the_wire(k): off_the_wire(v) for k, v in value.items()}
    if isinstance(value, list):
        return [off_the_wire(v) for v in value]
    return value


def log_lines(captured: str) -> list[dict[str, Any]]:
    """The structured JSON log lines in captured stdout."""
    lines = []
    for raw in captured.splitlines():
        if raw.startswith("{"):
            try:
                lines.append(json.loads(raw))
            except ValueError:
                continue
    return lines


def outcomes(capsys: pytest.CaptureFixture[str]) -> list[str]:
    """The ``outcome`` of every delivery logged since the last call."""
    return [line["outcome"] for line in log_lines(capsys.readouterr().out) if "outcome" in line]


def each_payload() -> Iterator[Any]:
    """pytest params over every fixture payload, with readable ids."""
    for name in payload_names():
        yield pytest.param(name, id=name)


@contextlib.contextmanager
def unreachable_endpoint(kind: str) -> Iterator[str]:
    """``host:port`` where nothing answers: "closed-port" (connections refused) or
    "silent-server" (connections accepted, never answered, as by a hung service)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    port = listener.getsockname()[1]
    held: list[socket.socket] = []
    stop = threading.Event()
    if kind == "closed-port":
        listener.close()
    else:
        listener.listen()
        listener.settimeout(0.2)

        def accept() -> None:
            while not stop.is_set():
                with contextlib.suppress(OSError):
                    held.append(listener.accept()[0])  # keep it open, say nothing

        threading.Thread(target=accept, daemon=True).start()
    try:
        yield f"127.0.0.1:{port}"
    finally:
        stop.set()
        for connection in [*held, listener]:
            connection.close()


def firestore_calls(monkeypatch: pytest.MonkeyPatch, *, counts: Counter[str] | None = None) -> list[str]:
    """Every call our state client makes to Firestore (``batchGet``, ``commit``), in order; with
    ``counts``, also tallied there as ``reads`` and ``writes``."""
    from buildkite_events import firestore

    calls: list[str] = []
    real = firestore.Client.call

    def call(self: firestore.Client, verb: str, *args: Any, **kwargs: Any) -> Any:
        calls.append(verb)
        if counts is not None:
            counts["reads" if verb == "batchGet" else "writes"] += 1
        return real(self, verb, *args, **kwargs)

    monkeypatch.setattr(firestore.Client, "call", call)
    return calls


def count_firestore(monkeypatch: pytest.MonkeyPatch) -> Counter[str]:
    """Firestore reads and writes from now on (a function with records only: the build and branch records)."""
    counts: Counter[str] = Counter()
    firestore_calls(monkeypatch, counts=counts)
    return counts


def fresh_first_delivery(function: str, event: str, modules: set[str]) -> tuple[str, set[str]]:
    """A new instance's import of ``function`` and its first delivery of the fixture ``event``, in
    a fresh interpreter: what it printed, and which of ``modules`` it had imported by the end."""
    import subprocess

    code = (
        "import json, sys, runpy, os\n"
        "sys.path.append(os.path.dirname(sys.argv[1]))  # as functions-framework does\n"
        "fn = runpy.run_path(sys.argv[1])\n"
        "from tests.support import cloud_event, envelope, payload\n"
        "fn[sys.argv[2]](cloud_event(envelope(payload(sys.argv[3]))))\n"
        "print(json.dumps(sorted(set(json.loads(sys.argv[4])) & set(sys.modules))))\n"
    )
    folder = ROOT / "functions" / function
    entry_point = load_manifest(folder / "function.yaml").entry_point
    argv = [sys.executable, "-c", code, str(folder / "main.py"), entry_point, event, json.dumps(sorted(modules))]
    result = subprocess.run(argv, cwd=ROOT, capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr[-2000:]
    return result.stdout, set(json.loads(result.stdout.splitlines()[-1]))
