"""Hand batches to the broker while keeping at most `max_in_flight` queued or running per job."""

from __future__ import annotations

import datetime as dt
import logging
import time
import uuid
from typing import Any, Protocol

import kombu.exceptions
import pymongo.errors
import redis
from pymongo.collection import Collection

from backfill_engine.states import DISPATCHABLE_JOB_STATES
from backfill_engine.store import claim_pending, count_in_flight, now_utc

log = logging.getLogger(__name__)

BATCH_TASK_NAME = "backfill.batch"
DISPATCH_LOCK_SECONDS = 15.0
LOCK_ATTEMPTS = 5
LOCK_RETRY_SLEEP = 0.05


# What a server outage raises: MongoDB, Redis directly, and Redis behind Celery's send_task
# (kombu's OperationalError is not a RedisError). A loop that must outlive an outage
# catches these.
SERVER_OUTAGES: tuple[type[BaseException], ...] = (
    pymongo.errors.PyMongoError,
    redis.RedisError,
    kombu.exceptions.OperationalError,
    ConnectionError,
)


BROKER_OUTAGES: tuple[type[BaseException], ...] = (
    redis.RedisError,
    kombu.exceptions.OperationalError,
)


class TaskSender(Protocol):
    def send_task(self, name: str, args: Any = ..., **options: Any) -> Any: ...


def task_title(job_id: str, batch_no: int, total: int | None = None) -> str:
    """The name Flower shows for a batch task: `batch 12/40 of <job>` (1-based; `?` = planning)."""
    return f"batch {batch_no + 1}/{'?' if total is None else total} of {job_id}"


def send_batch(
    app: TaskSender,
    queue: str,
    job_id: str,
    batch_no: int,
    countdown: float = 0,
    *,
    total: int | None = None,
) -> None:
    """Publish one batch task; only ids travel, never data or credentials.

    `total` is the job's batch count once planning is done; the title Flower shows
    (Celery's `shadow`) says `?` until then. Workers still run `backfill.batch`.
    """
    options: dict[str, Any] = {"queue": queue, "shadow": task_title(job_id, batch_no, total)}
    if countdown > 0:
        options["countdown"] = countdown
    app.send_task(BATCH_TASK_NAME, args=[job_id, batch_no], **options)


def planned_total(job: dict[str, Any]) -> int | None:
    """The job's batch count when planning has finished; None while batches are still cut."""
    planning = job.get("planning") or {}
    return int(planning["batches"]) if planning.get("done") else None


JOB_FIELDS = ("status", "max_in_flight", "planning")  # what a fill reads with its lock


def _take_dispatch_lock(coll: Collection, job_id: str, token: str) -> dict[str, Any] | None:
    """Take the job's dispatch lock; the job (JOB_FIELDS) if taken, None if someone holds it.

    Free means `dispatch_lock_until` null or past (the drop clears it), said as one `$not`
    on that field: an `_id` equality plus one condition, no top-level `$or`. One
    findAndModify takes the lock and reads the job the fill needs.
    """
    now = now_utc()
    return coll.find_one_and_update(
        {"_id": job_id, "kind": "job", "dispatch_lock_until": {"$not": {"$gte": now}}},
        {
            "$set": {
                "dispatch_lock": token,
                "dispatch_lock_until": now + dt.timedelta(seconds=DISPATCH_LOCK_SECONDS),
            }
        },
        projection=dict.fromkeys(JOB_FIELDS, 1),
    )


def _drop_dispatch_lock(coll: Collection, job_id: str, token: str) -> None:
    coll.update_one(
        {"_id": job_id, "dispatch_lock": token},
        {"$set": {"dispatch_lock": None, "dispatch_lock_until": None}},
    )


def fill_in_flight(coll: Collection, app: TaskSender, queue: str, job_id: str) -> int:
    """Queue pending batches until the job's in-flight cap is reached; return how many were sent.

    Counting and claiming happen under a short per-job lock so two dispatchers (workers
    finishing batches, the orchestrator) cannot both see a free slot and overshoot the cap.
    """
    token = uuid.uuid4().hex
    job = _take_dispatch_lock(coll, job_id, token)
    for _ in range(LOCK_ATTEMPTS - 1):
        if job is not None:
            break
        time.sleep(LOCK_RETRY_SLEEP)
        job = _take_dispatch_lock(coll, job_id, token)
    if job is None:
        return 0  # someone else is dispatching right now (they fill the slots), or no job
    sent = 0
    try:
        if job["status"] not in [s.value for s in DISPATCHABLE_JOB_STATES]:
            return 0
        total = planned_total(job)
        cap = int(job["max_in_flight"])
        free = cap - count_in_flight(coll, job_id)
        while free > 0:
            batch = claim_pending(coll, job_id, cap)
            if batch is None:
                break
            send_batch(app, queue, job_id, int(batch["batch_no"]), total=total)
            sent += 1
            free -= 1
    finally:
        _drop_dispatch_lock(coll, job_id, token)
    if sent:
        log.debug("dispatched %d batches", sent, extra={"job_id": job_id})
    return sent
