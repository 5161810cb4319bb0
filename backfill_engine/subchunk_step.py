"""What the batch core asks of a job kind, once per sub-chunk: the plan of its writes.

The core (backfill_engine.batch_run) owns the safety rules: lease, prove the lease, journal,
write, checkpoint. A step only reads and decides: a backfill asks its source
(backfill_engine.backfill_step), a revert compares with the journal
(backfill_engine.revert_step). Either way it returns a `Planned` that the core writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

from pymongo import UpdateOne
from pymongo.results import BulkWriteResult

from backfill_engine.batch_progress import Progress
from backfill_engine.subchunk_write import WriteCounts

WriteResult = BulkWriteResult | WriteCounts  # what a document write matched and changed


@dataclass
class Planned:
    """One sub-chunk's writes: document updates, their before-images, and entries to hold.

    Each update carries the namespace of the step's collection (`UpdateOne(...,
    namespace="db.coll")`): the core may send it in a client bulkWrite with the journal."""

    ops: list[UpdateOne] = field(default_factory=list)
    before: list[dict[str, Any]] = field(default_factory=list)  # journal entries for `ops`
    held: list[dict[str, Any]] = field(default_factory=list)  # quarantine or conflict entries

    def writes_anything(self) -> bool:
        return bool(self.ops or self.held)


class SubchunkStep(Protocol):
    """A job kind's per-sub-chunk logic; everything else of a batch is the core's."""

    collection: str  # the documents the step writes
    subchunk_size: int
    journals: bool  # whether the core records before-images of `Planned.ops`
    # True when `count_write` only counts, whatever the result (nothing read, nothing added
    # to hold): the core may then send the checkpoint in the same command as the writes.
    counts_only: bool

    def plan(self, chunk: Sequence[Any], progress: Progress) -> Planned | None:
        """Read and decide the sub-chunk, counting into `progress`; None if interrupted
        before anything was decided (the core then stops at the checkpoint)."""

    def count_write(self, planned: Planned, result: WriteResult, progress: Progress) -> None:
        """Count what the document write did (it may add entries to `planned.held`)."""

    def hold(self, job_id: str, batch_no: int, held: list[dict[str, Any]]) -> None:
        """Store the sub-chunk's held entries (after its writes, under the same lease)."""
