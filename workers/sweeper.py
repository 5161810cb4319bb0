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
from pymongo.database import Database

from workers import batches
from workers.batches import now_utc
from workers.dispatch import TaskSender, fill_in_flight, send_batch
from workers.jobstate import maybe_complete_job
from workers.states import METADATA, QUARANTINE, BatchStatus, JobStatus

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
    job = meta.find_one({"_id": job_id, "kind": "job"}, {"status": 1})
    if job is None or job["status"] not in (JobStatus.PLANNING.value, JobStatus.RUNNING.value):
        return report
    now = now_utc()
    for doc in meta.find(
        {
            "job_id": job_id,
            "status": BatchStatus.RUNNING.value,
            "lease_expires_at": {"$lt": now},
        },
        {"batch_no": 1, "fencing_token": 1},
    ):
        expected = {"status": BatchStatus.RUNNING.value, "fencing_token": doc["fencing_token"]}
        if batches.requeue_stale(meta, doc["_id"], expected):
            send_batch(sender, queue, job_id, int(doc["batch_no"]))
            report.expired_leases += 1

    queue_len = broker_queue_length(broker, queue)
    stale_before = now - dt.timedelta(seconds=redispatch_seconds)
    if queue_len == 0:
        # Nothing is waiting in the broker, so a queued batch not yet leased lost its message.
        stale_before = max(stale_before, now - dt.timedelta(seconds=EMPTY_QUEUE_GRACE_SECONDS))
    for doc in meta.find(
        {
            "job_id": job_id,
            "status": BatchStatus.QUEUED.value,
            "dispatched_at": {"$lt": stale_before},
        },
        {"batch_no": 1, "dispatched_at": 1},
    ):
        expected = {"status": BatchStatus.QUEUED.value, "dispatched_at": doc["dispatched_at"]}
        if batches.requeue_stale(meta, doc["_id"], expected):
            send_batch(sender, queue, job_id, int(doc["batch_no"]))
            report.resent += 1

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
