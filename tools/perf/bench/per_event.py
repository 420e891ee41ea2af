"""Per-event cost of our plumbing around a no-op handler, two ways, each beside a bare baseline.

- served: one Pub/Sub push through functions-framework's WSGI app, as Cloud Run hands it
  over (Flask, the CloudEvent conversion, our handler, its log line), vs a bare
  functions-framework function that decodes the same message (``base64`` + ``json.loads``);
  what a delivery costs in CPU before the integration's own work, without the socket;
- plumbing alone: our handler called in process vs ``base64`` + ``json.loads`` of the same
  message, the strictest view: what parse with its input checks, filter, event key, trace
  ids, budget and the one JSON log line add to the decode every function must do.

Firestore is left out (the manifest's state is emptied): it is network I/O, timed by the
cold starts and ``state.py``. Rounds alternate ours and bare, so a busy moment slows both
alike; the minimum of the rounds is the cost.
"""

from __future__ import annotations

import base64
import contextlib
import dataclasses
import io
import json
import tempfile
import textwrap
import timeit
from collections.abc import Callable
from pathlib import Path
from typing import Any

from buildkite_events.handler import pubsub_handler
from buildkite_events.manifest import SHIPPED_NAME, Manifest, read_yaml
from buildkite_events.parse import parse_delivery
from tools import environ

BARE = Path(__file__).resolve().parent / "bare"
ROUNDS = 15

# Our plumbing as a function of its own: BENCH_MANIFEST is a function's manifest, its state emptied.
_PLUMBING = """
import os
from pathlib import Path

import functions_framework
from buildkite_events.handler import pubsub_handler


@functions_framework.cloud_event
@pubsub_handler(manifest=Path(os.environ["BENCH_MANIFEST"]))
def noop(event, config):
    return None
"""


def push_for(data: bytes, attributes: dict[str, str]) -> dict[str, Any]:
    message = {"data": base64.b64encode(data).decode(), "attributes": attributes, "messageId": "1"}
    message["publishTime"] = "2026-01-01T00:00:00.000Z"
    return {"message": message, "subscription": "projects/p/subscriptions/bench"}


def in_process(m: Manifest, data: bytes, attributes: dict[str, str], number: int = 1000) -> tuple[float, float]:
    """Seconds per event: our handler around a no-op, and bare base64 + json.loads."""
    push = push_for(data, attributes)
    encoded = push["message"]["data"]
    entry = pubsub_handler(manifest=m.path)(lambda event, config: None)
    entry.instance._manifest = dataclasses.replace(entry.instance.manifest, state=frozenset())  # type: ignore[attr-defined]
    assert parse_delivery(push).event_type  # the message really parses
    return _alternate(lambda: entry(push), lambda: json.loads(base64.b64decode(encoded)), number)


def served(m: Manifest, data: bytes, attributes: dict[str, str], number: int = 300) -> tuple[float, float]:
    """Seconds per push request through functions-framework: our no-op function vs the bare one."""
    import functions_framework

    body = json.dumps(push_for(data, attributes)).encode()
    with tempfile.TemporaryDirectory() as tmp, environ({"BENCH_MANIFEST": str(_stateless(m, Path(tmp)))}):
        source = Path(tmp) / "main.py"
        source.write_text(textwrap.dedent(_PLUMBING))
        ours, bare = (
            functions_framework.create_app(target=target, source=str(path), signature_type="cloudevent")
            for target, path in (("noop", source), ("decode", BARE / "main.py"))
        )
        return _alternate(_caller(ours, body), _caller(bare, body), number)


def _stateless(m: Manifest, folder: Path) -> Path:
    """The function's manifest without state (no Firestore), as a ``function.json`` the handler reads."""
    assert m.path is not None, "a manifest read from a file"
    path = folder / m.name / "function.yaml"
    path.parent.mkdir()
    raw = {**read_yaml(m.path), "state": []}
    path.with_name(SHIPPED_NAME).write_text(json.dumps(raw))
    return path


def _caller(app: Any, body: bytes) -> Callable[[], None]:
    """One POST of ``body`` into the WSGI ``app``, as a server would make it, checked to be a 2xx."""
    from werkzeug.test import EnvironBuilder

    request_environ = EnvironBuilder(method="POST", path="/", data=body, content_type="application/json").get_environ()
    statuses: list[str] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> None:
        statuses.append(status)

    def call() -> None:
        answer = app({**request_environ, "wsgi.input": io.BytesIO(body)}, start_response)
        try:
            b"".join(answer)
        finally:
            getattr(answer, "close", lambda: None)()
        if not statuses.pop().startswith("2"):
            raise RuntimeError("the benchmarked function did not answer 2xx")

    return call


def _alternate(ours: Callable[[], Any], bare: Callable[[], Any], number: int) -> tuple[float, float]:
    with contextlib.redirect_stdout(io.StringIO()) as logged:  # our log lines
        ours(), bare()  # warm: manifest, filter, config, routes
    if '"outcome": "done"' not in logged.getvalue():  # not filtered or refused: the whole path ran
        raise RuntimeError(f"the benchmarked handler did not run to the end:\n{logged.getvalue()[-2000:]}")
    with contextlib.redirect_stdout(io.StringIO()):
        times: dict[str, list[float]] = {"ours": [], "bare": []}
        for _ in range(ROUNDS):
            times["ours"].append(timeit.timeit(ours, number=number) / number)
            times["bare"].append(timeit.timeit(bare, number=number) / number)
    return min(times["ours"]), min(times["bare"])
