"""A local HTTP server that answers like the third-party APIs (Slack, Teams, GitHub, Jira).

Functions reach it through the manifests' ``local_env`` (``${standin}`` is its base URL),
with their real client libraries. It records every request so tests and ``make demo``
can show what the real service would have received, and it can be told to fail
(status, ``Retry-After``, delay) for the next N requests on a route.

Providers live in ``tools/local/standins/<provider>.py``, each exposing ``register(server)`` and
optionally ``report(server) -> (title, lines)`` for ``make demo``; adding a provider is
adding a file.
"""

from __future__ import annotations

import importlib
import json
import pkgutil
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, TypeVar

T = TypeVar("T")

Responder = Callable[["Recorded"], "Reply"]


@dataclass
class Recorded:
    method: str
    path: str
    query: str
    headers: dict[str, str]
    body: bytes

    @property
    def json(self) -> Any:
        try:
            return json.loads(self.body or b"null")
        except ValueError:
            return None


@dataclass
class Reply:
    status: int = 200
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class Fault:
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    body: Any = None
    remaining: int = 1


class StandIn:
    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.routes: list[tuple[str, re.Pattern[str], Responder]] = []
        self.requests: list[Recorded] = []
        self.faults: list[tuple[re.Pattern[str], Fault]] = []
        self.lock = threading.Lock()
        self.state: dict[str, Any] = {}  # providers keep their fake data here
        self._server = ThreadingHTTPServer((host, port), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None
        self._reporters: list[Callable[[StandIn], tuple[str, list[str]]]] = []

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def route(self, method: str, pattern: str, responder: Responder) -> None:
        self.routes.append((method.upper(), re.compile(pattern), responder))

    def fail(self, pattern: str, fault: Fault) -> None:
        """Answer the next ``fault.remaining`` requests whose path matches ``pattern`` with ``fault``."""
        with self.lock:
            self.faults.append((re.compile(pattern), fault))

    def recorded(self, pattern: str = "", method: str | None = None) -> list[Recorded]:
        with self.lock:
            return [r for r in self.requests if re.search(pattern, r.path) and (method is None or r.method == method)]

    def reset(self) -> None:
        with self.lock:
            self.requests.clear()
            self.faults.clear()
            self.state.clear()

    def provider_state(self, key: str, kind: type[T], make: Callable[[], T]) -> T:
        """A provider's data on this server, made on first use (and again after ``reset()``)."""
        with self.lock:
            current = self.state.get(key)
            if current is None:
                current = self.state[key] = make()
            assert isinstance(current, kind)
            return current

    def load_providers(self) -> StandIn:
        """Register every provider module; those with ``report(server)`` join the demo report."""
        from tools.local import standins

        for info in pkgutil.iter_modules(standins.__path__):
            module = importlib.import_module(f"tools.local.standins.{info.name}")
            module.register(self)
            if hasattr(module, "report"):
                self._reporters.append(module.report)
        return self

    def reports(self) -> list[tuple[str, list[str]]]:
        """(title, lines) from each provider: what the real service would have received."""
        return [reporter(self) for reporter in self._reporters]

    def start(self) -> StandIn:
        self._thread = threading.Thread(target=self._server.serve_forever, name="standin", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> StandIn:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def _dispatch(self, request: Recorded) -> Reply:
        with self.lock:
            self.requests.append(request)
            fault = next((f for p, f in self.faults if p.search(request.path) and f.remaining > 0), None)
            if fault:
                fault.remaining -= 1
        if fault:
            time.sleep(fault.delay)
            headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after is not None else {}
            return Reply(fault.status, fault.body if fault.body is not None else {"error": "injected fault"}, headers)
        for method, pattern, responder in self.routes:
            if method == request.method and pattern.fullmatch(request.path):
                return responder(request)
        return Reply(404, {"error": f"no stand-in route for {request.method} {request.path}"})

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        standin = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            # Headers and body go out in two writes: without this, Nagle's algorithm meets the
            # client's delayed ACK and every keep-alive request waits ~40 ms.
            disable_nagle_algorithm = True

            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                path, _, query = self.path.partition("?")
                request = Recorded(self.command, path, query, dict(self.headers.items()), self.rfile.read(length))
                reply = standin._dispatch(request)
                body = reply.body if isinstance(reply.body, bytes) else json.dumps(reply.body).encode()
                self.send_response(reply.status)
                headers = {"Content-Type": "application/json", **reply.headers}
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass  # recorded instead

        return Handler
