"""Issue 9 hole 2: leases follow each host's clock.

One worker process runs with its wall clock shifted (tests/faults/skewed.py patches
`time.time` and `datetime.now` in that process tree only; libfaketime breaks Python's
`time.sleep` here). A worker 10 minutes ahead must not take over
live leases of a normal worker; a worker 10 minutes behind, left alone after a normal
worker died, must not keep the dead worker's lease alive.
"""

from __future__ import annotations

import time

import pytest

from tests.faults.issue9 import batches, job_doc, wait_unswept
from tests.faults.reconcile import reconcile
from tests.faults.report import record
from tests.faults.skewed import skewed_clock_env
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

SKEW_SECONDS = 600.0
SKEW = "10 min"


@pytest.mark.timeout(150)
def test_worker_with_clock_ahead_never_takes_a_live_lease(system: System) -> None:
    started = time.monotonic()
    ahead = skewed_clock_env(SKEW_SECONDS)
    system.start_catalog("--latency-ms", "300")
    ids = seed_products(system.db, 1200)
    sub = {"BACKFILL_SUBCHUNK_SIZE": "25"}  # 8 catalog calls per batch: ~2.5 s a batch
    # The normal worker does not sweep, so every sweep between the test's own (every
    # 0.5 s, on the real clock) is the fast worker's: it looks at live leases at once.
    system.start_workers(1, concurrency=2, extra_env={**sub, "BACKFILL_WORKER_SWEEP": "0"})
    system.start_workers(1, concurrency=1, extra_env={**sub, **ahead})
    job_id = system.launch(batch_size=200, max_in_flight=4)
    system.wait(job_id, timeout=120)

    # No worker died and nothing failed: every batch must have been leased exactly once.
    leased = {b["batch_no"]: int(b["attempts"]) for b in batches(system, job_id)}
    stolen = {n: a for n, a in leased.items() if a != 1}
    job = job_doc(system, job_id)
    assert not stolen, (
        f"batches leased more than once (batch: leases) {stolen}; the job counts "
        f"{job.get('times_interrupted', 0)} 'expired' leases re-queued, none had expired"
    )
    rec = reconcile(system, job_id, ids)
    assert rec.refetched == 0, f"{rec.refetched} ids fetched twice: a live batch was redone"
    record(
        "i9-2a",
        title="worker clock 10 min ahead",
        fault="one worker host's clock runs 10 minutes ahead",
        how="one of 2 workers started with its wall clock +10 min (tests/faults/skewed.py); "
        "lease 3 s, batches of ~2.5 s, the fast worker the only worker sweeping",
        outcome="every batch leased once; no live lease taken over; nothing fetched twice",
        rec=rec,
        seconds=time.monotonic() - started,
    )


@pytest.mark.timeout(150)
def test_worker_with_clock_behind_recovers_a_dead_workers_lease(system: System) -> None:
    started = time.monotonic()
    system.start_catalog("--latency-ms", "200")
    ids = seed_products(system.db, 600)
    sub = {"BACKFILL_SUBCHUNK_SIZE": "25"}
    # The normal worker does not sweep: after it dies the late worker is the only sweeper.
    system.start_workers(1, concurrency=1, extra_env={**sub, "BACKFILL_WORKER_SWEEP": "0"})
    job_id = system.launch(batch_size=200, max_in_flight=1)
    system.wait_until(
        lambda: any(b.get("processed", 0) >= 25 for b in batches(system, job_id, status="running")),
        timeout=60,
        what="a checkpointed running batch",
    )
    system.kill_workers()  # SIGKILL: its lease stays on the batch until it expires
    [dead] = batches(system, job_id, status="running")

    system.start_workers(1, concurrency=1, extra_env={**sub, **skewed_clock_env(-SKEW_SECONDS)})
    # Lease 3 s, sweeps every second: recovered within seconds if the lease is judged
    # on one clock. Nobody else sweeps (no orchestrator is waiting).
    wait_unswept(
        system,
        job_id,
        timeout=45,
        why=f"batch {dead['batch_no']}'s dead lease was not recovered by the only "
        f"worker left, whose clock is {SKEW} behind",
    )
    rec = reconcile(system, job_id, ids)
    record(
        "i9-2b",
        title="worker clock 10 min behind",
        fault="a worker dies holding a lease; the only worker left runs 10 minutes behind",
        how="SIGKILL the only normal worker mid-batch; start one with "
        "a clock 10 min behind (its own sweeper is the only one); lease 3 s",
        outcome="the dead lease was recovered within seconds; job completed",
        rec=rec,
        seconds=time.monotonic() - started,
    )
