"""Every job and batch state change, each one atomic update guarded by status, lease or token.

Named for the transition it makes (lease_batch, checkpoint, finish_batch, fail_batch,
requeue_stale, maybe_complete_job, pause_job_for, ...), so no state string is written
anywhere else. Each status filter comes from backfill_engine.transitions, the table of
which changes exist: a change it does not list cannot be written.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import pymongo.errors
from pymongo import ReturnDocument
from pymongo.collection import Collection

from backfill_engine import clock, notify
from backfill_engine.states import (
    COUNTER_NAMES,
    IN_FLIGHT_BATCH_STATES,
    UNFINISHED_BATCH_STATES,
    BatchStatus,
    JobStatus,
    zero_counters,
)
from backfill_engine.transitions import batch_guard, job_guard

MAX_ERRORS_KEPT = 5


def now_utc() -> dt.datetime:
    """The database server's time (see backfill_engine.clock), millisecond precision."""
    return clock.now()


def batch_id(job_id: str, batch_no: int) -> str:
    """Batch documents have readable, deterministic ids: planning the same batch twice collides."""
    return f"{job_id}:{batch_no:07d}"


def new_batch(job_id: str, batch_no: int, ids: list[Any]) -> dict[str, Any]:
    """The batch document for `ids` (ascending); the ids themselves go in `batch_ids_doc`."""
    return {
        "_id": batch_id(job_id, batch_no),
        "kind": "batch",
        "job_id": job_id,
        "batch_no": batch_no,
        "first_id": ids[0],
        "last_id": ids[-1],
        "size": len(ids),
        "status": BatchStatus.PENDING.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "fencing_token": 0,
        "attempts": 0,
        "processed": 0,
        "last_processed_id": None,
        "payload_hash": None,
        "counters": zero_counters(),
        "errors": [],
        "created_at": now_utc(),
    }


def new_job(
    job_id: str,
    *,
    backfill: str,
    key: str,
    batch_size: int,
    max_in_flight: int,
    rate_per_second: float,
    collection: str,
    rate_auto: dict[str, Any] | None = None,
    params: dict[str, Any] | None = None,
    scope: dict[str, Any] | None = None,
    limit: int | None = None,
    string_keyed: bool = True,
) -> dict[str, Any]:
    """The job document of a new job, `planning` and holding the active `key` (unique while
    the job is active, so one job per key runs)."""
    now = now_utc()
    return {
        "_id": job_id,
        "kind": "job",
        "backfill": backfill,
        "status": JobStatus.PLANNING.value,
        "active_key": key,
        "exclusive_key": key,
        "batch_size": batch_size,
        "max_in_flight": max_in_flight,
        "rate_per_second": float(rate_per_second),
        "rate_auto": rate_auto,  # `--rate auto`: followed and filled by rate_control.py
        "params": params or {},
        "collection": collection,
        "scope": scope or {},
        "limit": limit,
        "string_keyed": string_keyed,
        "planning": {"cursor": None, "batches": 0, "items": 0, "done": False},
        "dispatch_lock": None,
        "created_at": now,
        "updated_at": now,
    }


def record_finished_job(coll: Collection, doc: dict[str, Any]) -> None:
    """Record a job that ran outside the workers (a migration's in-process undo) as the
    completed job it already is: it holds no active key and takes no transition."""
    now = now_utc()
    coll.insert_one(
        {**doc, "status": JobStatus.COMPLETED.value, "updated_at": now, "finished_at": now}
    )


def batch_ids_doc(
    job_id: str, batch_no: int, ids: list[Any], ambiguous: list[Any] | None = None
) -> dict[str, Any]:
    """The document ids a batch covers, stored in BATCH_IDS under the batch's own id.

    `ambiguous` are the ids among them whose string form another id of the job shares
    (backfill_engine.ids): they are quarantined, never written.
    """
    doc: dict[str, Any] = {"_id": batch_id(job_id, batch_no), "job_id": job_id, "ids": ids}
    if ambiguous:
        doc["ambiguous"] = ambiguous
    return doc


def load_batch_ids(coll: Collection, bid: str) -> list[Any]:
    """The ids of batch `bid` from the BATCH_IDS collection `coll`."""
    return load_batch(coll, bid)[0]


def load_batch(coll: Collection, bid: str) -> tuple[list[Any], list[Any]]:
    """The ids of batch `bid` and the ambiguous ones among them."""
    # No projection: the document is only `_id`, `job_id` and `ids`.
    doc = coll.find_one({"_id": bid})
    if doc is None:
        raise LookupError(f"batch {bid} has no id list")
    return list(doc["ids"]), list(doc.get("ambiguous") or [])


@dataclass(frozen=True)
class Lease:
    """Proof that one worker owns a batch; every write it makes is conditioned on `token`."""

    batch_id: str
    owner: str
    token: int

    def guard(self) -> dict[str, Any]:
        return {"_id": self.batch_id, "fencing_token": self.token, "lease_owner": self.owner}


def lease_batch(
    coll: Collection, bid: str, owner: str, lease_seconds: float
) -> tuple[Lease, dict[str, Any]] | None:
    """Take the batch if it is unfinished and nobody holds a live lease; None otherwise.

    One guarded findAndModify on `_id` that returns the batch as leased (its new fencing
    token, its checkpoint). "No live lease" is `lease_expires_at` null or past: every
    transition sets or clears owner and expiry together.
    """
    now = now_utc()
    expires = now + dt.timedelta(seconds=lease_seconds)
    try:
        doc = coll.find_one_and_update(
            {
                "_id": bid,
                **batch_guard(BatchStatus.RUNNING),
                "lease_expires_at": {"$not": {"$gte": now}},
            },
            {
                "$set": {
                    "status": BatchStatus.RUNNING.value,
                    "lease_owner": owner,
                    "lease_expires_at": expires,
                    "updated_at": now,
                },
                "$inc": {"fencing_token": 1, "attempts": 1},
                "$min": {"started_at": now},
            },
            return_document=ReturnDocument.AFTER,
        )
    except pymongo.errors.PyMongoError:
        # The lease may have been taken with the answer lost: we cannot tell our token, so
        # hand it back rather than leave it to expire into a sweeper's pass (if this fails
        # too, that is what happens).
        with contextlib.suppress(pymongo.errors.PyMongoError):
            _hand_back_lease(coll, {"_id": bid, "lease_owner": owner, "lease_expires_at": expires})
        raise
    if doc is None:
        return None
    return Lease(bid, owner, int(doc["fencing_token"])), doc


def _queued_again(now: dt.datetime) -> dict[str, Any]:
    """The `$set` that puts a batch back to queued with no lease, its message sent `now`."""
    return {
        "status": BatchStatus.QUEUED.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "dispatched_at": now,
        "updated_at": now,
    }


def _hand_back_lease(coll: Collection, mine: dict[str, Any]) -> None:
    """A lease its delivery could not start under goes back to queued; it was no attempt."""
    now = now_utc()
    coll.update_one(
        {**mine, **batch_guard(BatchStatus.QUEUED, BatchStatus.RUNNING)},
        {
            "$set": _queued_again(now),
            "$inc": {"attempts": -1},
        },
    )


def note_resent(coll: Collection, bid: str, at: dt.datetime) -> None:
    """A queued batch's message was sent again, to be taken from `at`: until a while after
    that, no sweeper takes the message for lost."""
    coll.update_one(
        {"_id": bid, **batch_guard(BatchStatus.QUEUED, BatchStatus.QUEUED)},
        {"$max": {"dispatched_at": at}},
    )


def unqueue_batch(coll: Collection, bid: str) -> bool:
    """A queued batch of a paused or stopped job goes back to pending (resume re-sends it)."""
    res = coll.update_one(
        {"_id": bid, **batch_guard(BatchStatus.PENDING, BatchStatus.QUEUED)},
        {"$set": {"status": BatchStatus.PENDING.value}},
    )
    return res.modified_count == 1


def renew_lease(coll: Collection, lease: Lease, lease_seconds: float) -> bool:
    """Extend our lease; False means another worker took the batch over."""
    now = now_utc()
    res = coll.update_one(
        lease.guard(),
        {"$set": {"lease_expires_at": now + dt.timedelta(seconds=lease_seconds)}},
    )
    return res.matched_count == 1


def checkpoint(
    coll: Collection,
    lease: Lease,
    *,
    processed: int,
    last_processed_id: Any,
    payload_hash: str | None,
    counters: dict[str, int],
    lease_seconds: float,
    source_inc: dict[str, float] | None = None,
) -> bool:
    """Record progress after the data is written; False if the lease was lost meanwhile.

    `source_inc` adds what the source calls cost since the last write (requests, 429s,
    5xx, rate-limit wait) to the batch's `source` totals, for metrics.
    """
    update = checkpoint_update(
        processed=processed,
        last_processed_id=last_processed_id,
        payload_hash=payload_hash,
        counters=counters,
        lease_seconds=lease_seconds,
        source_inc=source_inc,
    )
    res = coll.update_one(lease.guard(), update)
    return res.matched_count == 1


def checkpoint_update(
    *,
    processed: int,
    last_processed_id: Any,
    payload_hash: str | None,
    counters: dict[str, int],
    lease_seconds: float,
    source_inc: dict[str, float] | None = None,
) -> dict[str, Any]:
    """The update `checkpoint` applies under `lease.guard()`; a client bulkWrite sends the
    same one beside the next sub-chunk's writes (backfill_engine.subchunk_write)."""
    now = now_utc()
    update: dict[str, Any] = {
        "$set": {
            "processed": processed,
            "last_processed_id": last_processed_id,
            "payload_hash": payload_hash,
            "counters": counters,
            "lease_expires_at": now + dt.timedelta(seconds=lease_seconds),
            "updated_at": now,
        }
    }
    _add_source_inc(update, source_inc)
    return update


def _add_source_inc(update: dict[str, Any], source_inc: dict[str, float] | None) -> None:
    if source_inc:
        update["$inc"] = {f"source.{k}": v for k, v in source_inc.items() if v}


def finish_batch(
    coll: Collection,
    lease: Lease,
    *,
    progress: dict[str, Any] | None = None,
    timings: dict[str, float] | None = None,
    source_inc: dict[str, float] | None = None,
) -> bool:
    """Mark the batch done and free it.

    `progress` is the last checkpoint (processed, last_processed_id, payload_hash,
    counters), written in the same update; `timings` (seconds per phase) ride along.
    """
    now = now_utc()
    done: dict[str, Any] = {
        **(progress or {}),
        "status": BatchStatus.DONE.value,
        "lease_owner": None,
        "lease_expires_at": None,
        "finished_at": now,
        "updated_at": now,
    }
    if timings is not None:
        done["timings"] = timings
    update: dict[str, Any] = {"$set": done}
    _add_source_inc(update, source_inc)
    res = coll.update_one({**lease.guard(), **batch_guard(BatchStatus.DONE)}, update)
    return res.matched_count == 1


def release_batch(
    coll: Collection,
    lease: Lease,
    status: BatchStatus,
    *,
    error: str | None = None,
    retry_at: dt.datetime | None = None,
) -> bool:
    """Give the batch back (paused, cancelled, or a transient error to retry later)."""
    now = now_utc()
    update: dict[str, Any] = {
        "$set": {
            "status": status.value,
            "lease_owner": None,
            "lease_expires_at": None,
            "updated_at": now,
        }
    }
    if status is BatchStatus.QUEUED:
        update["$set"]["dispatched_at"] = retry_at or now
    else:
        # Handed back on a pause, cancel or an auth pause: this lease was no failed attempt.
        update["$inc"] = {"attempts": -1}
    if error:
        update["$push"] = {
            "errors": {"$each": [{"at": now, "error": error}], "$slice": -MAX_ERRORS_KEPT}
        }
    guard = {**lease.guard(), **batch_guard(status, BatchStatus.RUNNING)}
    return coll.update_one(guard, update).matched_count == 1


def fail_batch(coll: Collection, lease: Lease, error: str) -> bool:
    """Give up on the batch after its last attempt; the job goes on without it."""
    now = now_utc()
    res = coll.update_one(
        {**lease.guard(), **batch_guard(BatchStatus.FAILED, BatchStatus.RUNNING)},
        {
            "$set": {
                "status": BatchStatus.FAILED.value,
                "lease_owner": None,
                "lease_expires_at": None,
                "finished_at": now,
                "updated_at": now,
                "last_error": error,
            },
            "$push": {
                "errors": {"$each": [{"at": now, "error": error}], "$slice": -MAX_ERRORS_KEPT}
            },
        },
    )
    return res.matched_count == 1


def claim_pending(coll: Collection, job_id: str, cap: int | None = None) -> dict[str, Any] | None:
    """Move the lowest-numbered pending batch to queued, returning `_id`, `batch_no`, `status`.

    One findAndModify, sorted by `batch_no`. Callers hold the job's dispatch lock, or hand
    on the slot of a batch still running (backfill_engine.handoff); a concurrent cancel
    simply leaves nothing pending to claim. `cap` is the job's max_in_flight the claim was
    made under, kept on the batch as `dispatch_cap` so its own finish can tell whether the
    cap was lowered since.
    """
    now = now_utc()
    return coll.find_one_and_update(
        {"job_id": job_id, **batch_guard(BatchStatus.QUEUED, BatchStatus.PENDING)},
        {
            "$set": {
                "status": BatchStatus.QUEUED.value,
                "dispatched_at": now,
                "updated_at": now,
                "dispatch_cap": cap,
            }
        },
        projection={"batch_no": 1, "status": 1, "dispatched_at": 1},
        sort=[("batch_no", 1)],
        return_document=ReturnDocument.AFTER,
    )


def count_in_flight(coll: Collection, job_id: str) -> int:
    return coll.count_documents(
        {
            "job_id": job_id,
            "status": {"$in": [s.value for s in IN_FLIGHT_BATCH_STATES]},
        }
    )


def requeue_stale(coll: Collection, bid: str, expected: dict[str, Any]) -> bool:
    """Sweeper: mark a lost batch queued again, only if it is still in the state we saw.

    `expected` holds the `status` seen and what else must still hold (a token, an age).
    """
    seen = {k: v for k, v in expected.items() if k != "status"}
    guard = batch_guard(BatchStatus.QUEUED, BatchStatus(expected["status"]))
    now = now_utc()
    res = coll.update_one(
        {"_id": bid, **seen, **guard},
        {
            "$set": _queued_again(now),
            "$inc": {"times_recovered": 1},
        },
    )
    return res.matched_count == 1


# Jobs


def read_job(
    coll: Collection, job_id: str, fields: tuple[str, ...] | None = None
) -> dict[str, Any] | None:
    """The job document `job_id` (only `fields` if given); None if there is no such job.

    Filters on `_id` alone and checks `kind` here: workers read the job around every
    batch, and an exact `_id` lookup is the cheapest read there is.
    """
    projection = None if fields is None else dict.fromkeys((*fields, "kind"), 1)
    doc = coll.find_one({"_id": job_id}, projection)
    return doc if doc is not None and doc.get("kind") == "job" else None


def read_job_and_ids(
    coll: Collection, ids_coll: str, job_id: str, bid: str, fields: tuple[str, ...]
) -> tuple[dict[str, Any] | None, tuple[list[Any], list[Any]] | None]:
    """The job `job_id` (only `fields`) and batch `bid`'s ids and ambiguous ids.

    A batch's id list never changes once cut, so a worker reads it with the job before it
    takes the lease. Two point reads on `_id`, not one aggregation joining the id list on
    (`$unionWith`, `$lookup`): what those cost is up to the server's planner for a join's
    sub-pipeline, and a server that runs it as a scan pays per batch of every job in
    `backfill_metadata` (docs/benchmarks.md). Either part is None when there is no such
    document.
    """
    # On `_id` alone, and the id list whole: a second equality or a projection of the
    # 500-id array cost some servers more (docs/benchmarks.md), and leave nothing out here.
    job = coll.find_one({"_id": job_id}, dict.fromkeys((*fields, "kind"), 1))
    if job is None or job.get("kind") != "job":
        return None, None
    found = coll.database[ids_coll].find_one({"_id": bid})
    ids = None if found is None else (list(found["ids"]), list(found.get("ambiguous") or []))
    return job, ids


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
    """Per-item counters summed over the job's batches, plus documents planned and processed."""
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

    One pass over the job's batch documents instead of two: each pass reads every batch
    document of the job, which is most of what a poll costs the database.
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
    # `$in` the unfinished states rather than `$nin` the finished ones: `$in` gives the
    # (job_id, status) index exact bounds, `$nin` does not.
    unfinished = coll.count_documents(
        {"job_id": job_id, "status": {"$in": [s.value for s in UNFINISHED_BATCH_STATES]}},
        limit=1,
    )
    if unfinished:
        return None
    failed = coll.count_documents({"job_id": job_id, "status": BatchStatus.FAILED.value})
    quarantined = db_quarantine.count_documents({"job_id": job_id})
    final = JobStatus.COMPLETED_WITH_ERRORS if failed or quarantined else JobStatus.COMPLETED
    now = now_utc()
    res = coll.update_one(
        {"_id": job_id, "kind": "job", **job_guard(final)},
        {
            "$set": {"status": final.value, "finished_at": now, "updated_at": now},
            "$unset": {"active_key": ""},
        },
    )
    if res.modified_count:
        notify.job_event(coll.database, job_id, notify.Event(final.value))
    return final if res.modified_count else None


RESUME_ATTEMPTS = 3  # `planning.done` changes once, so the second round always settles it


def resume_job(coll: Collection, job_id: str) -> JobStatus | None:
    """Resume a paused job: `running` if its planning is done, else `planning`; None if
    it was not paused.

    Each attempt is one update guarded on both the status and `planning.done`, so a
    planner finishing meanwhile never leaves the job `planning` with nothing to plan
    (the planner's own last step moves only a `planning` job on to `running`).
    """
    for _ in range(RESUME_ATTEMPTS):
        for done, target in ((True, JobStatus.RUNNING), (False, JobStatus.PLANNING)):
            res = coll.update_one(
                {
                    "_id": job_id,
                    "kind": "job",
                    **job_guard(target, JobStatus.PAUSED),
                    "planning.done": done,
                },
                {
                    "$set": {"status": target.value, "updated_at": now_utc()},
                    "$unset": {"pause_reason": ""},
                },
            )
            if res.modified_count == 1:
                return target
        if job_status(coll, job_id) is not JobStatus.PAUSED:
            return None
    return None


def reset_failed_batches(coll: Collection, job_id: str) -> list[str]:
    """Failed batches of the job back to pending with fresh attempts; the ids reset.

    Done before the job is reopened (`reopen_job`): a completion check in between sees a
    job that is not running, or unfinished batches, and never ends the job on them.
    """
    failed = [
        d["_id"]
        for d in coll.find({"job_id": job_id, "status": BatchStatus.FAILED.value}, {"_id": 1})
    ]
    if failed:
        coll.update_many(
            {"_id": {"$in": failed}, **batch_guard(BatchStatus.PENDING, BatchStatus.FAILED)},
            {"$set": {"status": BatchStatus.PENDING.value, "attempts": 0, "updated_at": now_utc()}},
        )
    return failed


def refail_batches(coll: Collection, batch_ids: list[str]) -> None:
    """Undo `reset_failed_batches` when the job cannot be reopened (still pending: the job
    was not dispatchable, so nothing took them)."""
    coll.update_many(
        {"_id": {"$in": batch_ids}, **batch_guard(BatchStatus.FAILED, BatchStatus.PENDING)},
        {"$set": {"status": BatchStatus.FAILED.value, "updated_at": now_utc()}},
    )


REOPENABLE_JOB_STATES = (
    JobStatus.RUNNING,
    JobStatus.COMPLETED,
    JobStatus.COMPLETED_WITH_ERRORS,
    JobStatus.FAILED,
)


def reopen_job(coll: Collection, job_id: str, key: str) -> bool:
    """A running or ended job runs again, holding its own active `key`; False if it is in
    another state. Raises DuplicateKeyError when another active job holds `key`.

    `running` is included: a job seen running may have completed since it was read, and
    then it must run again for the batches just reset.
    """
    now = now_utc()
    res = coll.update_one(
        {"_id": job_id, "kind": "job", **job_guard(JobStatus.RUNNING, *REOPENABLE_JOB_STATES)},
        {
            "$set": {"status": JobStatus.RUNNING.value, "active_key": key, "updated_at": now},
            "$unset": {"finished_at": ""},
        },
    )
    return res.matched_count == 1


def pause_job(coll: Collection, job_id: str, reason: str) -> bool:
    """Pause a planning or running job with `reason`; False if it was in another state."""
    res = coll.update_one(
        {"_id": job_id, "kind": "job", **job_guard(JobStatus.PAUSED)},
        {
            "$set": {
                "status": JobStatus.PAUSED.value,
                "pause_reason": reason,
                "updated_at": now_utc(),
            }
        },
    )
    return res.modified_count == 1


def pause_job_for(coll: Collection, job_id: str, reason: str) -> bool:
    """Pause a running job on a condition only an operator can fix (e.g. an API answers 401)."""
    if not pause_job(coll, job_id, reason):
        return False
    notify.job_event(coll.database, job_id, notify.Event.PAUSED, reason=reason)
    return True


def finish_planning(coll: Collection, job_id: str) -> bool:
    """Planning is over: a `planning` job runs on; a paused one stays paused (resume_job
    then sees `planning.done` and resumes it running)."""
    res = coll.update_one(
        {"_id": job_id, "kind": "job", **job_guard(JobStatus.RUNNING, JobStatus.PLANNING)},
        {"$set": {"status": JobStatus.RUNNING.value, "updated_at": now_utc()}},
    )
    return res.modified_count == 1


def _cancel_untaken_batches(coll: Collection, job_id: str, now: dt.datetime) -> None:
    # Running batches are their lease holder's to hand back: they stop at their next
    # sub-chunk, seeing the job's status.
    coll.update_many(
        {
            "job_id": job_id,
            **batch_guard(BatchStatus.CANCELLED, BatchStatus.PENDING, BatchStatus.QUEUED),
        },
        {"$set": {"status": BatchStatus.CANCELLED.value, "updated_at": now}},
    )


def forget_lacking(coll: Collection, job_id: str, worker: str) -> None:
    """`worker` can run the job's backfill now: drop what the job recorded it lacked."""
    coll.update_one(
        {"_id": job_id, "kind": "job"},
        {
            "$pull": {
                "workers_lacking_settings": {"$regex": f"^{re.escape(worker)}: "},
                "unknown_to_workers": worker,
            }
        },
    )


def cancel_job(coll: Collection, job_id: str) -> bool:
    """Stop an active job for good; False if it was not active. Batches not yet taken are
    cancelled with it; the `active_key` goes, so the backfill can run again."""
    now = now_utc()
    res = coll.update_one(
        {"_id": job_id, "kind": "job", **job_guard(JobStatus.CANCELLED)},
        {
            "$set": {"status": JobStatus.CANCELLED.value, "finished_at": now, "updated_at": now},
            "$unset": {"active_key": ""},
        },
    )
    if res.matched_count != 1:
        return False
    _cancel_untaken_batches(coll, job_id, now)
    return True


def tune_job(
    coll: Collection, job_id: str, states: tuple[JobStatus, ...], update: dict[str, Any]
) -> bool:
    """Apply `update` (rate, cap, batch size: never the status) to the job if it is in one of
    `states`; False otherwise."""
    if "status" in update.get("$set", {}) or "status" in update.get("$unset", {}):
        raise ValueError("tune_job changes no status: use the transition's own function")
    res = coll.update_one(
        {"_id": job_id, "kind": "job", "status": {"$in": [s.value for s in states]}},
        {**update, "$currentDate": {"updated_at": True}},
    )
    return res.matched_count == 1


def fail_job(coll: Collection, job_id: str, reason: str) -> bool:
    """End an active job `failed` with `reason`: it can never go on (e.g. it cannot be planned).

    Batches not yet taken are cancelled; running ones stop at their next sub-chunk, as on a
    cancel. The `active_key` goes, so a corrected run can start beside the failed one.
    """
    now = now_utc()
    res = coll.update_one(
        {"_id": job_id, "kind": "job", **job_guard(JobStatus.FAILED)},
        {
            "$set": {
                "status": JobStatus.FAILED.value,
                "fail_reason": reason,
                "planner": None,
                "finished_at": now,
                "updated_at": now,
            },
            "$unset": {"active_key": ""},
        },
    )
    if res.modified_count != 1:
        return False
    _cancel_untaken_batches(coll, job_id, now)
    notify.job_event(coll.database, job_id, notify.Event.FAILED, reason=reason)
    return True
