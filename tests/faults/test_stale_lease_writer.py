"""Issue 9 hole 1: a worker that lost its lease while waiting on the catalog writes nothing.

Worker A reaches MongoDB through a freezable proxy. A leases the only batch and asks the
catalog, which answers slowly (data version "seed 0", 20 % of ids unknown). While A waits,
A's network to MongoDB stalls for longer than the lease; the catalog's data changes (seed
1, nothing unknown); the sweeper re-queues the batch and worker B (direct connection)
writes the new values and finishes. Then A's network comes back with A's old answer in
hand: A must write nothing — no product and no quarantine entry.
"""

from __future__ import annotations

import time

import pytest

from backfill_engine.states import QUARANTINE
from catalog_service.data import expected_fields
from migrations.versions._catalog import PRODUCTS
from tests.faults.issue9 import batches, mongo_proxy, proxied_mongo_url, set_faults
from tests.faults.reconcile import FIELDS, reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

SLOW_ANSWER_MS = 6000  # A's catalog answer: longer than the lease plus B's whole batch
SETTLE_SECONDS = 8.0  # after the thaw, how long A gets to (wrongly) write


def _holding(system: System, ids: list[object], seed: int) -> int:
    n = 0
    for doc in system.db[PRODUCTS].find({"_id": {"$in": ids}}):
        if {f: doc.get(f) for f in FIELDS} == expected_fields(str(doc["_id"]), seed):
            n += 1
    return n


@pytest.mark.timeout(150)
def test_worker_that_lost_its_lease_during_a_slow_fetch_writes_nothing(system: System) -> None:
    started = time.monotonic()
    ids = seed_products(system.db, 100)
    proxy = mongo_proxy(system)
    try:
        system.start_workers(  # worker A
            1,
            concurrency=1,
            extra_env={
                "MONGO_URL": proxied_mongo_url(proxy),
                "BACKFILL_WORKER_SWEEP": "0",
                "BACKFILL_HTTP_READ_TIMEOUT": "30",
            },
        )
        set_faults(system, latency_ms=SLOW_ANSWER_MS, missing_rate=0.2)
        job_id = system.launch(batch_size=100, max_in_flight=1)

        # A's request has reached the catalog: its answer (seed 0) is fixed from now on.
        system.wait_until(lambda: system.stats()["in_flight"] >= 1, 30, "A's catalog request")
        set_faults(system, latency_ms=0, seed=1, missing_rate=0.0)
        proxy.freeze()
        stalled_at = time.monotonic()
        [batch] = batches(system, job_id)
        a_token = batch["fencing_token"]

        system.start_workers(1, concurrency=1)  # worker B, direct to MongoDB
        wait_sweeping(
            system,
            job_id,
            lambda: batches(system, job_id)[0]["status"] == "done",
            timeout=40,
            what="worker B to finish the batch A lost",
        )
        taken_over = batches(system, job_id)[0]
        assert taken_over["fencing_token"] > a_token, "B finished without taking the lease over"
        assert _holding(system, ids, 1) == len(ids), "B did not write the catalog's new values"
        # A's old answer has left the catalog: A holds it, waiting for its network.
        system.wait_until(lambda: system.stats()["in_flight"] == 0, 30, "A's slow answer")
        stalled = time.monotonic() - stalled_at
        proxy.thaw()

        deadline = time.monotonic() + SETTLE_SECONDS
        stale = held = 0
        while time.monotonic() < deadline and not (stale or held):
            time.sleep(0.25)
            stale = _holding(system, ids, 0)
            held = system.db[QUARANTINE].count_documents({"job_id": job_id})
        assert stale == 0, (
            f"{stale} products hold the stale values of the worker whose lease was taken "
            "over (written after B's newer ones)"
        )
        assert held == 0, f"the worker that lost its lease quarantined {held} ids"

        rec = reconcile(system, job_id, ids, seed=1)
        record(
            "i9-1",
            title="stale worker after a network stall",
            fault="worker A's link to MongoDB stalls longer than the lease while A waits on "
            "a slow catalog answer; B takes the batch over and writes newer data",
            how=f"A via a freezable TCP proxy, catalog answer {SLOW_ANSWER_MS / 1000:g} s "
            f"(seed 0, 20 % unknown), then catalog data changed (seed 1); link stalled "
            f"{stalled:.1f} s (lease 3 s), sweeper re-queued, B finished; link restored",
            outcome="A wrote no product and no quarantine entry; products hold B's values",
            rec=rec,
            seconds=time.monotonic() - started,
        )
    finally:
        proxy.close()
