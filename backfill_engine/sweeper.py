"""Recover work the broker lost: expired leases and queued batches nobody picked up.

Redis may restart without persistence and workers may die with messages unacked; the
batch documents in MongoDB are the truth, so anything they say is in flight but that no
live worker holds is sent again. A duplicate delivery is harmless: the lease decides.
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

import redis
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import store
from backfill_engine.dispatch import TaskSender, fill_in_flight, planned_total, send_batch
from backfill_engine.states import METADATA, QUARANTINE, BatchStatus, JobStatus
from backfill_engine.store import maybe_complete_job, now_utc

log = logging.getLogger(__name__)

# A queued batch whose message is gone is resent this soon when the broker queue is empty.
EMPTY_QUEUE_GRACE_SECONDS = 5.0


@dataclass
class SweepReport:
    expired_leases: int = 0
    resent: int = 0
    dispatched: int = 0
    final_status: JobStatus | None = None


def broker_queue_length(client: redis.Redis | None, queue: str) -> int | None:
    """Messages waiting in the Redis list of `queue`, or None when unknown."""
    if client is None:
        return None
    try:
        return int(client.llen(queue))
    except redis.RedisError:
        return None


def _requeue(
    meta: Collection,
    sender: TaskSender,
    queue: str,
    job_id: str,
    status: BatchStatus,
    older_field: str,
    before: dt.datetime,
    guard_field: str,
    total: int | None = None,
) -> int:
    """Re-send every `status` batch whose `older_field` is before `before`; return how many."""
    sent = 0
    for doc in meta.find(
        {"job_id": job_id, "status": status.value, older_field: {"$lt": before}},
        {"batch_no": 1, guard_field: 1},
    ):
        # Still older at the moment of the update: a lease renewed between the find and
        # here is live again and must not be revoked under its worker.
        expected = {
            "status": status.value,
            guard_field: doc[guard_field],
            older_field: {"$lt": before},
        }
        if store.requeue_stale(meta, doc["_id"], expected):
            send_batch(sender, queue, job_id, int(doc["batch_no"]), total=total)
            sent += 1
    return sent


def sweep_job(
    db: Database,
    sender: TaskSender,
    queue: str,
    job_id: str,
    *,
    redispatch_seconds: float,
    broker: redis.Redis | None = None,
) -> SweepReport:
    """One sweep of a job: requeue expired leases and lost messages, then top up in-flight."""
    meta = db[METADATA]
    report = SweepReport()
    job = meta.find_one({"_id": job_id, "kind": "job"}, {"status": 1, "planning": 1})
    if job is None or job["status"] not in (JobStatus.PLANNING.value, JobStatus.RUNNING.value):
        return report
    now = now_utc()
    # A running batch whose lease expired: its worker died (guard: nobody leased it since).
    report.expired_leases = _requeue(
        meta,
        sender,
        queue,
        job_id,
        BatchStatus.RUNNING,
        "lease_expires_at",
        now,
        "fencing_token",
        planned_total(job),
    )

    queue_len = broker_queue_length(broker, queue)
    stale_before = now - dt.timedelta(seconds=redispatch_seconds)
    if queue_len == 0:
        # Nothing is waiting in the broker, so a queued batch not yet leased lost its message.
        stale_before = max(stale_before, now - dt.timedelta(seconds=EMPTY_QUEUE_GRACE_SECONDS))
    # A queued batch nobody leased: its message was lost (guard: not re-dispatched since).
    report.resent = _requeue(
        meta,
        sender,
        queue,
        job_id,
        BatchStatus.QUEUED,
        "dispatched_at",
        stale_before,
        "dispatched_at",
        planned_total(job),
    )

    if report.expired_leases or report.resent:
        log.warning(
            "job %s: re-sent %d batches with expired leases and %d lost messages",
            job_id,
            report.expired_leases,
            report.resent,
        )
        meta.update_one(
            {"_id": job_id},
            {
                "$inc": {
                    "times_interrupted": report.expired_leases,
                    "messages_resent": report.resent,
                }
            },
        )
    report.dispatched = fill_in_flight(meta, sender, queue, job_id)
    report.final_status = maybe_complete_job(meta, db[QUARANTINE], job_id)
    return report
