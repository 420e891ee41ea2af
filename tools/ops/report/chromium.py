"""Headless Chromium (Debian's ``chromium``): render the report page, dump its DOM, take a screenshot.

Started with a fresh profile and everything that would reach the network turned off, in its
own process group so a hung renderer is killed with it.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import subprocess
import tempfile
from pathlib import Path

FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
)


def find() -> str | None:
    """The chromium binary: $CHROMIUM, else ``chromium`` on PATH, else None."""
    return os.environ.get("CHROMIUM") or shutil.which("chromium") or shutil.which("chromium-browser")


def run(page: Path, *extra: str, width: int = 420, height: int = 2000, timeout: float = 120.0) -> str:
    """Load ``page`` with ``extra`` flags (e.g. --dump-dom, --screenshot=PATH); return stdout."""
    binary = find()
    if not binary:
        raise FileNotFoundError("chromium is not installed (Debian: apt-get install chromium)")
    with tempfile.TemporaryDirectory(prefix="report-chromium-") as profile:
        argv = [binary, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", *extra]
        process = subprocess.Popen(
            [*argv, page.resolve().as_uri()],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            cwd=profile,
            start_new_session=True,
            text=True,
        )
        try:
            out, _ = process.communicate(timeout=timeout)
        finally:
            _kill_group(process.pid)  # its helper processes may outlive it
            process.wait()
    if process.returncode:
        raise RuntimeError(f"chromium exited with status {process.returncode}")
    return out


def dom(page: Path, **size: int) -> str:
    """The page's DOM after Chromium has laid it out."""
    return run(page, "--dump-dom", **size)


def screenshot(page: Path, png: Path, *, colours: int | None = None, **size: int) -> Path:
    """A PNG of the page's first screen; ``colours``: reduce to a palette, for a small file."""
    png.parent.mkdir(parents=True, exist_ok=True)
    run(page, f"--screenshot={png.resolve()}", **size)
    if not png.exists():
        raise RuntimeError("chromium wrote no screenshot")
    if colours:
        from PIL import Image

        with Image.open(png) as image:
            small = image.convert("RGB").quantize(colours)
        small.save(png, optimize=True)
    return png


def _kill_group(pgid: int) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
