"""Shared steps of the retry/replay tests: finish a job as workers would, read what was planned."""

from __future__ import annotations

from typing import Any

from bson.objectid import ObjectId
from pymongo.database import Database

from backfill_engine.batch_io import quarantine_ops
from backfill_engine.states import BATCH_IDS, METADATA, QUARANTINE, BatchStatus, JobStatus
from migrations.versions._catalog import PRODUCTS


def seed_regions(db: Database, eu: int, us: int, *, gtin: str = "4006381333931") -> list[Any]:
    """`eu` then `us` products with a `region` and a `gtin`; their ids in that order."""
    docs = [
        {"_id": ObjectId(), "sku": f"S{k}", "region": "EU" if k < eu else "US", "gtin": gtin}
        for k in range(eu + us)
    ]
    db[PRODUCTS].insert_many(docs)
    return [d["_id"] for d in docs]


def finish_as_workers_would(db: Database, job_id: str, *, failed: int = 0) -> None:
    """Mark the job's batches done (the first `failed` of them failed) and the job ended.

    What workers leave behind when a job ends with errors, written directly so the test
    needs no worker; the job gives up its active key as maybe_complete_job does.
    """
    meta = db[METADATA]
    for k, batch in enumerate(meta.find({"job_id": job_id}).sort("batch_no", 1)):
        status = BatchStatus.FAILED if k < failed else BatchStatus.DONE
        meta.update_one({"_id": batch["_id"]}, {"$set": {"status": status.value}})
    meta.update_one(
        {"_id": job_id},
        {
            "$set": {"status": JobStatus.COMPLETED_WITH_ERRORS.value, "planning.done": True},
            "$unset": {"active_key": "", "planner": ""},
        },
    )


def quarantine(db: Database, job_id: str, *item_ids: Any) -> None:
    """Quarantine items as a worker does, with the worker's own update."""
    entries = [
        {
            "item_id": pid,
            "reason": "invalid",
            "error_class": "InvalidPayloadError",
            "error": "missing field gtin",
            "http_status": 200,
            "payload_snapshot": None,
        }
        for pid in item_ids
    ]
    db[QUARANTINE].bulk_write(quarantine_ops(job_id, 0, entries), ordered=False)


def planned_ids(db: Database, job_id: str) -> list[Any]:
    """Every id the job's batches cover, in batch order: what the job will process."""
    out: list[Any] = []
    for doc in db[BATCH_IDS].find({"job_id": job_id}).sort("_id", 1):
        out.extend(doc["ids"])
    return out
