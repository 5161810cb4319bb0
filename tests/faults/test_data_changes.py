"""Scenario 7: products deleted and inserted while the job runs."""

from __future__ import annotations

import time

import pytest

from backfill_engine.states import BATCH_IDS, METADATA
from backfill_engine.store import load_batch_ids
from migrations.versions._catalog import PRODUCTS
from tests.faults.reconcile import reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e


def test_products_deleted_and_inserted_mid_job_are_reported_not_crashed_on(
    system: System,
) -> None:
    started = time.monotonic()
    system.start_catalog("--latency-ms", "100")
    ids = seed_products(system.db, 1500)
    system.start_workers(2)
    job_id = system.launch(batch_size=100, max_in_flight=2)
    meta, products = system.db[METADATA], system.db[PRODUCTS]
    wait_sweeping(
        system,
        job_id,
        lambda: meta.count_documents({"job_id": job_id, "kind": "batch", "status": "done"}) >= 1,
        what="a done batch",
    )
    # Delete ids of batches nobody has started yet, and insert new products meanwhile.
    untouched = [
        b["_id"]
        for b in meta.find({"job_id": job_id, "kind": "batch", "status": {"$in": ["pending"]}})
    ]
    assert len(untouched) >= 4, "the job got too far before the deletes"
    doomed = [i for bid in untouched[-3:] for i in load_batch_ids(system.db[BATCH_IDS], bid)[::4]]
    products.delete_many({"_id": {"$in": doomed}})
    newcomers = seed_products(system.db, 200, start=10_000)

    system.wait(job_id)
    rec = reconcile(system, job_id, ids, deleted=set(doomed))
    summary = system.summary(job_id)
    assert summary.items["deleted"] == len(doomed)
    # Products that did not exist when the job was planned are left for the next run.
    assert products.count_documents({"_id": {"$in": newcomers}, "brand": {"$exists": 1}}) == 0

    second = system.wait(system.launch())
    assert second.job["status"] == "completed"
    assert second.items["written"] == len(newcomers)
    assert second.items["unchanged"] == len(ids) - len(doomed)
    record(
        "7",
        title="products deleted and inserted mid-job",
        fault="products deleted from not-yet-started batches, 200 new products inserted, "
        "while the job runs",
        how=f"`delete_many` of {len(doomed)} planned ids and `insert_many` of 200 new ones "
        "after the first batch finished",
        outcome=f"no crash; status reports deleted={summary.items['deleted']}; the new "
        f"products are not in this job, the next run writes exactly those "
        f"{second.items['written']} and finds the rest unchanged",
        rec=rec,
        seconds=time.monotonic() - started,
    )
