"""What a backfill's migration does: run the backfill as a job and wait for it (or undo it).

Kept here, beside the job API it uses, so a migration that runs a backfill is two lines.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from pymongo import UpdateMany
from pymongo.database import Database

from backfill_engine.definition import Backfill
from backfill_engine.settings import Settings
from backfill_engine.states import JobStatus
from orchestrator.commands import Broker, RunOptions, launch, wait_for
from orchestrator.errors import BackfillError
from orchestrator.jobs import JobSummary
from orchestrator.progress import counters_line

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


def run_backfill(
    db: Database,
    backfill: Backfill | str,
    ctx: Any = None,
    *,
    settings: Settings | None = None,
    params: dict[str, Any] | None = None,
    log: Callable[[str], None] | None = None,
) -> JobSummary:
    """Start or join a backfill's job, wait with progress, fail unless it completed cleanly.

    What a migration's `up` calls: `run_backfill(db, MY_BACKFILL, ctx)`.
    """
    settings = settings or (getattr(ctx, "settings", None) if ctx else None) or Settings.from_env()
    log = log or (getattr(ctx, "log", None) if ctx else None) or print
    name = backfill if isinstance(backfill, str) else backfill.name
    broker = Broker.from_settings(settings)
    opts = RunOptions(
        backfill=name,
        batch_size=settings.batch_size,
        max_in_flight=settings.max_in_flight,
        rate_per_second=settings.rate_per_second,
        params=tuple(sorted((params or {}).items())),
    )
    job, created = launch(db, broker, opts, definitions=_definitions(backfill, settings))
    job_id = str(job["_id"])
    log(
        f"{'started' if created else 'joined'} backfill job {job_id}: "
        f"{job['planning']['items']:,} documents in {job['planning']['batches']:,} batches"
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
                f"  {items['processed']:,}/{items['size']:,} documents · "
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


def _definitions(backfill: Backfill | str, settings: Settings) -> dict[str, Backfill]:
    from backfill_engine.runtime import worker_definitions

    found = worker_definitions(settings)
    if isinstance(backfill, Backfill):
        found[backfill.name] = backfill
    return found


def undo_backfill(db: Database, backfill: Backfill, ctx: Any = None) -> int:
    """Undo a backfill: unset its written fields and its stamp where it stamped, in chunks."""
    log: Callable[[str], None] = (getattr(ctx, "log", None) if ctx else None) or print
    fields: dict[str, Any] = {name: "" for name in (*backfill.writes, backfill.synced_field)}
    coll = db[backfill.collection]
    changed = 0
    stamped = coll.find({backfill.synced_field: {"$exists": True}}, {"_id": 1})
    chunk: list[Any] = []
    for doc in stamped.batch_size(UNSET_CHUNK):
        chunk.append(doc["_id"])
        if len(chunk) == UNSET_CHUNK:
            changed += coll.bulk_write(
                [UpdateMany({"_id": {"$in": chunk}}, {"$unset": fields})]
            ).modified_count
            chunk = []
    if chunk:
        changed += coll.bulk_write(
            [UpdateMany({"_id": {"$in": chunk}}, {"$unset": fields})]
        ).modified_count
    log(f"removed {backfill.name} fields from {changed:,} documents")
    return changed
