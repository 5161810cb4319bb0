"""`backfill up` keeps a whole stack running that other terminals use with no settings typed."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import psutil
import pymongo
import pytest
import requests

from backfill_engine.settings import DEFAULT_MONGO_DB
from orchestrator.stack_state import STATE_FILE

pytestmark = pytest.mark.e2e
READY_TIMEOUT = 120.0


def _bare_env(data_dir: Path) -> dict[str, str]:
    """The environment of a fresh terminal: no server settings, only the data directory."""
    env = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("MONGO_", "REDIS_", "CATALOG_", "BACKFILL_", "FLOWER_"))
    }
    return {**env, "BACKFILL_DATA_DIR": str(data_dir)}


def _wait_for_line(proc: subprocess.Popen[str], marker: str) -> list[str]:
    assert proc.stdout is not None
    lines: list[str] = []
    deadline = time.monotonic() + READY_TIMEOUT
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            raise AssertionError(f"`up` exited {proc.wait()}: {''.join(lines)}")
        lines.append(line)
        if line.startswith(marker):
            return lines
    raise AssertionError(f"`up` not ready within {READY_TIMEOUT}s: {''.join(lines)}")


def test_up_serves_a_run_from_another_terminal_and_stops_every_child(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    queue = f"test-up-{uuid.uuid4().hex[:8]}"  # never the default queue of a real stack
    up_env = {**_bare_env(data_dir), "BACKFILL_QUEUE": queue}
    up = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "up", "--workers", "1", "--seed", "700"],
        env=up_env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    children: dict[int, psutil.Process] = {}
    try:
        banner = "".join(_wait_for_line(up, "ready"))
        children = {
            p.pid: p for c in psutil.Process(up.pid).children() for p in [c, *c.children(True)]
        }
        assert len(children) >= 4, banner  # mongo, catalog, flower, worker (+ its pool)
        state = json.loads((data_dir / STATE_FILE).read_text())
        assert state["queue"] == queue and state["pid"] == up.pid
        # Credentials are named by file, never printed.
        password = (data_dir / "flower.auth").read_text().strip().split(":", 1)[1]
        assert password not in banner and str(data_dir / "flower.auth") in banner
        flower = requests.get(state["flower_url"], timeout=10)
        assert flower.status_code == 401  # Flower is behind basic auth

        # Another terminal: no MONGO_URL, REDIS_URL, CATALOG_URL or BACKFILL_QUEUE.
        run = subprocess.run(
            [sys.executable, "-m", "orchestrator.cli", "run", "catalog", "--wait", "--json"],
            env=_bare_env(data_dir),
            capture_output=True,
            text=True,
            timeout=240,
        )
        assert run.returncode == 0, run.stderr
        done = json.loads(run.stdout)
        assert done["job"]["status"] == "completed"
        assert done["items"]["written"] == 700
        with pymongo.MongoClient(state["mongo_url"]) as client:
            assert (
                client[DEFAULT_MONGO_DB].products.count_documents({"brand": {"$exists": True}})
                == 700
            )

        up.send_signal(signal.SIGINT)
        try:
            out, _ = up.communicate(timeout=60)
        except subprocess.TimeoutExpired:
            up.kill()
            out, _ = up.communicate()
            raise AssertionError(f"up ran on 60 s after SIGINT: {out[-1500:]}") from None
        assert up.returncode == 0, out
        assert "Traceback" not in out and "stopped" in out
    finally:
        if up.poll() is None:
            up.kill()
            up.wait()
            # Its children live in their own sessions: a failed test must not leave them
            # loading the rest of the suite.
            for child in children.values():
                with contextlib.suppress(psutil.Error):
                    child.kill()
    _gone, alive = psutil.wait_procs(list(children.values()), timeout=30)
    assert not alive, f"left running: {[p.pid for p in alive]}"
    assert not (data_dir / STATE_FILE).exists()  # later commands no longer point at it


def test_a_second_up_on_the_same_data_dir_is_refused_in_one_line(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    # A live writer (this test's own process) owns the state file.
    (data_dir / STATE_FILE).write_text(
        json.dumps(
            {
                "pid": os.getpid(),
                "mongo_url": "mongodb://127.0.0.1:1/?directConnection=true",
                "redis_url": "redis://127.0.0.1:1/0",
                "source_urls": {"CATALOG_URL": "http://127.0.0.1:1"},
                "queue": "nobody",
            }
        )
    )
    second = subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", "up", "--workers", "0"],
        env=_bare_env(data_dir),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 1
    assert (
        second.stderr.startswith("error: a stack is already up")
        and "Traceback" not in second.stderr
    )
    assert len(second.stderr.strip().splitlines()) == 1
