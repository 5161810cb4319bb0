"""A worker starts with what it has: a backfill whose API setting it lacks is left to others.

Before, a worker without CATALOG_URL refused to start at all (`backfill worker`), so a
team with no catalog could not run its own backfills on the example's workers.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from dataclasses import replace

import pytest
from rich.console import Console

from orchestrator.progress import summary_table
from orchestrator.stack import start_worker
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def test_a_worker_without_the_apis_url_leaves_its_batches_to_one_that_has_it(
    system: System, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CATALOG_URL", raising=False)
    bare = replace(system.settings, source_env={})
    lacking = start_worker(bare, log_dir=system.log_dir, name="worker-bare", concurrency=1)
    system.workers.append(lacking)
    seed_products(system.db, 30)
    job_id = system.launch(batch_size=10)
    system.wait_until(
        lambda: system.summary(job_id).job.get("workers_lacking_settings"),
        90,
        "the worker to say what it lacks",
    )
    assert lacking.alive(), "the worker must keep running its other backfills"
    batches = list(system.db.backfill_metadata.find({"job_id": job_id, "kind": "batch"}))
    assert batches and all(b["attempts"] == 0 and b["lease_owner"] is None for b in batches)
    console = Console(width=200, record=True)
    console.print(summary_table(system.summary(job_id)))
    text = console.export_text()
    assert "CATALOG_URL" in text and "lacking settings" in text
    assert "CATALOG_URL is not set" in (lacking.log_path.read_text() if lacking.log_path else "")
    # A worker with the setting takes the batches over.
    system.start_workers(1, concurrency=1)
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed" and summary.items["written"] == 30


def test_backfill_worker_starts_and_names_the_unset_setting(system: System) -> None:
    env = {**os.environ, **replace(system.settings, source_env={}).to_env()}
    env.pop("CATALOG_URL", None)
    proc = subprocess.Popen(
        [sys.executable, "-m", "orchestrator.cli", "worker", "--concurrency", "1"],
        env=env,
        stderr=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        text=True,
        start_new_session=True,
    )
    try:
        assert proc.stderr is not None
        first = proc.stderr.readline()
        assert first.startswith("warning: CATALOG_URL is not set"), first
        assert "'catalog'" in first
        assert proc.poll() is None, "the worker must start, not exit"
    finally:
        # SIGKILL: nothing reads its stderr any more, so a worker logging its way through a
        # warm shutdown could block on the full pipe.
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
