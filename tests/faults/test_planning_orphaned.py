"""Issue 9 hole 10: a job left in `planning` by an interrupted planner still gets planned.

Ctrl-C (SIGINT) on `backfill run --wait` mid-planning, then `backfill run` again (no wait)
inside the dead planner's lease: it joins the job and leaves. Nobody waits on the job;
with only workers running (their sweepers on), planning must resume once the planner
lease lapses and the job must complete.
"""

from __future__ import annotations

import signal
import time

import pytest

from backfill_engine.states import METADATA
from tests.faults.cli import spawn_cli
from tests.faults.issue9 import job_doc, wait_unswept
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import System, seed_products

# Two minutes each (a planner lease must lapse): `make reliability` runs them, `make test` not.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]

PRODUCTS_N = 2000
BATCH = 10
PLANNER_LEASE_SECONDS = 30.0  # orchestrator/planner.py: how long a dead planner blocks others
PROGRESS_WITHIN_SECONDS = PLANNER_LEASE_SECONDS + 20.0


@pytest.mark.timeout(300)
def test_interrupted_planning_is_resumed_without_anyone_waiting(system: System) -> None:
    started = time.monotonic()
    ids = seed_products(system.db, PRODUCTS_N)
    system.start_workers(2)
    meta = system.db[METADATA]
    logs = system.log_dir
    size = str(BATCH)

    first = spawn_cli(system, "run", "catalog", "--batch-size", size, "--wait", log=logs / "r1.log")

    def planning_midway() -> bool:
        job = meta.find_one({"kind": "job"})
        return bool(job and job["planning"]["batches"] >= 5 and not job["planning"]["done"])

    system.wait_until(planning_midway, timeout=120, what="planning under way")
    first.send_signal(signal.SIGINT)  # Ctrl-C
    first.wait(timeout=30)
    job = meta.find_one({"kind": "job"})
    assert job and not job["planning"]["done"], "planning finished before the Ctrl-C"
    job_id = str(job["_id"])
    planned_at_interrupt = int(job["planning"]["batches"])

    second = spawn_cli(system, "run", "catalog", "--batch-size", size, log=logs / "r2.log")
    assert second.wait(timeout=60) == 0, (logs / "r2.log").read_text()[-2000:]
    said = (logs / "r2.log").read_text()
    assert "joined" in said, said
    assert not job_doc(system, job_id)["planning"]["done"], "the second run planned it all"

    # Only workers are left. The dead planner's lease lapses; someone must plan on.
    deadline = time.monotonic() + PROGRESS_WITHIN_SECONDS
    while job_doc(system, job_id)["planning"]["batches"] <= planned_at_interrupt:
        job = job_doc(system, job_id)
        assert time.monotonic() < deadline, (
            f"job {job_id} still {job['status']} with {job['planning']['batches']} of "
            f"{PRODUCTS_N // BATCH} batches planned {PROGRESS_WITHIN_SECONDS:g} s after the "
            "interrupt: nobody resumes planning unless someone waits"
        )
        time.sleep(0.5)
    wait_unswept(system, job_id, timeout=180, why="planning resumed by the workers")
    rec = reconcile(system, job_id, ids)
    record(
        "i9-10",
        title="planner interrupted, nobody waiting",
        fault="Ctrl-C on `backfill run --wait` mid-planning, then `backfill run` (no wait) "
        "joins and leaves",
        how=f"{PRODUCTS_N} products in batches of {BATCH}; SIGINT after "
        f"{planned_at_interrupt} batches planned; 2 workers with their sweepers, no "
        "orchestrator",
        outcome="planning resumed after the planner lease lapsed; job completed",
        rec=rec,
        seconds=time.monotonic() - started,
    )
