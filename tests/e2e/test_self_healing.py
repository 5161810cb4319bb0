"""Workers recover lost work on their own: no orchestrator is waiting or sweeping."""

from __future__ import annotations

import pytest

from backfill_engine.states import METADATA
from migrations.versions._catalog import PRODUCTS
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def test_fresh_workers_finish_a_job_whose_workers_were_killed(system: System) -> None:
    system.start_catalog("--latency-ms", "100")
    seed_products(system.db, 1500)
    system.start_workers(2, concurrency=1)
    job_id = system.launch(batch_size=500, max_in_flight=2)  # returns once planned; no wait
    meta = system.db[METADATA]
    system.wait_until(
        lambda: meta.count_documents(
            {"job_id": job_id, "status": "running", "processed": {"$gt": 0}}
        ),
        what="a batch with a checkpoint",
    )
    system.kill_workers()  # their leases stay behind; their messages are unacked in Redis
    system.start_workers(1, concurrency=2)

    def finished() -> bool:
        job = meta.find_one({"_id": job_id}, {"status": 1})
        return bool(job and job["status"] == "completed")

    # Only reads here: recovery must come from the workers' own sweeps.
    system.wait_until(finished, timeout=120, what="the workers to recover and finish the job")
    job = meta.find_one({"_id": job_id})
    assert job["times_interrupted"] >= 1
    items = system.summary(job_id).items
    # A sub-chunk written but not yet checkpointed when the workers died is redone as a
    # no-op, so it counts as unchanged: written + unchanged covers every product once.
    assert items["written"] + items["unchanged"] == 1500 and items["processed"] == 1500
    assert system.db[PRODUCTS].count_documents({"catalog_synced_at": {"$exists": True}}) == 1500
