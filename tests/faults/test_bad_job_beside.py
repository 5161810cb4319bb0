"""A job that can never be planned, beside a worker killed mid-batch: the sweep goes on.

Before, each sweep pass raised on the job stuck in `planning` (a filter the server
rejects) before it reached the running job, so the dead worker's lease was never re-queued
and the running job hung until someone cancelled the bad one.
"""

from __future__ import annotations

import time

import pytest

from backfill_engine.notify import NOTIFICATIONS
from backfill_engine.planner import start_or_join
from backfill_engine.states import METADATA
from migrations.versions._catalog import PRODUCTS
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def test_a_job_that_cannot_be_planned_stops_no_workers_sweep(system: System) -> None:
    started = time.monotonic()
    system.start_catalog("--latency-ms", "150")
    # Created as the engine's API would, past the CLI's own check of the filter.
    bad, created = start_or_join(
        system.db,
        backfill="catalog",
        exclusive_key="catalog:slice:bad-filter",
        collection=PRODUCTS,
        batch_size=10,
        max_in_flight=1,
        rate_per_second=10,
        scope={"sku": {"$regex": "("}},
    )
    assert created
    ids = seed_products(system.db, 1000)
    system.start_workers(1, concurrency=1)
    job_id = system.launch(batch_size=500, max_in_flight=1)
    meta = system.db[METADATA]
    mid_batch = {"job_id": job_id, "kind": "batch", "processed": {"$gte": 100, "$lt": 400}}
    system.wait_until(lambda: meta.count_documents(mid_batch) > 0, what="a checkpointed batch")
    system.kill_workers()  # its lease expires; only a worker's sweeper can re-queue it now
    system.start_workers(1, concurrency=1)

    # Not system.wait(): that sweeps the job itself, as `backfill run --wait` does. Here
    # only the new worker's own sweeper may recover the dead worker's batch.
    def finished() -> bool:
        job = meta.find_one({"_id": job_id}, {"status": 1}) or {}
        return job.get("status") in ("completed", "completed_with_errors")

    system.wait_until(finished, timeout=180, what="the job to finish through the workers' sweep")
    rec = reconcile(system, job_id, ids, count_refetches=False)
    bad_job = meta.find_one({"_id": str(bad["_id"])}) or {}
    assert bad_job.get("status") == "failed", bad_job.get("status")
    assert "regular expression" in bad_job.get("fail_reason", "").lower()
    assert system.db[NOTIFICATIONS].count_documents({"job_id": bad_job["_id"], "event": "failed"})
    job = meta.find_one({"_id": job_id}) or {}
    assert int(job.get("times_interrupted", 0)) >= 1, "the dead lease was not re-queued"
    record(
        "r3-8",
        title="unplannable job beside a killed worker",
        fault="a job whose filter the server rejects sits in `planning`; the only worker "
        "of a running job is SIGKILLed mid-batch",
        how="job inserted through the engine API with `{sku: {$regex: '('}}`; `kill -9` "
        "the worker once a batch has 100-400 of 500 ids checkpointed, start a new one; "
        "no orchestrator sweeps",
        outcome="the bad job ended `failed` with the server's reason (and its notice); the "
        "new worker's sweeper re-queued the dead lease; the job completed",
        rec=rec,
        seconds=time.monotonic() - started,
    )
