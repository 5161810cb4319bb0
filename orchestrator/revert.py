"""`backfill revert JOB`: put back exactly what a job changed, as a job of the engine.

The verbs as plain functions (the CLI only parses and prints): `revert` starts or joins the
revert job (backfill_engine.revert_plan) and plans it; `dry_run` counts what it would do
in this process and writes nothing; a job run with `--no-journal` falls back to
recomputing (backfill_engine.unjournaled) where that is safe, and is refused otherwise.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

import bson
from pymongo.database import Database

from backfill_engine.definition import Backfill
from backfill_engine.journal import (
    REVERT_READ_IDS,
    RevertCounts,
    has_journal,
    job_batches,
    plan_restore,
    restoring,
)
from backfill_engine.notify import Event
from backfill_engine.paths import projection
from backfill_engine.revert_conflicts import count_conflicts
from backfill_engine.revert_plan import (
    RevertRefusedError,
    check_revertable,
    plan_revert,
    revert_totals,
    start_revert,
)
from backfill_engine.schema import ensure_schema
from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from backfill_engine.store import item_totals
from backfill_engine.unjournaled import recomputable, undo_recomputed
from orchestrator import audit, jobs
from orchestrator.commands import Broker
from orchestrator.job_events import changed


class Mode(StrEnum):
    JOURNAL = "journal"  # a revert job over the before-image journal
    RECOMPUTE = "recompute"  # no journal, a pure-function backfill: unset what it computes
    NOTHING = "nothing"  # no journal, and the job wrote nothing


def mode_for(db: Database, job: dict[str, Any], definitions: dict[str, Backfill]) -> Mode:
    """How `job` can be reverted; RevertRefusedError (one line) when it cannot."""
    check_revertable(job)
    job_id = str(job["_id"])
    if has_journal(db, job_id):
        return Mode.JOURNAL
    if not item_totals(db[METADATA], job_id)["written"]:
        return Mode.NOTHING if job.get("journal") is False else Mode.JOURNAL
    backfill = definitions.get(str(job["backfill"]))
    if backfill is not None and recomputable(backfill):
        return Mode.RECOMPUTE
    if job.get("journal") is False:
        raise RevertRefusedError(
            job_id,
            "it ran with --no-journal, so what it replaced was never recorded (only a "
            "single-field pure-function backfill can be undone without a journal)",
        )
    raise RevertRefusedError(
        job_id, "it has no journal (run before journaling, or older than BACKFILL_JOURNAL_DAYS)"
    )


def revert(
    db: Database,
    broker: Broker,
    settings: Settings,
    job_id: str,
    *,
    ids: Sequence[Any] | None = None,
) -> tuple[dict[str, Any], bool]:
    """Start (or join) the revert job of `job_id` and plan it; (revert job, created)."""
    ensure_schema(db)
    broker.check()
    target = jobs.get_job(db, job_id)
    check_revertable(target)
    job, created = start_revert(
        db,
        target,
        max_in_flight=settings.max_in_flight,
        batch_size=settings.batch_size,
        ids=None if ids is None else list(ids),
    )
    revert_id = str(job["_id"])
    if created:
        params = {"reverts": job_id, "ids": None if ids is None else len(ids)}
        changed(db, revert_id, "revert", params, event=Event.STARTED)
        audit.record(db, job_id, "reverted", {"by": revert_id})
    plan_revert(db, broker.sender, broker.queue, revert_id)
    return jobs.get_job(db, revert_id), created


def recompute(db: Database, job: dict[str, Any], definitions: dict[str, Backfill]) -> RevertCounts:
    """The fallback for a journal-less job of a pure-function backfill, in this process."""
    counts = undo_recomputed(db, definitions[str(job["backfill"])], job)
    audit.record(
        db, str(job["_id"]), "reverted", {"recomputed": counts.restored, "kept": counts.conflicts}
    )
    return counts


def dry_run(db: Database, job: dict[str, Any], ids: Sequence[Any] | None = None) -> RevertCounts:
    """What a revert of `job` would do now, in field values; writes nothing."""
    coll = db[str(job["collection"])]
    wanted = None if ids is None else {bson.encode({"v": i}) for i in ids}
    counts = RevertCounts()
    for _batch_no, changes in job_batches(db, str(job["_id"])):
        pids = [p for p in changes if wanted is None or bson.encode({"v": p}) in wanted]
        for start in range(0, len(pids), REVERT_READ_IDS):
            piece = pids[start : start + REVERT_READ_IDS]
            fields = projection({f for p in piece for f in changes[p]}) or {"_id": 1}
            current = {d["_id"]: d for d in coll.find({"_id": {"$in": piece}}, fields)}
            for pid in piece:
                if plan_restore(pid, current.get(pid), changes[pid], counts) is not None:
                    counts.restored += restoring(changes[pid], current.get(pid))
    return counts


@dataclass
class RevertStatus:
    """What `status` adds for a revert job, or for a job that cannot be reverted."""

    reverts: str | None
    totals: dict[str, int]
    conflicts_listed: int
    revertable: bool

    def as_dict(self) -> dict[str, Any]:
        if self.reverts is None:
            return {"revertable": self.revertable}
        return {"reverts": self.reverts, **self.totals, "conflicts_listed": self.conflicts_listed}

    def lines(self, job_id: str) -> list[str]:
        if self.reverts is None:
            if self.revertable:
                return []
            return [
                "journal: off (run with --no-journal): this job cannot be reverted, except by "
                "recomputing a single-field pure-function backfill"
            ]
        t = self.totals
        return [
            f"reverts job {self.reverts}: restored {t['restored']:,} field values · already "
            f"as before {t['already']:,} · conflicts {t['conflicts']:,} · unrestorable "
            f"{t['unrestorable']:,}",
            f"  {self.conflicts_listed:,} conflicts listed: `backfill conflicts {job_id}`",
        ]


def revert_status(db: Database, job: dict[str, Any]) -> RevertStatus:
    job_id = str(job["_id"])
    if not job.get("reverts"):
        return RevertStatus(None, {}, 0, job.get("journal") is not False)
    # An undo run in a migration's process (backfill_engine.undo) keeps its counts on the job.
    totals = job.get("revert_counts") or revert_totals(db, job_id)
    return RevertStatus(str(job["reverts"]), dict(totals), count_conflicts(db, job_id), False)


def counts_line(counts: RevertCounts) -> str:
    return (
        f"restored {counts.restored:,} · already as before {counts.already:,} · conflicts "
        f"{counts.conflicts:,} · unrestorable {counts.unrestorable:,}"
    )
