"""Scenarios 1 and 2: workers killed with SIGKILL (the OOM killer's way) in mid-batch."""

from __future__ import annotations

import time

import pytest

from backfill_engine.states import BATCH_IDS, METADATA
from backfill_engine.store import load_batch_ids, now_utc
from tests.faults.reconcile import reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def test_killed_worker_resumes_its_batch_from_last_processed_id(system: System) -> None:
    started = time.monotonic()
    system.start_catalog("--latency-ms", "150")
    ids = seed_products(system.db, 1000)
    system.start_workers(1, concurrency=1)
    job_id = system.launch(batch_size=500, max_in_flight=1)
    meta = system.db[METADATA]
    mid_batch = {"job_id": job_id, "kind": "batch", "processed": {"$gte": 100, "$lt": 400}}
    system.wait_until(lambda: meta.count_documents(mid_batch) > 0, what="a checkpointed batch")
    system.kill_workers()

    interrupted = meta.find_one({"job_id": job_id, "kind": "batch", "status": "running"})
    assert interrupted and 0 < interrupted["processed"] < interrupted["size"]
    batch_ids = load_batch_ids(system.db[BATCH_IDS], interrupted["_id"])
    checkpointed = batch_ids[: interrupted["processed"]]
    assert interrupted["last_processed_id"] == checkpointed[-1]

    system.start_workers(1, concurrency=1)
    system.wait(job_id)
    rec = reconcile(system, job_id, ids)

    counts = system.stats()["id_counts"]
    refetched_checkpointed = [i for i in checkpointed if counts[str(i)] != 1]
    assert not refetched_checkpointed, "an id before last_processed_id was fetched again"
    after = meta.find_one({"_id": interrupted["_id"]}) or {}
    assert after["attempts"] >= 2 and after["times_recovered"] >= 1
    # At most the sub-chunk in flight when the worker died is fetched again.
    assert rec.refetched <= system.settings.subchunk_size
    record(
        "1",
        title="worker SIGKILLed mid-batch",
        fault="`kill -9` the only worker after a checkpoint, start a new one",
        how="SIGKILL to the worker's process group once a batch has 100-400 of 500 ids "
        "checkpointed; lease (3 s) expires, sweeper re-queues, new worker resumes",
        outcome=f"resumed at id {interrupted['processed']} of {interrupted['size']}; "
        f"0 of {len(checkpointed)} checkpointed ids fetched again",
        rec=rec,
        seconds=time.monotonic() - started,
    )


def test_every_worker_killed_twice_during_one_job(system: System) -> None:
    started = time.monotonic()
    system.start_catalog("--latency-ms", "300")
    ids = seed_products(system.db, 3000)
    system.start_workers(2, concurrency=2)
    job_id = system.launch(batch_size=200, max_in_flight=4)
    meta = system.db[METADATA]

    def done() -> int:
        return meta.count_documents({"job_id": job_id, "kind": "batch", "status": "done"})

    def fetch_ahead() -> bool:
        # A batch held by a live worker with its second sub-chunk's 300 ms fetch still to
        # come: a kill now lands mid-batch, not in the gap between two batches.
        return bool(
            meta.count_documents(
                {
                    "job_id": job_id,
                    "kind": "batch",
                    "status": "running",
                    "processed": 0,
                    "lease_expires_at": {"$gt": now_utc()},
                },
                limit=1,
            )
        )

    # An interrupted attempt is a (batch, fencing token) left running by a kill; counted
    # after the kill, when nothing can move it, and once, since it stays running until a
    # fresh worker leases it again.
    attempts: set[tuple[str, int]] = set()
    kills = 0
    for target in (2, 6, 9, 12):
        if kills >= 2 and len(attempts) >= 2:
            break
        wait_sweeping(
            system,
            job_id,
            lambda t=target: done() >= t and fetch_ahead(),
            what=f"{target} done and a batch mid-way",
        )
        system.kill_workers()
        kills += 1
        attempts |= {
            (d["_id"], d["fencing_token"])
            for d in meta.find({"job_id": job_id, "kind": "batch", "status": "running"})
        }
        assert done() < len(ids) // 200, "the job ended before the kill: nothing was tested"
        system.start_workers(2, concurrency=2)
    interrupted = len(attempts)

    system.wait(job_id)
    rec = reconcile(system, job_id, ids)
    assert interrupted >= 2
    # Each interrupted batch re-fetches at most the sub-chunk it was in.
    assert rec.refetched <= interrupted * system.settings.subchunk_size
    recovered = sum(
        d.get("times_recovered", 0) for d in meta.find({"job_id": job_id, "kind": "batch"})
    )
    assert recovered >= 2
    record(
        "2",
        title="all workers SIGKILLed, twice",
        fault="`kill -9` every worker at once, two times in one job",
        how="2 workers x 2 processes; SIGKILL all after 2 and after 6 done batches, each "
        "time with a batch mid-way, start 2 fresh workers each time",
        outcome=f"{kills} kills, {interrupted} batches interrupted, "
        f"{recovered} recovered by the sweeper; job completed",
        rec=rec,
        seconds=time.monotonic() - started,
    )
