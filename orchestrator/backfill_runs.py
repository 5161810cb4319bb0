"""What a backfill's migration does: run the backfill as a job and wait for it (or undo it).

Kept here, beside the job API it uses, so a migration that runs a backfill is two lines.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from pymongo.database import Database

from backfill_engine.definition import Backfill
from backfill_engine.journal import RevertCounts, has_journal
from backfill_engine.settings import Settings
from backfill_engine.states import DISPATCHABLE_JOB_STATES, METADATA, JobStatus
from backfill_engine.store import item_totals
from backfill_engine.undo import undo_job
from backfill_engine.unjournaled import recomputable, undo_recomputed
from orchestrator.commands import Broker, RunOptions, launch, wait_for
from orchestrator.errors import BackfillError
from orchestrator.jobs import JobSummary
from orchestrator.progress import counters_line

PROGRESS_EVERY_SECONDS = 5.0


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

    def tick(summary: JobSummary) -> None:
        items = summary.items
        log(
            f"  {items['processed']:,}/{items['size']:,} documents · "
            f"{counters_line(items, summary.quarantined)}"
        )

    summary = wait_for(
        db,
        broker,
        settings,
        job_id,
        on_tick=tick,
        tick_seconds=PROGRESS_EVERY_SECONDS,
        stop_when_paused=True,
    )
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


@dataclass
class UndoReport:
    """What `undo_backfill` did, in field values, and the jobs it could not undo."""

    backfill: str
    written: tuple[str, ...] = ()  # the fields the backfill writes
    jobs: list[str] = field(default_factory=list)  # undone from their journal, newest first
    # Per job undone from its journal, the revert job recording it (`backfill conflicts ID`).
    undo_ids: dict[str, str] = field(default_factory=dict)
    conflicts_by_job: dict[str, int] = field(default_factory=dict)
    counts: RevertCounts = field(default_factory=RevertCounts)
    jobs_without_journal: list[str] = field(default_factory=list)
    # Jobs without a journal undone by recomputing their values (backfill_engine.unjournaled).
    recomputed: dict[str, RevertCounts] = field(default_factory=dict)

    @property
    def restored(self) -> int:
        return self.counts.restored

    @property
    def already(self) -> int:
        return self.counts.already

    @property
    def conflicts(self) -> int:
        return self.counts.conflicts

    def lines(self) -> list[str]:
        """What `migrate down` prints: one line of totals, one per job it could not undo."""
        c = self.counts
        out = [
            f"undid {len(self.jobs)} {self.backfill} job(s): restored {c.restored:,} field "
            f"values, {c.conflicts:,} kept (changed since the backfill wrote them), "
            f"{c.already:,} already as before"
        ]
        if c.unrestorable:
            out.append(
                f"  {c.unrestorable:,} field values kept: their previous value was too large "
                "to journal"
            )
        out.extend(
            f"  job {job_id}: {n:,} field values kept, listed by `backfill conflicts "
            f"{self.undo_ids[job_id]}`"
            for job_id, n in self.conflicts_by_job.items()
            if n
        )
        written = ", ".join(self.written)
        out.extend(
            f"  job {job_id}: no journal; unset {c.restored:,} {written} values that still equal "
            f"what its pure-function source computes, kept {c.conflicts:,}"
            for job_id, c in self.recomputed.items()
        )
        out.extend(
            f"  job {job_id}: no journal (run before journaling, or older than "
            "BACKFILL_JOURNAL_DAYS): unset nothing, its values stay"
            for job_id in self.jobs_without_journal
        )
        return out


class UndoRefusedError(BackfillError):
    def __init__(self, job_id: str, status: str) -> None:
        self.job_id, self.status = job_id, status
        super().__init__(
            f"backfill job {job_id} is still {status}; cancel it (`backfill cancel {job_id}`) "
            "or let it finish before undoing it"
        )


def undo_backfill(
    db: Database,
    backfill: Backfill,
    ctx: Any = None,
    *,
    log: Callable[[str], None] | None = None,
) -> UndoReport:
    """Undo a backfill's jobs, newest first, from their before-image journal.

    A field goes back to what it held before a job only while it still holds what that job
    wrote; a value the job did not write (already right, or changed since) is never touched.
    What a migration's `down` calls: `undo_backfill(db, MY_BACKFILL, ctx)`.
    """
    log = log or (getattr(ctx, "log", None) if ctx else None) or print
    check_lock: Callable[[], None] | None = getattr(ctx, "check_lock", None) if ctx else None
    meta = db[METADATA]
    jobs = list(
        meta.find({"kind": "job", "backfill": backfill.name}, {"dispatch_lock": 0}).sort(
            [("created_at", -1), ("_id", -1)]
        )
    )
    for job in jobs:
        # A revert job of the backfill running too: both would put back the same fields.
        if job["status"] in DISPATCHABLE_JOB_STATES:
            raise UndoRefusedError(str(job["_id"]), job["status"])
    report = UndoReport(backfill.name, tuple(backfill.writes))
    # Revert jobs (ours from an earlier `down` included) wrote no journal and are no
    # backfill to undo: undoing their job again finds its fields as before.
    for job in (j for j in jobs if not j.get("reverts")):
        job_id = str(job["_id"])
        if not has_journal(db, job_id):
            if not item_totals(meta, job_id)["written"]:
                continue  # it changed nothing: nothing to undo
            if recomputable(backfill):
                report.recomputed[job_id] = undo_recomputed(db, backfill, job)
            else:
                report.jobs_without_journal.append(job_id)
            continue
        undo_id, counts = undo_job(
            db, job, backfill.collection, via="migrate down", on_batch=check_lock
        )
        report.counts.add(counts)
        report.jobs.append(job_id)
        report.undo_ids[job_id] = undo_id
        report.conflicts_by_job[job_id] = counts.conflicts + counts.unrestorable
    for line in report.lines():
        log(line)
    return report
