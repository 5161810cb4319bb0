"""Revert jobs: a job of the engine that puts back what another job (`reverts`) changed.

A revert job is a job like any other (leased batches, checkpoints, pause, resume, cancel,
progress, notices), with `reverts: JOB` and JOB's collection. Its batches are cut from
JOB's before-image journal, not from the collection: revert batch k covers the documents
one batch of JOB journaled (`reverts_batch`), so a revert batch reads one batch's journal
through its index. Planning is resumable like the planner's: batch documents have
deterministic ids, and an id list written before its batch document is finished as cut.
Its workers run backfill_engine.revert_step, never journaling their own writes.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Any

import bson
import pymongo.errors
from pymongo.database import Database

from backfill_engine import journal, store
from backfill_engine.dispatch import TaskSender, fill_in_flight
from backfill_engine.errors import BackfillError
from backfill_engine.id_lists import ID_LIST_FIELD, drop_ids, store_ids, stream_ids
from backfill_engine.revert_step import REVERT_COUNTERS
from backfill_engine.states import (
    ACTIVE_JOB_STATES,
    BATCH_IDS,
    METADATA,
    QUARANTINE,
    TERMINAL_JOB_STATES,
    JobStatus,
)
from backfill_engine.store import batch_id, batch_ids_doc, new_batch, now_utc


class RevertRefusedError(BackfillError):
    """A job that cannot be reverted (still active, a revert itself, without a journal)."""

    def __init__(self, job_id: str, problem: str) -> None:
        self.job_id = job_id
        super().__init__(f"cannot revert job {job_id}: {problem}")


class RetryRefusedError(BackfillError):
    """A job that must not be retried: a revert is undoing it, or has undone it."""

    def __init__(self, job_id: str, revert_id: str, status: str) -> None:
        self.job_id, self.revert_id, self.status = job_id, revert_id, status
        if status in {s.value for s in ACTIVE_JOB_STATES}:
            then = f"is {status}; cancel it (`backfill cancel {revert_id}`) first"
        else:
            then = f"ended {status}; `backfill run` starts a new job if the values should come back"
        super().__init__(
            f"cannot retry job {job_id}: it was reverted (revert job {revert_id} {then}), and a "
            "retry would write again what the revert undid"
        )


def check_retryable(db: Database, job: dict[str, Any]) -> None:
    """Refuse, in one line, to retry a job whose revert runs or ran (unless it was cancelled)."""
    revert = db[METADATA].find_one(
        {"kind": "job", "reverts": job["_id"], "status": {"$ne": JobStatus.CANCELLED.value}},
        {"status": 1},
        sort=[("created_at", -1)],
    )
    if revert is not None:
        raise RetryRefusedError(str(job["_id"]), str(revert["_id"]), str(revert["status"]))


def revert_key(job_id: str) -> str:
    """The active key of a revert of `job_id`: two reverts of one job join one revert job."""
    return f"revert:{job_id}"


def check_revertable(job: dict[str, Any]) -> None:
    """Refuse, in one line, a job a revert must not run over yet (or at all)."""
    job_id, status = str(job["_id"]), str(job["status"])
    if job.get("reverts"):
        raise RevertRefusedError(job_id, f"it is itself the revert of {job['reverts']}")
    if status in {s.value for s in ACTIVE_JOB_STATES}:
        raise RevertRefusedError(
            job_id,
            f"it is still {status}; cancel it (`backfill cancel {job_id}`) or let it finish first",
        )


def start_revert(
    db: Database,
    job: dict[str, Any],
    *,
    max_in_flight: int,
    batch_size: int,
    ids: Sequence[Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Create the revert job of `job`, or return the active one; (revert job, created).

    `ids` limits the revert to those documents (`--ids-file`); the list is kept beside the
    job (backfill_engine.id_lists) until planning has cut every batch.
    """
    from backfill_engine.planner import new_job_id

    key = revert_key(str(job["_id"]))
    revert_id = new_job_id(f"{job['backfill']}-revert")
    doc = store.new_job(
        revert_id,
        backfill=job["backfill"],
        key=key,
        batch_size=batch_size,
        max_in_flight=max_in_flight,
        rate_per_second=float(job.get("rate_per_second") or 1.0),
        collection=job["collection"],
        string_keyed=False,
    )
    doc["reverts"] = job["_id"]
    doc["journal"] = False  # its writes are never journaled
    if ids is not None:
        doc[ID_LIST_FIELD] = store_ids(db, revert_id, ids)
    try:
        db[METADATA].insert_one(doc)
        return doc, True
    except pymongo.errors.DuplicateKeyError:
        if ids is not None:
            drop_ids(db, revert_id)
        existing = db[METADATA].find_one({"kind": "job", "active_key": key})
        if existing is None:  # it ended between our insert and this read: try once more
            cap, size = max_in_flight, batch_size
            return start_revert(db, job, max_in_flight=cap, batch_size=size, ids=ids)
        return existing, False


def _id_key(value: Any) -> bytes:
    """An id as BSON compares it: 1, 1.0 and True are three ids."""
    return bson.encode({"v": value})


def revert_batch(job_id: str, batch_no: int, ids: list[Any], source: int) -> dict[str, Any]:
    """A revert batch document: a batch (backfill_engine.store) naming the batch it reverts."""
    doc = new_batch(job_id, batch_no, ids)
    doc["reverts_batch"] = source
    doc["counters"] = {**doc["counters"], **dict.fromkeys(REVERT_COUNTERS, 0)}
    return doc


def plan_revert(db: Database, sender: TaskSender, queue: str, job_id: str) -> bool:
    """Cut the revert job's remaining batches from its journal and dispatch them.

    False if another planner cut a batch first (it carries on); True once planning is done.
    """
    meta, id_lists = db[METADATA], db[BATCH_IDS]
    job = meta.find_one({"_id": job_id, "kind": "job"})
    if job is None or job["status"] in {s.value for s in TERMINAL_JOB_STATES}:
        return True
    if job["planning"].get("done"):
        return True
    reverts = str(job["reverts"])
    listed = stream_ids(db, job)
    wanted = None if listed is None else {_id_key(i) for i in listed}
    last = meta.find_one(
        {"job_id": job_id}, {"batch_no": 1, "reverts_batch": 1}, sort=[("batch_no", -1)]
    )
    next_no = int(last["batch_no"]) + 1 if last else 0
    after = int(last["reverts_batch"]) if last else -1
    planned = sum(d["size"] for d in meta.find({"job_id": job_id}, {"size": 1}))
    orphan = id_lists.find_one({"_id": batch_id(job_id, next_no)})
    if orphan is not None:
        # Killed between writing a batch's ids and its document: finish that batch as cut.
        _insert(db, revert_batch(job_id, next_no, orphan["ids"], int(orphan["reverts_batch"])))
        after, next_no = int(orphan["reverts_batch"]), next_no + 1
        planned += len(orphan["ids"])
    filling = True
    sources = sorted(int(n) for n in db[journal.JOURNAL].distinct("batch_no", {"job_id": reverts}))
    for source in (n for n in sources if n > after):
        ids = list(journal.batch_changes(db, reverts, source))
        if wanted is not None:
            ids = [i for i in ids if _id_key(i) in wanted]
        if not ids:
            continue
        ids_doc = {**batch_ids_doc(job_id, next_no, ids), "reverts_batch": source}
        try:
            id_lists.insert_one(ids_doc)
        except pymongo.errors.DuplicateKeyError:
            return False  # another planner cut this batch; it goes on
        _insert(db, revert_batch(job_id, next_no, ids, source))
        planned += len(ids)
        next_no += 1
        meta.update_one(
            {"_id": job_id},
            {
                "$set": {
                    "planning.cursor": source,
                    "planning.batches": next_no,
                    "planning.items": planned,
                    "updated_at": now_utc(),
                }
            },
        )
        if filling:
            filling = fill_in_flight(meta, sender, queue, job_id) > 0
        if store.job_status(meta, job_id) is JobStatus.CANCELLED:
            return True
    meta.update_one(
        {"_id": job_id},
        {
            "$set": {
                "planning.done": True,
                "planning.batches": next_no,
                "planning.items": planned,
                "updated_at": now_utc(),
            }
        },
    )
    store.finish_planning(meta, job_id)
    fill_in_flight(meta, sender, queue, job_id)
    # Nothing journaled (or nothing in the id list): the job is done as soon as it is planned.
    store.maybe_complete_job(meta, db[QUARANTINE], job_id)
    return True


def _insert(db: Database, doc: dict[str, Any]) -> None:
    # A duplicate key means this batch document was written before a crash: keep it.
    with contextlib.suppress(pymongo.errors.DuplicateKeyError):
        db[METADATA].insert_one(doc)


def revert_totals(db: Database, job_id: str) -> dict[str, int]:
    """The revert counters summed over the revert job's batches (field values)."""
    group: dict[str, Any] = {"_id": None}
    for name in REVERT_COUNTERS:
        group[name] = {"$sum": f"$counters.{name}"}
    rows = list(db[METADATA].aggregate([{"$match": {"job_id": job_id}}, {"$group": group}]))
    totals = dict.fromkeys(REVERT_COUNTERS, 0)
    if rows:
        totals.update({k: int(rows[0].get(k) or 0) for k in REVERT_COUNTERS})
    return totals


__all__ = [
    "RetryRefusedError",
    "RevertRefusedError",
    "check_retryable",
    "check_revertable",
    "plan_revert",
    "revert_batch",
    "revert_key",
    "revert_totals",
    "start_revert",
]
