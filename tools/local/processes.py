"""Processes on loopback, each in its own process group: free ports, readiness probes, and
stopping a whole group (wrappers such as the Firestore script or functions-framework's
gunicorn leave the real server in a child). An atexit hook stops whatever a crashed caller
left running."""

from __future__ import annotations

import atexit
import contextlib
import os
import signal
import socket
import subprocess
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

# The emulators are always on loopback; a proxy configured in the environment
# (HTTP_PROXY without a NO_PROXY for 127.0.0.1) must not swallow the readiness checks.
opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

# Process groups still alive, so the atexit hook can clean up after a crashed caller.
_live_groups: dict[int, str] = {}
_live_lock = threading.Lock()
# Ports handed out by free_port in this process: the kernel may hand the same
# ephemeral port to two quick bind(0) calls once the first socket is closed.
_issued_ports: set[int] = set()


def remember(pgid: int, name: str) -> None:
    """A group the atexit hook stops if nobody else does."""
    with _live_lock:
        _live_groups[pgid] = name


def forget(pgid: int) -> None:
    with _live_lock:
        _live_groups.pop(pgid, None)


def free_port() -> int:
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
            sock.bind(("127.0.0.1", 0))
            port: int = sock.getsockname()[1]
        if port not in _issued_ports:
            _issued_ports.add(port)
            return port
    raise OSError("no free TCP port found on 127.0.0.1")


# --- readiness probes --------------------------------------------------------------


def http_get(url: str, timeout: float = 1.0) -> tuple[int, bytes] | None:
    """Status and body, or None when nothing answers yet. Any HTTP status counts as an answer."""
    try:
        with opener.open(url, timeout=timeout) as resp:
            return resp.status, resp.read()
    except urllib.error.HTTPError as err:
        return err.code, err.read()
    except (OSError, ValueError):
        return None


def answers(url: str, status: int = 200, body: bytes | None = None) -> Callable[[], bool]:
    def probe() -> bool:
        got = http_get(url)
        return got is not None and got[0] == status and (body is None or got[1].strip() == body)

    return probe


def accepts_tcp(port: int) -> Callable[[], bool]:
    def probe() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            return False

    return probe


# --- process groups ----------------------------------------------------------------


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) pids in a process group, read from /proc.

    ``killpg(pgid, 0)`` is not enough to tell whether a group is gone: it also
    succeeds for zombies that an init without a reaper leaves behind.
    """
    members: list[int] = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat_line = (entry / "stat").read_text()
        except OSError:
            continue
        # "pid (comm) state ppid pgrp ...": comm may contain spaces or parentheses.
        fields = stat_line[stat_line.rindex(")") + 2 :].split()
        if fields[0] not in ("Z", "X") and int(fields[2]) == pgid:
            members.append(int(entry.name))
    return members


def signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def wait_group_gone(pgid: int, deadline: float) -> bool:
    while group_members(pgid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True


def stop_group(pgid: int, process: subprocess.Popen[bytes] | None, grace: float) -> None:
    signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=max(0.0, deadline - time.monotonic()))
    # The leader may exit first while its children (Java, gunicorn workers) still run.
    if not wait_group_gone(pgid, deadline):
        signal_group(pgid, signal.SIGKILL)
        wait_group_gone(pgid, time.monotonic() + 5.0)
    if process is not None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=5.0)  # reap the leader so no zombie stays behind


@atexit.register
def _kill_leftovers() -> None:
    """Safety net: a caller that forgot stop() (or crashed) must not leak emulators."""
    with _live_lock:
        groups = list(_live_groups)
        _live_groups.clear()
    for pgid in groups:
        signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + 2.0
    for pgid in groups:
        if not wait_group_gone(pgid, deadline):
            signal_group(pgid, signal.SIGKILL)
