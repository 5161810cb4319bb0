"""Job control verbs: list, describe, pause, resume, cancel, retry, set; each one guarded update."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pymongo.errors
from pymongo.database import Database

from backfill_engine.dispatch import TaskSender, fill_in_flight
from backfill_engine.notify import Event
from backfill_engine.states import ACTIVE_JOB_STATES, METADATA, QUARANTINE, BatchStatus, JobStatus
from backfill_engine.store import (
    batch_summary,
    cancel_job,
    now_utc,
    pause_job,
    refail_batches,
    reopen_job,
    reset_failed_batches,
    resume_job,
    tune_job,
)
from orchestrator.errors import BackfillError, JobNotFoundError, JobStateError
from orchestrator.job_events import changed
from orchestrator.tuning import tuning_update

TUNABLE_JOB_STATES = ACTIVE_JOB_STATES
OPERATOR_PAUSE = "paused by operator"
REOPEN_ATTEMPTS = 3  # planning -> running happens once, so the second reopen settles it


def get_job(db: Database, job_id: str) -> dict[str, Any]:
    job = db[METADATA].find_one({"_id": job_id, "kind": "job"})
    if job is None:
        raise JobNotFoundError(job_id)
    return job


def list_jobs(db: Database, limit: int = 20) -> list[dict[str, Any]]:
    """Newest jobs first."""
    return list(
        db[METADATA]
        .find({"kind": "job"}, {"dispatch_lock": 0, "params.ids": 0, "audit": 0})
        .sort("created_at", -1)
        .limit(limit)
    )


@dataclass
class JobSummary:
    """Everything `backfill status` shows, also as JSON."""

    job: dict[str, Any]
    batches: dict[str, int]
    items: dict[str, int]
    quarantined: int

    def as_dict(self) -> dict[str, Any]:
        job = {k: v for k, v in self.job.items() if k not in ("dispatch_lock", "params")}
        return {
            "job": job,
            "params": {k: v for k, v in self.job.get("params", {}).items() if k != "ids"},
            "batches": self.batches,
            "items": self.items,
            "quarantined": self.quarantined,
        }


def summarize(db: Database, job_id: str, job: dict[str, Any] | None = None) -> JobSummary:
    """The job (as read now, or `job` if just read) with its batch counts and totals."""
    job = job if job is not None else get_job(db, job_id)
    batches, items = batch_summary(db[METADATA], job_id)
    return JobSummary(
        job=job,
        batches=batches,
        items=items,
        quarantined=db[QUARANTINE].count_documents({"job_id": job_id}),
    )


def _refused(db: Database, job_id: str, verb: str) -> JobStateError:
    """Why `verb` matched nothing: no such job (raised here), or the state it is in."""
    return JobStateError(job_id, get_job(db, job_id)["status"], verb)


def pause(db: Database, job_id: str) -> dict[str, Any]:
    """No new batches start; running ones stop at their next sub-chunk and keep their checkpoint."""
    if not pause_job(db[METADATA], job_id, OPERATOR_PAUSE):
        raise _refused(db, job_id, "pause")
    job = get_job(db, job_id)
    changed(db, job_id, "pause", event=Event.PAUSED, reason=OPERATOR_PAUSE)
    return job


def resume(db: Database, sender: TaskSender, queue: str, job_id: str) -> dict[str, Any]:
    """Continue a paused job from its checkpoints."""
    if resume_job(db[METADATA], job_id) is None:
        raise _refused(db, job_id, "resume")
    job = get_job(db, job_id)
    changed(db, job_id, "resume", event=Event.RESUMED)
    # Batches a paused worker handed back are pending again; queued ones keep their message.
    fill_in_flight(db[METADATA], sender, queue, job_id)
    return job


def cancel(db: Database, job_id: str) -> dict[str, Any]:
    """Stop for good: pending batches are cancelled, running ones stop at their next sub-chunk."""
    if not cancel_job(db[METADATA], job_id):
        raise _refused(db, job_id, "cancel")
    job = get_job(db, job_id)
    changed(db, job_id, "cancel", event=Event.CANCELLED)
    return job


@dataclass
class RetryReport:
    job_id: str
    batches_reset: int
    replay_job_id: str | None
    replayed_items: int


def retry(
    db: Database,
    sender: TaskSender,
    queue: str,
    job_id: str,
    *,
    start_replay: Any,
) -> RetryReport:
    """Re-run failed batches in place, and replay quarantined items as a job of their own.

    `start_replay(ids, source_job)` creates and plans a new replay job holding exactly
    `ids` (the orchestrator's planner), returning its id.
    """
    meta = db[METADATA]
    job = get_job(db, job_id)
    from backfill_engine.revert_plan import check_retryable  # a revert undid what it wrote

    check_retryable(db, job)
    failed = meta.count_documents({"job_id": job_id, "status": BatchStatus.FAILED.value})
    if failed:
        if job["status"] == JobStatus.CANCELLED.value:
            raise JobStateError(job_id, job["status"], "retry")
        failed = _rerun_failed(db, job)
        fill_in_flight(meta, sender, queue, job_id)

    quarantine = db[QUARANTINE]
    ids = [
        d["item_id"]
        for d in quarantine.find({"job_id": job_id, "replayed": False}, {"item_id": 1}).sort(
            "item_id", 1
        )
    ]
    replay_id = None
    marked = 0
    if ids:
        replay_id = start_replay(ids, job_id)
        # Exactly the ids the replay job got: an item quarantined since the read above is
        # not in it, and must stay unreplayed for the next retry.
        marked = quarantine.update_many(
            {"job_id": job_id, "item_id": {"$in": ids}, "replayed": False},
            {"$set": {"replayed": True, "replay_job_id": replay_id, "updated_at": now_utc()}},
        ).modified_count
    if not failed and not ids:
        raise BackfillError(f"job {job_id} has no failed batches and no quarantined items to retry")
    changed(
        db, job_id, "retry", {"batches_reset": failed, "replay_job": replay_id, "items": marked}
    )
    return RetryReport(job_id, failed, replay_id, marked)


def _rerun_failed(db: Database, job: dict[str, Any]) -> int:
    """Reset the job's failed batches, then reopen the job under its own key; how many.

    In that order: a completion check between the two sees an ended job (or a running one
    with unfinished batches) and ends nothing. When the key is taken, the batches go back
    to failed before the refusal.
    """
    meta, job_id = db[METADATA], str(job["_id"])
    reset = reset_failed_batches(meta, job_id)
    key = own_key(job)
    # Whatever status was read: a job read `planning` may have ended since, and one that
    # was planning when the reopen missed may be running now.
    for _ in range(REOPEN_ATTEMPTS):
        try:
            if reopen_job(meta, job_id, key):
                return len(reset)
        except pymongo.errors.DuplicateKeyError:
            refail_batches(meta, reset)
            what = job["backfill"] if key == job["backfill"] else key
            raise BackfillError(f"cannot retry {job_id}: another {what} job is active") from None
        status = get_job(db, job_id)["status"]
        if status in (JobStatus.PLANNING.value, JobStatus.PAUSED.value):
            # Planning moves it on, or resume; the reset batches keep it from completing.
            return len(reset)
        if status == JobStatus.CANCELLED.value:
            break
    refail_batches(meta, reset)
    raise JobStateError(job_id, get_job(db, job_id)["status"], "retry")


def own_key(job: dict[str, Any]) -> str:
    """The active key the job held while it ran: the backfill's name only for a main job.

    Jobs record it (`exclusive_key`); for one from an earlier release the options of its
    `run` audit entry tell a main job from a slice, an ids file or a replay. A job whose
    kind cannot be told gets a key of its own: a slice must never hold the main key.
    """
    if job.get("exclusive_key"):
        return str(job["exclusive_key"])
    backfill, job_id = str(job["backfill"]), str(job["_id"])
    run = next((e for e in job.get("audit") or [] if e.get("verb") == "run"), None)
    opts = (run or {}).get("params") or {}
    params = job.get("params") or {}
    if params.get("ids") or job.get("ids") or params.get("replay_of"):
        return f"{backfill}:retried:{job_id}"
    if run and not opts.get("scope") and opts.get("limit") is None and opts.get("ids") is None:
        return backfill
    return f"{backfill}:retried:{job_id}"


def quarantined_items(db: Database, job_id: str, limit: int = 50) -> list[dict[str, Any]]:
    """The first `limit` quarantined items of the job, by item id."""
    return list(iter_quarantined(db, job_id, limit))


def iter_quarantined(
    db: Database, job_id: str, limit: int | None = None
) -> Iterator[dict[str, Any]]:
    """The job's quarantined items by item id (all of them unless `limit`), streamed."""
    get_job(db, job_id)
    found = db[QUARANTINE].find({"job_id": job_id}, {"_id": 0}).sort("item_id", 1)
    return iter(found if limit is None else found.limit(limit))


def count_quarantined(db: Database, job_id: str) -> int:
    return db[QUARANTINE].count_documents({"job_id": job_id})


def set_job(
    db: Database,
    job_id: str,
    *,
    rate: str | float | None = None,
    max_in_flight: int | None = None,
    batch_size: int | None = None,
    definitions: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Change a running or paused job's rate (`50/s`, `auto`, `auto:200/s`), cap or batch size;
    the job as it is now (see `tune` for what changed)."""
    return tune(
        db,
        job_id,
        rate=rate,
        max_in_flight=max_in_flight,
        batch_size=batch_size,
        definitions=definitions,
    )[0]


def tune(
    db: Database,
    job_id: str,
    *,
    rate: str | float | None = None,
    max_in_flight: int | None = None,
    batch_size: int | None = None,
    definitions: dict[str, Any] | None = None,
) -> tuple[dict[str, Any], dict[str, Any]]:
    """`set_job`, returning (job, {field: {"from": old, "to": new}}); the change is audited.

    Workers pick each up as they next read the job: dispatch reads the cap on every fill,
    a batch reads the rate when it starts, the planner the batch size after every group of cuts.
    """
    job = get_job(db, job_id)
    update, changes = tuning_update(
        job, rate=rate, max_in_flight=max_in_flight, batch_size=batch_size, definitions=definitions
    )
    if not tune_job(db[METADATA], job_id, TUNABLE_JOB_STATES, update):
        raise _refused(db, job_id, "set")
    changed(db, job_id, "set", changes)
    return get_job(db, job_id), changes
