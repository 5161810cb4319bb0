"""The embedded stack: data-dir locks, reuse, and no orphaned children after Ctrl-C or SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import psutil
import pytest

from backfill_engine.settings import Settings
from orchestrator.errors import StackError
from orchestrator.stack import (
    EMBEDDED_READ_IDS,
    Stack,
    running_embedded_mongo,
    start_mongo,
    tuned_for_embedded,
)


def test_live_data_dir_is_refused_and_a_killed_runs_lock_is_cleared(tmp_path: Path) -> None:
    data = tmp_path / "mongo"
    first, note = start_mongo(data, log_dir=tmp_path)
    try:
        assert note is None
        assert running_embedded_mongo(data) == first.url  # a second command shares it
        with pytest.raises(StackError, match="in use by another stack"):
            start_mongo(data, log_dir=tmp_path)
        first.popen.kill()  # SIGKILL: the pidfile stays behind
        first.popen.wait()
        assert (tmp_path / "mongo.pid").exists()
        second, note = start_mongo(data, log_dir=tmp_path)
        try:
            assert note and "stale lock" in note
        finally:
            second.stop()
    finally:
        first.stop()


def _descendants(pid: int) -> dict[int, psutil.Process]:
    """Every live descendant of `pid` now; one that exits while the tree is walked is skipped."""
    try:
        found = psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return {}
    return {p.pid: p for p in found if p.is_running()}


@pytest.mark.parametrize("sig", [signal.SIGINT, signal.SIGTERM])
def test_interrupted_demo_stops_every_child(tmp_path: Path, sig: signal.Signals) -> None:
    env = {**os.environ, "BACKFILL_DATA_DIR": str(tmp_path / "data")}
    for name in ("MONGO_URL", "CATALOG_URL"):
        env.pop(name, None)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "orchestrator.cli",
            "demo",
            "--seed",
            "3000",
            "--workers",
            "1",
            "--no-flower",
            "--latency-ms",
            "200",
        ],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    # The union of every snapshot: a short-lived child (a probe) may come and go between them.
    tracked: dict[int, psutil.Process] = {}
    running: dict[int, psutil.Process] = {}
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(running) < 3:  # mongo, catalog, worker
        time.sleep(0.5)
        running = _descendants(proc.pid)
        tracked.update(running)
    assert len(running) >= 3, "demo did not start its servers"
    time.sleep(2)
    tracked.update(_descendants(proc.pid))
    proc.send_signal(sig)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode != 0, f"the demo ran on after {sig.name}: {err[-1500:]}"
    assert "Traceback" not in err
    _gone, alive = psutil.wait_procs(list(tracked.values()), timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"


def test_the_embedded_server_reads_in_short_in_lists_unless_told_otherwise(stack: Stack) -> None:
    # The session's servers came from ensure_servers with BACKFILL_READ_IDS unset.
    assert Settings.from_env({}).read_ids == 0
    assert stack.settings.read_ids == EMBEDDED_READ_IDS
    told = replace(stack.settings, read_ids=7)
    assert tuned_for_embedded(told).read_ids == 7
