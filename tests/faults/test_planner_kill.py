"""Scenario 3: the orchestrator is killed while planning; run again: nothing doubled or missed."""

from __future__ import annotations

import time

import pytest

from backfill_engine.states import METADATA
from tests.faults.cli import spawn_cli
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import System, seed_products

# Two minutes each (a planner lease must lapse): `make reliability` runs them, `make test` not.
pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_orchestrator_killed_while_planning_resumes_from_its_cursor(system: System) -> None:
    started = time.monotonic()
    ids = seed_products(system.db, 2000)
    system.start_workers(2)
    meta = system.db[METADATA]
    logs = system.log_dir

    first = spawn_cli(system, "run", "catalog", "--batch-size", "10", log=logs / "run-1.log")

    def planning_midway() -> bool:
        job = meta.find_one({"kind": "job"})
        return bool(job and job["planning"]["batches"] >= 5 and not job["planning"]["done"])

    system.wait_until(planning_midway, timeout=120, what="planning under way")
    first.kill()  # SIGKILL: no cleanup, the planner lease stays held until it expires
    first.wait()
    job = meta.find_one({"kind": "job"})
    assert job and not job["planning"]["done"], "planning finished before the kill"
    planned_before = meta.count_documents({"kind": "batch", "job_id": job["_id"]})
    assert planned_before < 200

    # Run it again: it joins the job and, once the dead planner's lease lapses, plans on.
    second = spawn_cli(
        system, "run", "catalog", "--batch-size", "10", "--wait", "--json", log=logs / "run-2.log"
    )
    assert second.wait(timeout=240) == 0, (logs / "run-2.log").read_text()[-2000:]
    assert meta.count_documents({"kind": "job"}) == 1

    rec = reconcile(system, str(job["_id"]), ids)
    assert rec.batches == 200 and rec.refetched == 0
    record(
        "3",
        title="orchestrator killed while planning",
        fault="`kill -9` the `backfill run` process mid-planning, then run it again",
        how=f"2000 products in batches of 10; SIGKILL after {planned_before} of 200 batches "
        "were planned; a second `backfill run --wait` joins the job and re-plans from the "
        "highest batch written once the dead planner's 30 s lease lapses",
        outcome=f"{planned_before} + {200 - planned_before} batches, none twice, no id missed",
        rec=rec,
        seconds=time.monotonic() - started,
    )
