"""Job reads and the transitions workers make on jobs (completion, auth pause)."""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection

from workers.batches import now_utc
from workers.states import COUNTER_NAMES, FINISHED_BATCH_STATES, BatchStatus, JobStatus


def get_job(coll: Collection, job_id: str) -> dict[str, Any] | None:
    return coll.find_one({"_id": job_id, "kind": "job"})


def job_status(coll: Collection, job_id: str) -> JobStatus | None:
    doc = coll.find_one({"_id": job_id, "kind": "job"}, {"status": 1})
    return JobStatus(doc["status"]) if doc else None


def batch_counts(coll: Collection, job_id: str) -> dict[str, int]:
    """Number of batches per status."""
    out = {s.value: 0 for s in BatchStatus}
    for row in coll.aggregate(
        [
            {"$match": {"job_id": job_id}},
            {"$group": {"_id": "$status", "n": {"$sum": 1}}},
        ]
    ):
        out[row["_id"]] = row["n"]
    return out


def item_totals(coll: Collection, job_id: str) -> dict[str, int]:
    """Per-item counters summed over the job's batches, plus products planned and processed."""
    group: dict[str, Any] = {
        "_id": None,
        "size": {"$sum": "$size"},
        "processed": {"$sum": "$processed"},
    }
    for name in COUNTER_NAMES:
        group[name] = {"$sum": f"$counters.{name}"}
    rows = list(coll.aggregate([{"$match": {"job_id": job_id}}, {"$group": group}]))
    totals = dict.fromkeys(("size", "processed", *COUNTER_NAMES), 0)
    if rows:
        totals.update({k: int(v or 0) for k, v in rows[0].items() if k != "_id"})
    return totals


def batch_summary(coll: Collection, job_id: str) -> tuple[dict[str, int], dict[str, int]]:
    """`batch_counts` and `item_totals` from one aggregation (progress polls this every tick).

    One pass over the job's batch documents instead of two: on SecantusDB each pass
    decodes every batch document, which is most of what a poll costs the database.
    """
    group: dict[str, Any] = {
        "_id": "$status",
        "n": {"$sum": 1},
        "size": {"$sum": "$size"},
        "processed": {"$sum": "$processed"},
    }
    for name in COUNTER_NAMES:
        group[name] = {"$sum": f"$counters.{name}"}
    counts = {s.value: 0 for s in BatchStatus}
    totals = dict.fromkeys(("size", "processed", *COUNTER_NAMES), 0)
    for row in coll.aggregate([{"$match": {"job_id": job_id}}, {"$group": group}]):
        counts[row["_id"]] = int(row["n"])
        for key in totals:
            totals[key] += int(row.get(key) or 0)
    return counts, totals


def maybe_complete_job(
    coll: Collection, db_quarantine: Collection, job_id: str
) -> JobStatus | None:
    """Close the job when planning is done and every batch is finished; return the new status."""
    job = coll.find_one({"_id": job_id, "kind": "job"}, {"status": 1, "planning": 1})
    if not job or job["status"] != JobStatus.RUNNING.value or not job["planning"].get("done"):
        return None
    unfinished = coll.count_documents(
        {
            "job_id": job_id,
            "status": {"$nin": [s.value for s in FINISHED_BATCH_STATES]},
        }
    )
    if unfinished:
        return None
    failed = coll.count_documents({"job_id": job_id, "status": "failed"})
    quarantined = db_quarantine.count_documents({"job_id": job_id})
    final = JobStatus.COMPLETED_WITH_ERRORS if failed or quarantined else JobStatus.COMPLETED
    now = now_utc()
    res = coll.update_one(
        {"_id": job_id, "kind": "job", "status": JobStatus.RUNNING.value},
        {
            "$set": {"status": final.value, "finished_at": now, "updated_at": now},
            "$unset": {"active_key": ""},
        },
    )
    return final if res.modified_count else None


def pause_job_for(coll: Collection, job_id: str, reason: str) -> bool:
    """Pause a running job on a condition only an operator can fix (e.g. the catalog says 401)."""
    now = now_utc()
    res = coll.update_one(
        {"_id": job_id, "kind": "job", "status": {"$in": ["planning", "running"]}},
        {"$set": {"status": JobStatus.PAUSED.value, "pause_reason": reason, "updated_at": now}},
    )
    return res.modified_count == 1
