"""The revert's sub-chunk step: put back what one batch of a job changed, and only that.

A revert batch covers the documents one batch of the reverted job journaled
(backfill_engine.revert_plan). Per sub-chunk it reads their current fields and plans, with
journal.plan_restore, an update guarded on exactly what the job wrote; a field changed
since (or whose document is gone, or that has no before-image) is left and held as a
conflict entry (backfill_engine.revert_conflicts).

The core journals a revert's own writes under the revert job's id, as it does a
backfill's, but only so the counts stay exact across deliveries: a delivery killed after
its write and before its checkpoint left fields put back that the next delivery finds
"as before"; those the revert's own journal names for this batch were restored by this
revert job, and count as restored, not already. Nothing ever reverts a revert from it
(check_revertable refuses).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo.database import Database

from backfill_engine import journal
from backfill_engine.batch_io import read_current
from backfill_engine.batch_progress import Progress
from backfill_engine.journal import CHANGED, Change, RevertCounts, holds_before, was_restoring
from backfill_engine.revert_conflicts import conflict_entry, write_conflicts
from backfill_engine.subchunk_step import Planned, WriteResult

# The revert counters a revert batch keeps beside the item counters (field values).
REVERT_COUNTERS = ("restored", "already", "conflicts", "unrestorable")


class RevertStep:
    """Compare with the journal → guarded restores and conflicts, for one revert batch."""

    journals = True  # its own writes, to count them once across deliveries (see above)
    counts_only = False  # an update an application write beat is read back and held

    def __init__(
        self,
        db: Database,
        *,
        collection: str,
        reverts: str,
        source_batch: int,
        job_id: str,
        subchunk_size: int,
        read_ids: int,
        batch_no: int | None = None,
    ) -> None:
        self.db, self.collection, self.reverts = db, collection, reverts
        self.source_batch, self.job_id, self.batch_no = source_batch, job_id, batch_no
        self._own: dict[Any, dict[str, Change]] | None = None
        self.subchunk_size, self.read_ids = subchunk_size, read_ids
        self._changes: dict[Any, dict[str, Change]] | None = None
        self._reading: dict[Any, dict[str, Any] | None] = {}  # current docs of planned ops
        self.namespace = f"{db.name}.{collection}"  # on each op, for a client bulkWrite

    def changes(self) -> dict[Any, dict[str, Change]]:
        """What the reverted batch changed, read once per delivery."""
        if self._changes is None:
            self._changes = journal.batch_changes(self.db, self.reverts, self.source_batch)
        return self._changes

    def own_restores(self) -> dict[Any, dict[str, Change]]:
        """What earlier deliveries of this revert batch journaled they would put back."""
        if self._own is None:
            self._own = {}
            if self.batch_no is not None:
                self._own = journal.batch_changes(self.db, self.job_id, self.batch_no)
        return self._own

    def plan(self, chunk: Sequence[Any], progress: Progress) -> Planned:
        changes = self.changes()
        fields = {f for pid in chunk for f in changes.get(pid, {})}
        coll = self.db[self.collection]
        current = read_current(coll, list(chunk), fields, per_read=self.read_ids)
        planned, counts = Planned(), RevertCounts()
        self._reading = {}
        for pid in chunk:
            per_doc = changes.get(pid)
            if not per_doc:
                continue  # not journaled (an expired journal, or an id list that named it)
            doc = current.get(pid)

            def left(f: str, c: Change, why: str, cur: Any, pid: Any = pid) -> None:
                planned.held.append(conflict_entry(pid, f, c, why, cur))

            op = journal.plan_restore(
                pid, doc, per_doc, counts, on_left=left, namespace=self.namespace
            )
            earlier = self.own_restores().get(pid) or {}
            for f, c in per_doc.items():
                if f in earlier and doc is not None and not c.lost and holds_before(doc, f, c):
                    counts.already -= 1  # put back by an earlier delivery of this revert
                    counts.restored += 1
            if op is None:
                progress.counters["deleted" if doc is None else "unchanged"] += 1
                continue
            planned.ops.append(op)
            planned.before.append(journal.before_image(pid, doc or {}, _restores(per_doc, doc)))
            self._reading[pid] = doc
        add_counts(progress, counts)
        return planned

    def count_write(self, planned: Planned, result: WriteResult, progress: Progress) -> None:
        changes, counts = self.changes(), RevertCounts()
        c = progress.counters
        c["written"] += result.modified_count
        c["unchanged"] += result.matched_count - result.modified_count
        if result.matched_count == len(planned.ops):
            reading = self._reading.items()
            counts.restored += sum(journal.restoring(changes[p], d) for p, d in reading)
        else:
            # An application write beat some guarded updates: find out, field by field,
            # which were put back (they hold their before-image now) and which were left.
            fields = {f for pid in self._reading for f in changes[pid]}
            after = read_current(self.db[self.collection], list(self._reading), fields)
            for pid, doc in self._reading.items():
                now = after.get(pid)
                for f, change in changes[pid].items():
                    if not was_restoring(f, change, doc):
                        continue
                    if now is not None and holds_before(now, f, change):
                        counts.restored += 1
                    else:
                        counts.conflicts += 1
                        planned.held.append(conflict_entry(pid, f, change, CHANGED, now))
        add_counts(progress, counts)

    def hold(self, job_id: str, batch_no: int, held: list[dict[str, Any]]) -> None:
        write_conflicts(self.db, job_id, self.reverts, batch_no, held)


def add_counts(progress: Progress, counts: RevertCounts) -> None:
    """Add field-value counts to a revert batch's counters."""
    c = progress.counters
    for name in REVERT_COUNTERS:
        c[name] = c.get(name, 0) + getattr(counts, name)


def _restores(per_doc: dict[str, Change], doc: dict[str, Any] | None) -> dict[str, Any]:
    """The fields a guarded restore of `doc` puts back, with the value each gets (None: unset)."""
    return {
        f: c.before if c.had else None
        for f, c in per_doc.items()
        if journal.was_restoring(f, c, doc)
    }
