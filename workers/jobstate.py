"""Job reads and the transitions workers make on jobs (completion, auth pause)."""

from __future__ import annotations

from typing import Any

from pymongo.collection import Collection

from workers.batches import now_utc
from workers.states import COUNTER_NAMES, UNFINISHED_BATCH_STATES, BatchStatus, JobStatus


def read_job(
    coll: Collection, job_id: str, fields: tuple[str, ...] | None = None
) -> dict[str, Any] | None:
    """The job document `job_id` (only `fields` if given); None if there is no such job.

    Filters on `_id` alone and checks `kind` here: on SecantusDB a second equality in the
    filter triples the cost of the read (0.75 vs 0.25 ms), and workers read the job
    around every batch.
    """
    projection = None if fields is None else dict.fromkeys((*fields, "kind"), 1)
    doc = coll.find_one({"_id": job_id}, projection)
    return doc if doc is not None and doc.get("kind") == "job" else None


def get_job(coll: Collection, job_id: str) -> dict[str, Any] | None:
    return read_job(coll, job_id)


def job_status(coll: Collection, job_id: str) -> JobStatus | None:
    doc = read_job(coll, job_id, ("status",))
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
    job = read_job(coll, job_id, ("status", "planning"))
    if not job or job["status"] != JobStatus.RUNNING.value or not job["planning"].get("done"):
        return None
    # `$in` the unfinished states rather than `$nin` the finished ones: the former stays on
    # the (job_id, status) index (0.55 vs 2.35 ms on SecantusDB at 60 batches).
    unfinished = coll.count_documents(
        {"job_id": job_id, "status": {"$in": [s.value for s in UNFINISHED_BATCH_STATES]}},
        limit=1,
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
