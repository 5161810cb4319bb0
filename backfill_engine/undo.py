"""Revert one job in this process (a migration's `down`), kept as a revert job would be.

`backfill revert` runs a revert job on the workers; a migration's `down` undoes in the
migration runner's process, under its lock. Both decide every field with the same
journal.plan_restore, and both list what they left in `backfill_revert_conflicts`: the
in-process undo writes a completed revert job document (`reverts: JOB`, `via`, its
counts under `revert_counts`), so `backfill conflicts ID` and `backfill status ID` answer
for it, and `backfill retry JOB` sees that JOB was reverted.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import asdict
from typing import Any

from pymongo.database import Database

from backfill_engine import journal, store
from backfill_engine.journal import Change, RevertCounts
from backfill_engine.revert_conflicts import conflict_entry, write_conflicts
from backfill_engine.states import METADATA
from backfill_engine.store import now_utc

CONFLICTS_PER_WRITE = 1000  # conflict entries buffered before one bulk upsert


class _HeldConflicts:
    """Conflict entries of one undo, written per batch in bulk."""

    def __init__(self, db: Database, undo_id: str, reverts: str) -> None:
        self.db, self.undo_id, self.reverts = db, undo_id, reverts
        self.batch_no: int | None = None
        self.entries: list[dict[str, Any]] = []

    def add(
        self,
        batch_no: int,
        pid: Any,
        field: str,
        change: Change,
        why: str,
        current: Mapping[str, Any] | None,
    ) -> None:
        if batch_no != self.batch_no or len(self.entries) >= CONFLICTS_PER_WRITE:
            self.flush()
            self.batch_no = batch_no
        self.entries.append(conflict_entry(pid, field, change, why, current))

    def flush(self) -> None:
        if self.entries and self.batch_no is not None:
            write_conflicts(self.db, self.undo_id, self.reverts, self.batch_no, self.entries)
        self.entries = []


def undo_job(
    db: Database,
    job: Mapping[str, Any],
    collection: str,
    *,
    via: str,
    on_batch: Callable[[], None] | None = None,
) -> tuple[str, RevertCounts]:
    """Put back what `job` changed in `collection`, list what it left; (revert job id, counts)."""
    from backfill_engine.planner import new_job_id

    job_id = str(job["_id"])
    undo_id = new_job_id(f"{job['backfill']}-revert")
    held = _HeldConflicts(db, undo_id, job_id)
    started = now_utc()
    counts = journal.revert_job(db, collection, job_id, on_batch=on_batch, on_left=held.add)
    held.flush()
    # Written once the undo is over: a crash before it leaves the documents half put back
    # (a second `down` finishes them) and no revert job that claims more than happened.
    store.record_finished_job(
        db[METADATA],
        {
            "_id": undo_id,
            "kind": "job",
            "backfill": job["backfill"],
            "reverts": job_id,
            "via": via,
            "collection": collection,
            "batch_size": int(job.get("batch_size") or 1),
            "max_in_flight": int(job.get("max_in_flight") or 1),
            "params": {},
            "journal": False,
            "planning": {"cursor": None, "batches": 0, "items": 0, "done": True},
            "revert_counts": asdict(counts),
            "created_at": started,
        },
    )
    return undo_id, counts


__all__ = ["undo_job"]
