"""The backfill's sub-chunk step: read the documents, ask the source, decide each id.

The per-id decision is backfill_engine.decide's (shared with dry-run and verify); this
module turns decisions into the updates, before-images and quarantine entries the batch
core writes.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.database import Database

from backfill_engine import journal
from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_io import COUNTER_OF, ask_source, quarantine_ops, read_current, status_of
from backfill_engine.batch_progress import Progress
from backfill_engine.decide import QUARANTINED, Outcome, decide
from backfill_engine.definition import Backfill
from backfill_engine.hooks import HookChain
from backfill_engine.http_client import FetchInterrupted
from backfill_engine.payload import CHAIN_START, build_set, chain_hash, item_digest
from backfill_engine.schema import write_quarantine
from backfill_engine.sources import SourceContext, SourceResult
from backfill_engine.store import now_utc
from backfill_engine.subchunk_step import Planned, WriteResult


class BackfillStep:
    """Read → ask the source → decide, for one backfill job's batch."""

    def __init__(
        self,
        db: Database,
        backfill: Backfill,
        batch: BatchContext,
        chain: HookChain,
        ctx: SourceContext,
        *,
        ambiguous: set[Any],
        subchunk_size: int,
        read_ids: int,
        journals: bool = True,
    ) -> None:
        self.db, self.backfill, self.batch, self.chain, self.ctx = db, backfill, batch, chain, ctx
        self.ambiguous, self.read_ids = ambiguous, read_ids
        self.collection = backfill.collection
        self.subchunk_size = min(subchunk_size, backfill.subchunk_size)
        self.journals = journals  # `backfill run --no-journal` turns it off for the job
        self.counts_only = True  # what it holds is decided in `plan`, before any write

    def plan(self, chunk: Sequence[Any], progress: Progress) -> Planned | None:
        phase, batch = self.chain.phase, self.batch
        with phase(batch, "read"):
            # The synced stamp too: the journal keeps its before-image like the fields'.
            fields = (*self.backfill.projection, self.backfill.synced_field)
            current = read_current(
                self.db[self.collection], list(chunk), fields, per_read=self.read_ids
            )
        present = [current[i] for i in chunk if i in current and i not in self.ambiguous]
        with phase(batch, "source"):
            self.chain.before("before_source", batch, present)
            try:
                answer = ask_source(self.backfill, self.ctx, present, batch.log)
            except FetchInterrupted:
                return None  # nothing written for this sub-chunk; the loop sees why and stops
            self.chain.after("after_source", batch, answer)
        namespace = f"{self.db.name}.{self.collection}"
        return apply_decisions(
            self.backfill, chunk, current, answer, self.ambiguous, progress, namespace=namespace
        )

    def count_write(self, planned: Planned, result: WriteResult, progress: Progress) -> None:
        c = progress.counters
        c["written"] += result.modified_count
        c["unchanged"] += result.matched_count - result.modified_count
        c["deleted"] += len(planned.ops) - result.matched_count

    def hold(self, job_id: str, batch_no: int, held: list[dict[str, Any]]) -> None:
        entries = quarantine_ops(job_id, batch_no, held)
        write_quarantine(self.db, job_id, [e["item_id"] for e in held], entries)


def apply_decisions(
    backfill: Backfill,
    chunk: Sequence[Any],
    current: dict[Any, dict[str, Any]],
    answer: SourceResult,
    ambiguous: set[Any],
    progress: Progress,
    *,
    namespace: str | None = None,
) -> Planned:
    """The sub-chunk's document updates, their before-images (backfill_engine.journal) and
    quarantine entries; counts and hashes the rest into `progress`. `namespace` (db.coll)
    goes on each update, so the core can send them in a client bulkWrite."""
    p = progress
    planned = Planned()
    now = now_utc()
    for pid in chunk:
        decision = decide(backfill, pid, current.get(pid), answer, ambiguous=pid in ambiguous)
        outcome = decision.outcome
        if outcome in QUARANTINED:
            p.counters[COUNTER_OF[outcome]] += 1
            planned.held.append(decision.quarantine_entry(pid, status_of(outcome, answer)))
        elif outcome is Outcome.DELETED:
            p.counters["deleted"] += 1
        else:
            digest = item_digest(pid, decision.fields)
            p.payload_hash = chain_hash(p.payload_hash or CHAIN_START, digest)
            if outcome is Outcome.WRITE:
                written = build_set(decision.diff, now, backfill.synced_field)
                planned.ops.append(UpdateOne({"_id": pid}, {"$set": written}, namespace=namespace))
                planned.before.append(journal.before_image(pid, current[pid], written))
            else:
                p.counters["unchanged"] += 1
    return planned
