"""The Celery task: one message per batch; the batch run itself is the engine's."""

from __future__ import annotations

import logging
import os
import socket
import time
from typing import Any

import pymongo.errors
from celery import shared_task
from celery.exceptions import Retry

from backfill_engine.batch_outcome import BatchOutcome
from backfill_engine.batch_run import process_batch
from backfill_engine.states import METADATA
from backfill_engine.store import batch_id
from backfill_workers.runtime import get_runtime
from backfill_workers.task_result import (
    BatchFailed,
    BatchRetry,
    TaskReport,
    delivery_report,
    last_error,
    one_line,
)

log = logging.getLogger(__name__)

# What run_batch reads of the batch document around a delivery, to report what it did.
REPORT_FIELDS = {"counters": 1, "processed": 1, "errors": {"$slice": -1}, "last_error": 1}


def _read_report_fields(meta: Any, bid: str) -> dict[str, Any] | None:
    # Only for the report: a database hiccup here must not fail a batch the engine handled.
    try:
        doc: dict[str, Any] | None = meta.find_one({"_id": bid}, REPORT_FIELDS)
    except pymongo.errors.PyMongoError:
        return None
    return doc


def worker_identity(task_id: str | None) -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{(task_id or 'local')[:8]}"


@shared_task(
    name="backfill.batch",
    bind=True,
    acks_late=True,
    reject_on_worker_lost=True,
    ignore_result=True,
    # Expected ends of a batch, raised only so Flower shows FAILURE/RETRY: no traceback.
    throws=(BatchFailed, BatchRetry),
)
def run_batch(self: Any, job_id: str, batch_no: int) -> TaskReport:
    """Process one batch of a backfill job; report its counters (Flower shows them)."""
    if not isinstance(job_id, str) or not isinstance(batch_no, int) or isinstance(batch_no, bool):
        log.error("rejecting malformed task arguments")
        return TaskReport({"outcome": BatchOutcome.BAD_ARGS.value})
    rt = get_runtime(self.request.hostname)
    progress: dict[str, Any] = {}
    started = time.perf_counter()
    outcome = process_batch(
        rt, self.app, job_id, batch_no, worker_identity(self.request.id), report=progress
    )
    seconds = time.perf_counter() - started
    before = progress.get("before")
    after = progress["after"].as_doc() if "after" in progress else None
    reason = ""
    if outcome in (BatchOutcome.FAILED, BatchOutcome.RETRY, BatchOutcome.AUTH_PAUSED):
        # Rare paths: read the reason the engine recorded (one small read).
        bid = batch_id(job_id, batch_no)
        reason = one_line(
            last_error(_read_report_fields(rt.db[METADATA], bid)), rt.settings.secrets
        )
    match outcome:
        case BatchOutcome.FAILED:
            raise BatchFailed(reason or "gave up after its last attempt")
        case BatchOutcome.RETRY:
            # The engine already re-sent the batch with backoff: this only marks the state.
            raise Retry(reason or "re-sent", exc=BatchRetry(reason or "re-sent"))
        case BatchOutcome.AUTH_PAUSED:
            report = delivery_report(outcome.value, before, after, seconds)
            if reason:
                report["reason"] = reason
        case _:
            report = delivery_report(outcome.value, before, after, seconds)
    return TaskReport(report)
