"""The operator's path through the `backfill` CLI against a real system."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import pytest

from migrations.versions._catalog import PRODUCTS
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def backfill(system: System, *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, **system.settings.to_env(), "COLUMNS": "200"}
    return subprocess.run(
        [sys.executable, "-m", "orchestrator.cli", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


def as_json(result: subprocess.CompletedProcess[str]) -> Any:
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_dry_run_run_status_jobs_verify(system: System) -> None:
    seed_products(system.db, 700)
    dry = as_json(backfill(system, "run", "catalog", "--dry-run", "--sample", "150", "--json"))
    assert dry["sampled"] == 150 and dry["changed"] == 150 and dry["unchanged"] == 0
    assert system.db[PRODUCTS].count_documents({"brand": {"$exists": True}}) == 0  # wrote nothing

    system.start_workers(2)
    done = as_json(backfill(system, "run", "catalog", "--wait", "--json", "--batch-size", "100"))
    job_id = done["job"]["_id"]
    assert done["job"]["status"] == "completed"
    assert done["items"]["written"] == 700 and done["batches"]["done"] == 7

    listed = as_json(backfill(system, "jobs", "--json"))
    assert [j["_id"] for j in listed] == [job_id]
    status = as_json(backfill(system, "status", job_id, "--json"))
    assert status["items"]["processed"] == 700 and status["quarantined"] == 0
    human = backfill(system, "status", job_id)
    assert human.returncode == 0 and "completed" in human.stdout and "written 700" in human.stdout

    verified = as_json(backfill(system, "verify", job_id, "--json"))
    assert verified["ok"] is True and verified["documents_checked"] == 700

    # A second run is a new job that writes nothing.
    again = as_json(backfill(system, "run", "catalog", "--wait", "--json"))
    assert again["job"]["_id"] != job_id and again["items"]["written"] == 0


def test_pause_and_resume_through_the_cli(system: System) -> None:
    # Slow enough (10 batches x 300 ms, one at a time) that `pause` lands mid-job.
    system.start_catalog("--latency-ms", "300")
    seed_products(system.db, 1000)
    system.start_workers(1, concurrency=1)
    started = as_json(
        backfill(system, "run", "catalog", "--json", "--batch-size", "100", "--max-in-flight", "1")
    )
    job_id = started["job_id"]
    paused = backfill(system, "pause", job_id)
    assert paused.returncode == 0 and "paused" in paused.stdout
    assert as_json(backfill(system, "status", job_id, "--json"))["job"]["status"] == "paused"
    again = backfill(system, "pause", job_id)
    assert again.returncode == 1 and again.stderr.startswith("error: cannot pause job")
    resumed = backfill(system, "resume", job_id, "--wait")
    assert resumed.returncode == 0, resumed.stderr
    final = as_json(backfill(system, "status", job_id, "--json"))
    assert final["job"]["status"] == "completed" and final["items"]["processed"] == 1000
