"""Headless Chromium for render tests: Debian's `chromium`, installed with apt if missing (root only)."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

FLAGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--hide-scrollbars",
    "--virtual-time-budget=5000",
]


def find_chromium(install: bool = True) -> str | None:
    """The Chromium binary; without one, `apt-get install -y chromium` when running as root."""
    for name in ("chromium", "chromium-browser"):
        path = shutil.which(name)
        if path:
            return path
    if install and hasattr(os, "geteuid") and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-q", "chromium"], env=env, capture_output=True, timeout=900)
        return find_chromium(install=False)
    return None


def _run(binary: str, args: list[str], timeout_s: float = 120.0) -> subprocess.CompletedProcess[bytes]:
    with tempfile.TemporaryDirectory(prefix="chromium-profile-") as profile:
        return subprocess.run(
            [binary, *FLAGS, f"--user-data-dir={profile}", *args],
            capture_output=True,
            timeout=timeout_s,
            check=False,
        )


def screenshot(binary: str, page: Path, out: Path, width: int = 1280, height: int = 1400) -> Path:
    """A PNG of `page` as the browser renders it (scripts run, no network)."""
    _run(binary, [f"--window-size={width},{height}", f"--screenshot={out}", page.resolve().as_uri()])
    return out


def dump_dom(binary: str, page: Path) -> str:
    """The page's DOM after its scripts ran."""
    return _run(binary, ["--dump-dom", page.resolve().as_uri()]).stdout.decode("utf-8", errors="replace")
