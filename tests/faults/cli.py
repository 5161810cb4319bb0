"""Run the real `backfill` CLI as a subprocess against a test System."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from tests.harness import System

ROOT = Path(__file__).resolve().parents[2]


def cli_env(system: System, **extra: str) -> dict[str, str]:
    """The environment an operator would have: settings, server URLs and token."""
    base = {k: v for k, v in os.environ.items() if not k.startswith(("BACKFILL_", "MONGO_"))}
    return {**base, **system.settings.to_env(), **extra}


def spawn_cli(system: System, *args: str, log: Path) -> subprocess.Popen[str]:
    """Start `python -m orchestrator.cli ARGS` with its output going to `log`."""
    log.parent.mkdir(parents=True, exist_ok=True)
    out = open(log, "w")  # noqa: SIM115 - handed to the child; closed when the test ends
    return subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", *args],
        env=cli_env(system),
        stdout=out,
        stderr=subprocess.STDOUT,
        text=True,
        cwd=ROOT,
    )
