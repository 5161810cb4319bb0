"""Recover work the broker lost: expired leases and queued batches nobody picked up.

Redis may restart without persistence and workers may die with messages unacked; the
batch documents in MongoDB are the truth, so anything they say is in flight but that no
live worker holds is sent again. A duplicate delivery is harmless: the lease decides.

Each job is swept on its own: one job whose planning or sweep raises (a scope the server
rejects, an `_id` no batch can carry, a document we did not foresee) is logged and never
keeps the other jobs' leases, lost messages and notices waiting.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial

import kombu.exceptions
import pymongo.errors
import redis
from pymongo.collection import Collection
from pymongo.database import Database

from backfill_engine import notify, store
from backfill_engine.dispatch import TaskSender, fill_in_flight, planned_total, send_batch
from backfill_engine.errors import BackfillError
from backfill_engine.planner import plan_job
from backfill_engine.redact import redact_text
from backfill_engine.states import (
    DISPATCHABLE_JOB_STATES,
    METADATA,
    QUARANTINE,
    BatchStatus,
    JobStatus,
)
from backfill_engine.store import maybe_complete_job, now_utc

log = logging.getLogger(__name__)

# The servers themselves do not answer: every job would fail alike, so the round ends and
# the caller (backfill_workers.background) logs the outage once.
SERVER_OUTAGES: tuple[type[BaseException], ...] = (
    pymongo.errors.ConnectionFailure,
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
    ConnectionError,
)
BROKER_OUTAGES: tuple[type[BaseException], ...] = (
    redis.ConnectionError,
    redis.TimeoutError,
    kombu.exceptions.OperationalError,
)

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
    if job is None or job["status"] not in DISPATCHABLE_JOB_STATES:
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


class SweepFailures:
    """What each job's sweep last failed with, so a failure that repeats is logged once."""

    def __init__(self) -> None:
        self._last: dict[tuple[str, str], str] = {}

    def failed(self, job_id: str, step: str, exc: Exception) -> None:
        what = type(exc).__name__
        if self._last.get((job_id, step)) == what:
            return
        self._last[(job_id, step)] = what
        if isinstance(exc, BackfillError | pymongo.errors.PyMongoError):
            detail = redact_text(str(exc).splitlines()[0][:300]) if str(exc) else ""
            log.warning("job %s: %s failed (%s: %s); other jobs go on", job_id, step, what, detail)
        else:
            log.exception("job %s: %s failed unexpectedly; other jobs go on", job_id, step)

    def succeeded(self, job_id: str, step: str) -> None:
        if self._last.pop((job_id, step), None) is not None:
            log.warning("job %s: %s works again", job_id, step)


def sweep_lock_key(queue: str) -> str:
    """The Redis key a queue's sweeper holds for one sweep interval (backfill_workers.autosweep)."""
    return f"backfill:sweep:{queue}"


def swept_lately(rds: redis.Redis, queue: str) -> bool:
    """Whether a worker swept this queue's jobs within the current sweep interval."""
    return bool(rds.exists(sweep_lock_key(queue)))


def sweep_jobs(
    db: Database,
    sender: TaskSender,
    queue: str,
    *,
    redispatch_seconds: float,
    broker: redis.Redis | None = None,
    notify_url: str | None = None,
    secrets: tuple[str, ...] = (),
    failures: SweepFailures | None = None,
) -> int:
    """Plan on and sweep every planning or running job, then send due notices; jobs swept.

    A job whose planner died carries on from its planning cursor (a live planner keeps
    its lease and `plan_job` returns at once). A job's error is its own (`failures` logs it
    once while it repeats); a server outage ends the round and is raised, after the
    notices when only the broker is down (they need none).
    """
    failures = failures or SweepFailures()
    swept = 0
    try:
        for job in db[METADATA].find(
            {"kind": "job", "status": {"$in": [s.value for s in DISPATCHABLE_JOB_STATES]}},
            {"_id": 1, "planning.done": 1},
        ):
            job_id = str(job["_id"])
            if not job.get("planning", {}).get("done"):
                plan = partial(plan_job, db, sender, queue, job_id)
                _isolated(failures, job_id, "planning", plan)
            sweep = partial(
                sweep_job,
                db,
                sender,
                queue,
                job_id,
                redispatch_seconds=redispatch_seconds,
                broker=broker,
            )
            swept += _isolated(failures, job_id, "sweep", sweep)
    except BROKER_OUTAGES:
        notify.deliver_due(db, notify_url, secrets)
        raise
    # Job notices go out from here, never from a batch: a slow or dead receiver delays
    # this sweep by at most a few short timeouts and no batch at all.
    notify.deliver_due(db, notify_url, secrets)
    return swept


def _isolated(failures: SweepFailures, job_id: str, step: str, call: Callable[[], object]) -> bool:
    """Run one job's `step`; its error is logged (server outages pass), True if it went."""
    try:
        call()
    except SERVER_OUTAGES:
        raise
    except Exception as exc:
        failures.failed(job_id, step, exc)
        return False
    failures.succeeded(job_id, step)
    return True
