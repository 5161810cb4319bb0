"""What migration 20240406 does: run the catalog backfill as a job and wait for it.

Kept here, beside the job API it uses, so the migration module stays a few lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo import UpdateMany
from pymongo.database import Database

from orchestrator.commands import Broker, RunOptions, launch, wait_for
from orchestrator.errors import BackfillError
from orchestrator.jobs import JobSummary
from orchestrator.progress import counters_line
from workers.enrich import CATALOG_BACKFILL, SYNCED_AT_FIELD
from workers.settings import Settings
from workers.states import PRODUCTS, JobStatus

PROGRESS_EVERY_SECONDS = 5.0
UNSET_CHUNK = 5000


class BackfillJobFailedError(BackfillError):
    def __init__(self, job_id: str, status: str, detail: str) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(f"backfill job {job_id} ended {status}: {detail}")


def workers_listening(broker: Broker, timeout: float = 2.0) -> int:
    """How many Celery workers answer a ping right now."""
    try:
        replies = broker.sender.control.ping(timeout=timeout)  # type: ignore[attr-defined]
    except Exception:
        return 0
    return len(replies or [])


def run_catalog_backfill(
    db: Database, settings: Settings, log: Callable[[str], None] = print
) -> JobSummary:
    """Start or join the catalog job, wait for it, and fail unless it completed cleanly."""
    broker = Broker.from_settings(settings)
    opts = RunOptions(
        backfill="catalog",
        batch_size=settings.batch_size,
        max_in_flight=settings.max_in_flight,
        rate_per_second=settings.rate_per_second,
    )
    job, created = launch(db, broker, opts)
    job_id = str(job["_id"])
    log(
        f"{'started' if created else 'joined'} backfill job {job_id}: "
        f"{job['planning']['products']:,} products in {job['planning']['batches']:,} batches"
    )
    if job["status"] == JobStatus.PAUSED.value:
        raise BackfillJobFailedError(job_id, "paused", "resume it with `backfill resume JOB`")
    if not workers_listening(broker):
        log(f"no worker answers on queue {settings.queue!r} yet; start some with `backfill worker`")
    last = [0.0]

    def tick(summary: JobSummary) -> None:
        now = time.monotonic()
        if now - last[0] >= PROGRESS_EVERY_SECONDS:
            last[0] = now
            items = summary.items
            log(
                f"  {items['processed']:,}/{items['size']:,} products · "
                f"{counters_line(items, summary.quarantined)}"
            )

    summary = wait_for(db, broker, settings, job_id, on_tick=tick, stop_when_paused=True)
    status = summary.job["status"]
    if status != JobStatus.COMPLETED.value:
        detail = counters_line(summary.items, summary.quarantined)
        if summary.job.get("pause_reason"):
            detail = summary.job["pause_reason"]
        raise BackfillJobFailedError(
            job_id,
            status,
            f"{detail}; see `backfill status {job_id}`, then `backfill retry {job_id}`",
        )
    return summary


def remove_enriched_fields(db: Database, log: Callable[[str], None] = print) -> int:
    """Undo the backfill: unset the enriched fields, in batches of ids."""
    fields: dict[str, Any] = {name: "" for name in (*CATALOG_BACKFILL.fields, SYNCED_AT_FIELD)}
    products = db[PRODUCTS]
    changed = 0
    cursor = products.find({SYNCED_AT_FIELD: {"$exists": True}}, {"_id": 1}).batch_size(UNSET_CHUNK)
    chunk: list[Any] = []
    for doc in cursor:
        chunk.append(doc["_id"])
        if len(chunk) == UNSET_CHUNK:
            changed += products.bulk_write(
                [UpdateMany({"_id": {"$in": chunk}}, {"$unset": fields})]
            ).modified_count
            chunk = []
    if chunk:
        changed += products.bulk_write(
            [UpdateMany({"_id": {"$in": chunk}}, {"$unset": fields})]
        ).modified_count
    log(f"removed enriched fields from {changed:,} products")
    return changed
