"""The distributed backfill end to end: real workers, Redis, SecantusDB and the HTTP stand-in."""

from __future__ import annotations

import math

import pymongo.errors
import pytest
from bson.objectid import ObjectId

from backfill_engine.http_client import MAX_IDS_PER_REQUEST
from backfill_engine.payload import typed_id
from backfill_engine.states import BATCH_IDS, METADATA, QUARANTINE
from backfill_engine.store import load_batch_ids
from catalog_service.data import expected_item
from migrations.versions._catalog import PRODUCTS
from orchestrator.verify import verify
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

FIELDS = ("brand", "category", "gtin", "weight_grams")


def _catalog_id(pid: object) -> str:
    return str(pid)


def assert_enriched_with_standin_values(system: System, ids: list[ObjectId]) -> None:
    docs = {d["_id"]: d for d in system.db[PRODUCTS].find({"_id": {"$in": ids}})}
    assert len(docs) == len(ids)
    for pid in ids:
        want = expected_item(_catalog_id(pid))
        got = docs[pid]
        assert {f: got.get(f) for f in FIELDS} == {f: want[f] for f in FIELDS}, typed_id(pid)
        assert "catalog_synced_at" in got


def test_all_migrations_apply_and_the_validator_then_rejects_unenriched(system: System) -> None:
    ids = seed_products(system.db, 1200)
    system.start_workers(2)
    result = system.migrate(to=None)
    assert [s.version for s in result.done] == [
        "20240406_backfill_products_from_catalog",
        "20240407_enforce_catalog_fields",
        "20240408_backfill_gtin14",
        "20240409_generic_item_names",
    ]
    assert_enriched_with_standin_values(system, ids)
    for doc in system.db[PRODUCTS].find({}, {"gtin": 1, "gtin14": 1}):
        assert doc["gtin14"] == doc["gtin"].zfill(14)
    with pytest.raises(pymongo.errors.WriteError):
        system.db[PRODUCTS].insert_one({"_id": ObjectId(), "sku": "no catalog fields"})


def test_rerun_writes_nothing_and_only_compares(system: System) -> None:
    n = 1000
    seed_products(system.db, n)
    system.start_workers(2)
    first = system.wait(system.launch())
    assert first.job["status"] == "completed"
    assert first.items["written"] == n
    system.reset_stats()
    second = system.wait(system.launch())
    assert second.job["_id"] != first.job["_id"]
    assert second.job["status"] == "completed"
    assert second.items["written"] == 0 and second.items["unchanged"] == n
    # One request per 100 ids of a sub-chunk: exactly what comparing needs.
    batches = math.ceil(n / system.settings.batch_size)
    per_request = min(system.settings.subchunk_size, MAX_IDS_PER_REQUEST)
    per_batch = math.ceil(system.settings.batch_size / per_request)
    assert system.stats()["requests"] <= batches * per_batch
    assert system.stats()["ids_served"] == n


def test_killed_worker_resumes_from_checkpoint(system: System) -> None:
    system.start_catalog("--latency-ms", "150")
    ids = seed_products(system.db, 1000)
    system.start_workers(1, concurrency=1)
    job_id = system.launch(batch_size=500, max_in_flight=1)
    meta = system.db[METADATA]

    def mid_batch() -> bool:
        return (
            meta.count_documents(
                {"job_id": job_id, "kind": "batch", "processed": {"$gte": 100, "$lt": 400}}
            )
            > 0
        )

    system.wait_until(mid_batch, what="a batch with a checkpoint")
    system.kill_workers()
    interrupted = meta.find_one({"job_id": job_id, "kind": "batch", "status": "running"})
    assert interrupted and 0 < interrupted["processed"] < interrupted["size"]
    checkpointed = load_batch_ids(system.db[BATCH_IDS], interrupted["_id"])[
        : interrupted["processed"]
    ]
    assert interrupted["last_processed_id"] == checkpointed[-1]

    system.start_workers(1, concurrency=1)
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed"
    counts = system.stats()["id_counts"]
    assert all(counts[_catalog_id(i)] == 1 for i in checkpointed), (
        "a checkpointed id was fetched again"
    )
    after = meta.find_one({"_id": interrupted["_id"]})
    assert after["attempts"] >= 2 and after["status"] == "done"
    assert sum(after["counters"].values()) == after["size"]
    assert_enriched_with_standin_values(system, ids)
    assert verify(system.db, job_id).ok


def test_pause_resume_and_cancel(system: System) -> None:
    system.start_catalog("--latency-ms", "200")  # 10 batches, two at a time: seconds of work
    seed_products(system.db, 1000)
    system.start_workers(2)
    meta = system.db[METADATA]
    job_id = system.launch(batch_size=100, max_in_flight=2)
    system.wait_until(
        lambda: meta.count_documents({"job_id": job_id, "status": "done"}) >= 2, what="progress"
    )

    system.broker  # noqa: B018 - connect before pausing
    from orchestrator import jobs

    jobs.pause(system.db, job_id)
    # Within seconds every batch is handed back and nothing runs.
    system.wait_until(
        lambda: meta.count_documents({"job_id": job_id, "status": "running"}) == 0,
        timeout=15,
        what="pause",
    )
    frozen = system.summary(job_id).items["processed"]
    import time

    time.sleep(2)
    assert system.summary(job_id).items["processed"] == frozen
    assert system.summary(job_id).job["status"] == "paused"
    assert frozen < 1000

    jobs.resume(system.db, system.broker.sender, system.settings.queue, job_id)
    done = system.wait(job_id)
    assert done.job["status"] == "completed" and done.items["processed"] == 1000

    # cancel: a new job is stopped for good
    system.db[PRODUCTS].update_many({}, {"$unset": {"brand": ""}})
    system.start_catalog("--latency-ms", "300")  # slow enough to cancel mid-job
    job2 = system.launch(batch_size=100, max_in_flight=1)
    system.wait_until(
        lambda: meta.count_documents({"job_id": job2, "status": "done"}) >= 1, what="progress"
    )
    jobs.cancel(system.db, job2)
    final = system.wait(job2)
    assert final.job["status"] == "cancelled"
    system.wait_until(
        lambda: meta.count_documents({"job_id": job2, "status": "running"}) == 0,
        timeout=15,
        what="stop",
    )
    assert system.summary(job2).items["processed"] < 2000


def test_quarantine_takes_invalid_and_missing_and_retry_replays_them(system: System) -> None:
    system.start_catalog("--missing-rate", "0.05", "--hostile-rate", "0.05")
    ids = seed_products(system.db, 800)
    system.start_workers(2)
    job_id = system.launch()
    summary = system.wait(job_id)
    assert summary.job["status"] == "completed_with_errors"
    q = system.db[QUARANTINE]
    reasons = {d["reason"] for d in q.find({"job_id": job_id})}
    assert reasons == {"missing", "invalid"}
    assert summary.quarantined == q.count_documents({"job_id": job_id}) > 0
    assert summary.items["missing"] + summary.items["invalid"] == summary.quarantined
    # Nothing of a hostile payload reached products.
    for d in system.db[PRODUCTS].find({}):
        assert not any(k.startswith("$") or "." in k for k in d)
        assert set(d) <= {"_id", "sku", *FIELDS, "catalog_synced_at"}
    held = [d["item_id"] for d in q.find({"job_id": job_id})]
    assert (
        system.db[PRODUCTS].count_documents({"_id": {"$in": held}, "brand": {"$exists": True}}) == 0
    )

    # The provider fixes its data; retry replays exactly the quarantined ids as their own job.
    system.start_catalog()
    from orchestrator import jobs
    from orchestrator.commands import replay_starter

    report = jobs.retry(
        system.db,
        system.broker.sender,
        system.settings.queue,
        job_id,
        start_replay=replay_starter(system.db, system.broker, system.settings),
    )
    assert report.replayed_items == len(held) and report.replay_job_id
    replay = system.wait(report.replay_job_id)
    assert replay.job["status"] == "completed"
    assert replay.items["size"] == len(held) and replay.items["written"] == len(held)
    assert_enriched_with_standin_values(system, ids)


def test_verify_finds_no_mismatch_then_catches_a_hand_edit(system: System) -> None:
    ids = seed_products(system.db, 600)
    system.start_workers(1)
    job_id = system.launch()
    system.wait(job_id)
    report = verify(system.db, job_id)
    assert report.ok and report.documents_checked == 600
    system.db[PRODUCTS].update_one({"_id": ids[450]}, {"$set": {"brand": "Edited By Hand"}})
    report = verify(system.db, job_id)
    assert not report.ok
    edited_batch = system.db[BATCH_IDS].find_one({"job_id": job_id, "ids": ids[450]})
    assert report.mismatched_batches == [int(edited_batch["_id"].rsplit(":", 1)[1])]
    # Shorter reads (BACKFILL_READ_IDS) check the same documents and find the same batch.
    short = verify(system.db, job_id, per_read=7)
    assert short.documents_checked == 600
    assert short.mismatched_batches == report.mismatched_batches
