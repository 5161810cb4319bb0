"""Headless Chromium for tests: found on PATH, or installed with apt when we are root."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

NAMES = ("chromium", "chromium-browser", "google-chrome")
APT_TIMEOUT_SECONDS = 900
RUN_TIMEOUT_SECONDS = 90
# Chromium runs the page's scripts (Flower loads its rows via AJAX) for this long, in
# virtual time: it ends as soon as the page is idle, so no test waits this long for real.
VIRTUAL_TIME_BUDGET_MS = 15_000


def find() -> str | None:
    for name in NAMES:
        path = shutil.which(name)
        if path:
            return path
    return None


def ensure() -> tuple[str | None, str]:
    """The Chromium binary, installing Debian's `chromium` if missing and we can; else a reason."""
    found = find()
    if found:
        return found, ""
    if os.geteuid() != 0 or shutil.which("apt-get") is None:
        return None, "chromium is not installed and this is not root with apt-get to install it"
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    for argv in (["apt-get", "update", "-q"], ["apt-get", "install", "-y", "-q", "chromium"]):
        done = subprocess.run(
            argv, env=env, capture_output=True, text=True, timeout=APT_TIMEOUT_SECONDS, check=False
        )
        if done.returncode != 0:
            tail = (done.stderr or done.stdout).strip().splitlines()[-1:] or ["?"]
            return None, f"`{' '.join(argv)}` failed: {tail[0]}"
    found = find()
    return found, "" if found else "apt-get installed chromium but no binary is on PATH"


def _argv(binary: str) -> list[str]:
    return [
        binary,
        "--headless",
        "--no-sandbox",  # root in a container has no user namespace for the sandbox
        "--disable-gpu",
        "--disable-dev-shm-usage",
        "--hide-scrollbars",
        f"--virtual-time-budget={VIRTUAL_TIME_BUDGET_MS}",
    ]


def dump_dom(binary: str, url: str, profile: Path) -> str:
    """The page's DOM after its scripts ran (`--dump-dom`)."""
    argv = [*_argv(binary), f"--user-data-dir={profile}", "--dump-dom", url]
    done = subprocess.run(
        argv, capture_output=True, text=True, timeout=RUN_TIMEOUT_SECONDS, check=False
    )
    if done.returncode != 0:
        raise AssertionError(f"chromium exited {done.returncode}: {done.stderr.strip()[-300:]}")
    return done.stdout


def screenshot(binary: str, url: str, profile: Path, out: Path, size: str = "1400,900") -> None:
    """A PNG of the page after its scripts ran."""
    argv = [*_argv(binary), f"--user-data-dir={profile}", f"--window-size={size}"]
    argv += [f"--screenshot={out}", url]
    subprocess.run(argv, capture_output=True, timeout=RUN_TIMEOUT_SECONDS, check=True)
