"""A loopback HTTP proxy that forwards to one upstream and fails on request.

Put it between a function and whatever it calls (fake-gcs-server, bqemulator, the
third-party stand-in) to make that dependency misbehave the way real ones do, for the next
N requests whose path matches a pattern:

- ``status``: answer ``status`` (with ``Retry-After`` when given, and ``body`` when given:
  a 200 that is not the service's answer) without forwarding;
- ``timeout``: hold the request ``delay`` seconds, then close the connection unanswered
  (the client's own timeout fires first when it is shorter); nothing is forwarded;
- ``drop``: close the connection at once, unanswered; nothing is forwarded;
- ``slow``: wait ``delay`` seconds, then forward (the request does reach the upstream);
- ``lost``: forward, then close the connection unanswered (done upstream, the answer lost).

    with FaultProxy("http://127.0.0.1:4443") as proxy:
        proxy.fail(r"/upload/", "status", times=2, status=503)
        ... point STORAGE_EMULATOR_HOST at proxy.url ...
"""

from __future__ import annotations

import contextlib
import http.client
import re
import socket
import threading
import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

KINDS = ("status", "timeout", "drop", "slow", "lost")
_HOP_BY_HOP = {"connection", "keep-alive", "transfer-encoding", "te", "trailer", "upgrade", "proxy-connection"}


@dataclass
class ProxyFault:
    pattern: re.Pattern[str]
    kind: str
    remaining: int
    status: int = 500
    retry_after: float | None = None
    delay: float = 0.0
    method: str | None = None
    body: bytes | None = None


@dataclass
class Seen:
    method: str
    path: str
    fault: str | None  # the kind of fault injected, None when forwarded untouched
    status: int | None = None  # the upstream's answer, when forwarded


class FaultProxy:
    def __init__(self, upstream: str, host: str = "127.0.0.1") -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host, self.upstream_port = parts.hostname, parts.port
        self.upstream_prefix = parts.path.rstrip("/")
        self.faults: list[ProxyFault] = []
        self.seen: list[Seen] = []
        self.lock = threading.Lock()
        self._server = ThreadingHTTPServer((host, 0), self._handler_class())
        self._server.daemon_threads = True
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def host(self) -> str:
        return self.url.removeprefix("http://")

    def fail(
        self,
        pattern: str,
        kind: str = "status",
        *,
        times: int = 1,
        status: int = 500,
        retry_after: float | None = None,
        delay: float = 0.0,
        method: str | None = None,
        body: bytes | None = None,
    ) -> None:
        """The next ``times`` requests matching ``pattern`` (and ``method``) get this fault."""
        if kind not in KINDS:
            raise ValueError(f"kind must be one of {', '.join(KINDS)}")
        with self.lock:
            method = method and method.upper()
            self.faults.append(ProxyFault(re.compile(pattern), kind, times, status, retry_after, delay, method, body))

    def clear(self) -> None:
        with self.lock:
            self.faults.clear()

    def pending(self) -> int:
        """Faults still to be injected."""
        with self.lock:
            return sum(f.remaining for f in self.faults)

    def injected(self, pattern: str = "") -> list[Seen]:
        with self.lock:
            return [s for s in self.seen if s.fault and re.search(pattern, s.path)]

    def start(self) -> FaultProxy:
        self._thread = threading.Thread(target=self._server.serve_forever, name="fault-proxy", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def forwarded(self, pattern: str = "", method: str | None = None, ok: bool = True) -> list[Seen]:
        """Requests that reached the upstream (``ok``: and got a 2xx answer)."""
        with self.lock:
            return [
                s
                for s in self.seen
                if s.status is not None
                and re.search(pattern, s.path)
                and (method is None or s.method == method.upper())
                and (not ok or 200 <= s.status < 300)
            ]

    def _take(self, method: str, path: str) -> tuple[ProxyFault | None, Seen]:
        with self.lock:
            fault = next(
                (
                    f
                    for f in self.faults
                    if f.remaining > 0 and f.pattern.search(path) and (f.method is None or f.method == method)
                ),
                None,
            )
            if fault:
                fault.remaining -= 1
            seen = Seen(method, path, fault.kind if fault else None)
            self.seen.append(seen)
            return fault, seen

    def _forward(self, method: str, path: str, headers: dict[str, str], body: bytes) -> tuple[int, Any, bytes]:
        conn = http.client.HTTPConnection(self.upstream_host, self.upstream_port, timeout=120)
        try:
            headers = {k: v for k, v in headers.items() if k.lower() not in _HOP_BY_HOP and k.lower() != "host"}
            headers["Host"] = f"{self.upstream_host}:{self.upstream_port}"
            headers["Content-Length"] = str(len(body))
            conn.request(method, self.upstream_prefix + path, body=body, headers=headers)
            response = conn.getresponse()
            return response.status, response.getheaders(), response.read()
        finally:
            conn.close()

    def _handler_class(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"
            disable_nagle_algorithm = True

            def _body(self) -> bytes:
                if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                    chunks: list[bytes] = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length") or 0))

            def _hang_up(self) -> None:
                self.close_connection = True
                with contextlib.suppress(OSError):
                    self.connection.shutdown(socket.SHUT_RDWR)

            def _serve(self) -> None:
                body = self._body()
                fault, seen = proxy._take(self.command, self.path)
                if fault and fault.kind in ("timeout", "drop"):
                    if fault.kind == "timeout":
                        time.sleep(fault.delay)
                    self._hang_up()
                    return
                if fault and fault.kind == "status":
                    payload = fault.body
                    if payload is None:
                        payload = b'{"error": {"code": %d, "message": "injected fault"}}' % fault.status
                    self.send_response(fault.status)
                    self.send_header("Content-Type", "application/json")
                    if fault.retry_after is not None:
                        self.send_header("Retry-After", f"{fault.retry_after:g}")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    self.wfile.write(payload)
                    return
                if fault and fault.kind == "slow":
                    time.sleep(fault.delay)
                try:
                    status, headers, payload = proxy._forward(self.command, self.path, dict(self.headers), body)
                except OSError:
                    self.send_error(502, "upstream unreachable")
                    return
                with proxy.lock:
                    seen.status = status
                if fault and fault.kind == "lost":
                    self._hang_up()
                    return
                self.send_response(status)
                for name, value in headers:
                    if name.lower() not in _HOP_BY_HOP and name.lower() != "content-length":
                        self.send_header(name, value)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(payload)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        return Handler
