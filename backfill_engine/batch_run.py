"""The batch core: the rules that make one batch delivery safe, and nothing else.

take (the job runs → lease → ids → the job kind's step; backfill_engine.batch_take) →
while the lease holds and the job runs, one sub-chunk (the step plans it → prove the lease
→ journal the before-images → write → hold entries → checkpoint, in order) → finish, or
hand back at the checkpoint. It returns a BatchOutcome. What a sub-chunk writes is the
step's (backfill_engine.subchunk_step: a backfill asks its source, a revert compares with
the journal); everything that cuts across the loop (health throttle, timings, source
statistics, next dispatch, failure policy) is a hook in backfill_engine/hooks/.
"""

from __future__ import annotations

import contextlib
import copy
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from pymongo.collection import Collection

from backfill_engine import journal, store
from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_context import BatchLog as BatchLog
from backfill_engine.batch_failure import after_error
from backfill_engine.batch_io import read_current as read_current
from backfill_engine.batch_outcome import TRANSIENT_ERRORS, BatchOutcome
from backfill_engine.batch_progress import NOTHING_PROCESSED, Progress
from backfill_engine.batch_take import Taken, take
from backfill_engine.checkpoint_pipe import CheckpointPipe
from backfill_engine.dispatch import TaskSender, planned_total
from backfill_engine.handoff import Handoff, handoff_cap
from backfill_engine.hooks import BatchHook, HookChain, default_hooks
from backfill_engine.lease_keeper import STOPPING_JOB_STATES, LeaseKeeper, LeaseLost, write_margin
from backfill_engine.runtime import Runtime
from backfill_engine.states import METADATA, BatchStatus, JobStatus
from backfill_engine.subchunk_step import Planned, WriteResult
from backfill_engine.subchunk_write import (
    Checkpoint,
    WriteCounts,
    offers_client_bulk_write,
    write_together,
)

__all__ = ["BatchLog", "BatchRun", "Progress", "process_batch", "read_current"]

log = logging.getLogger(__name__)

CHECKPOINT_IDLE_SECONDS = 2.0  # longest gap between checkpoints while nothing is written


def process_batch(
    rt: Runtime,
    sender: TaskSender,
    job_id: str,
    batch_no: int,
    owner: str,
    report: dict[str, Any] | None = None,
    *,
    hooks: Sequence[BatchHook] | None = None,
) -> BatchOutcome:
    """Run one delivery of a batch to its end (done, a pause, a lost lease, an error).

    `hooks` replaces the engine's default hooks (backfill_engine.hooks.default_hooks).
    `report`, when given, receives the batch's progress `before` and `after` this delivery
    ({"counters", "processed"}), so the task can say what it did without reading it back.
    """
    batch = BatchContext.new(job_id, batch_no, owner, log)
    chain = HookChain(default_hooks(rt, sender) if hooks is None else hooks)
    chain.before("before_batch", batch)
    with batch.current():
        outcome = _deliver(rt, sender, batch, chain, report)
    chain.after("after_batch", batch, outcome)
    return outcome


def _deliver(
    rt: Runtime,
    sender: TaskSender,
    batch: BatchContext,
    chain: HookChain,
    report: dict[str, Any] | None,
) -> BatchOutcome:
    taken = take(rt, sender, batch, chain)
    if isinstance(taken, BatchOutcome):
        return taken
    run = BatchRun(rt, batch, chain, taken)
    if report is not None:
        report["before"] = {
            "counters": dict(taken.doc["counters"]),
            "processed": int(taken.doc.get("processed") or 0),
        }
        report["after"] = run.progress  # read when the task builds its report
    try:
        return run.run()
    except LeaseLost:
        batch.log.warning("lease lost to another worker; stopping without further writes")
        return BatchOutcome.LEASE_LOST
    except Exception as exc:
        return after_error(rt, sender, batch, chain, exc)


@dataclass(frozen=True)
class Ahead:
    """Where the batch stands once the sub-chunk being written is recorded."""

    processed: int
    last_id: Any


class BatchRun:
    """One leased batch, shaped like job-iteration: while the lease holds and the job runs,
    do one sub-chunk. Cursor (`Progress`), interruption and resumption are the engine's."""

    def __init__(self, rt: Runtime, batch: BatchContext, chain: HookChain, taken: Taken) -> None:
        assert batch.lease is not None
        self.rt, self.batch, self.chain, self.step = rt, batch, chain, taken.step
        self.lease, self.blog = batch.lease, batch.log
        self.doc, self.ids, self.job = taken.doc, taken.ids, taken.job
        self.meta: Collection = rt.db[METADATA]
        self.docs: Collection = rt.db[taken.step.collection]
        self.progress = Progress(taken.doc)
        batch.counters = self.progress.counters
        self.keeper = batch.keeper = LeaseKeeper(
            self.meta,
            self.lease,
            rt.settings.lease_seconds,
            job_id=batch.job_id,
            job_state=taken.job_state,
            job_cap=taken.job.get("max_in_flight"),
        )
        self.keeper.valid_until = taken.leased_at + rt.settings.lease_seconds
        self.pipe = CheckpointPipe()
        self._last_checkpoint = time.monotonic()
        # One client bulkWrite per sub-chunk (backfill_engine.subchunk_write) where the
        # server takes it: before-images, updates and, where it can, the checkpoint.
        self.together = rt.settings.client_bulk_write and offers_client_bulk_write(rt.db.client)

    def run(self) -> BatchOutcome:
        """Sub-chunks until the batch is done or must stop: DONE, PAUSED or CANCELLED."""
        if self.progress.processed:
            self.blog.info(
                "resuming after %d of %d ids (last id %s)",
                self.progress.processed,
                len(self.ids),
                self.doc["last_processed_id"],
            )
        with self.keeper, self.pipe:
            while self.progress.processed < len(self.ids):
                with self.chain.phase(self.batch, "throttle"):  # hooks may wait here
                    self.chain.before("before_subchunk", self.batch)
                stop = self.should_stop()
                if stop is not None:
                    return self.hand_back(stop)
                self.each_subchunk()
            self.finish()
        return BatchOutcome.DONE

    def should_stop(self) -> JobStatus | None:
        """Between sub-chunks: LeaseLost if the lease moved on; the job's state if it stopped."""
        if self.keeper.lost.is_set():
            raise LeaseLost
        state = self.keeper.job_state
        if state in STOPPING_JOB_STATES:
            return JobStatus(state)
        return None

    def hand_back(self, state: JobStatus) -> BatchOutcome:
        """Release the batch at its checkpoint: pending on a pause, cancelled otherwise."""
        self.pipe.settle()
        paused = state is JobStatus.PAUSED
        store.release_batch(
            self.meta, self.lease, BatchStatus.PENDING if paused else BatchStatus.CANCELLED
        )
        where = f"{self.progress.processed}/{len(self.ids)}"
        self.blog.info(
            "job %s; batch %s at %s", state.value, "released" if paused else "stopped", where
        )
        return BatchOutcome.PAUSED if paused else BatchOutcome.CANCELLED

    def each_subchunk(self) -> None:
        """The step plans the sub-chunk; write it (under a proven lease), then checkpoint."""
        p = self.progress
        chunk = self.ids[p.processed : p.processed + self.step.subchunk_size]
        with self.chain.phase(self.batch, "checkpoint"):
            # The last checkpoint must stand before the step asks its source again: if it
            # failed, the retry refetches only the sub-chunk it did not record.
            self.pipe.settle()
        planned = self.step.plan(chunk, p)
        if planned is None:
            return  # interrupted before deciding: the loop sees why and stops
        end = p.processed + len(chunk)
        # The last sub-chunk's checkpoint is the finish's.
        ahead = Ahead(end, chunk[-1]) if end < len(self.ids) else None
        with self.chain.phase(self.batch, "write"):
            recorded = self.write(planned, ahead)
        p.processed, p.last_id = end, chunk[-1]
        if ahead is not None and not recorded:
            self.maybe_checkpoint(wrote=planned.writes_anything())

    def write(self, planned: Planned, ahead: Ahead | None = None) -> bool:
        """Write the sub-chunk, only while the lease is surely ours (proven right before).

        True if its checkpoint (at `ahead`) went with the write and holds what the write
        then counted, so none is needed after it."""
        if not planned.writes_anything():
            return False
        lease_seconds = self.rt.settings.lease_seconds
        if not self.keeper.surely_ours(write_margin(lease_seconds)):
            # The step may have waited longer than the lease (rate-limit waits, 429 pauses,
            # retries, a stalled link): prove the lease is still ours right before writing,
            # never over what the worker that took the batch over wrote.
            sent = time.monotonic()
            if not store.renew_lease(self.meta, self.lease, lease_seconds):
                raise LeaseLost
            self.keeper.extended(sent)
        batch, recorded = self.batch, False
        if planned.ops:
            if self.step.journals and not self.together:
                # Before-images first, under the same proven lease: a crash in between leaves
                # a journal entry for a write that never landed (undo compares, so harmless),
                # never a written document without its before-image.
                days = self.rt.settings.journal_days
                token = self.lease.token
                journal.record(
                    self.rt.db, batch.job_id, batch.batch_no, token, planned.before, days=days
                )
            self.chain.before("before_write", batch, len(planned.ops))
            # Filter on _id, never upsert: a document deleted meanwhile stays deleted.
            t0, ok = time.perf_counter(), False
            try:
                if self.together:
                    res: WriteResult
                    res, recorded = self.write_together(planned, ahead)
                else:
                    res = self.docs.bulk_write(planned.ops, ordered=False)
                ok = True
            finally:
                self.chain.after("after_write", batch, time.perf_counter() - t0, ok)
            self.step.count_write(planned, res, self.progress)
        if planned.held:
            self.step.hold(batch.job_id, batch.batch_no, planned.held)
        return recorded

    def ahead_checkpoint(self, planned: Planned, ahead: Ahead) -> tuple[Checkpoint, WriteCounts]:
        """The checkpoint after this sub-chunk, counted as if every update changed its
        document (what the write nearly always reports), and those counts."""
        assumed = WriteCounts(len(planned.ops), len(planned.ops))
        after = copy.copy(self.progress)
        after.counters = dict(self.progress.counters)
        after.processed, after.last_id = ahead.processed, ahead.last_id
        self.step.count_write(planned, assumed, after)
        extra = self.chain.checkpoint_fields(self.batch, final=False)
        update = store.checkpoint_update(
            **after.as_doc(),
            lease_seconds=self.rt.settings.lease_seconds,
            source_inc=extra.get("source_inc"),
        )
        return Checkpoint(self.lease.guard(), update), assumed

    def write_together(self, planned: Planned, ahead: Ahead | None) -> tuple[WriteCounts, bool]:
        """Before-images, updates and (where it can) the checkpoint after them in one
        ordered command; its counts, and whether that checkpoint holds them.

        The checkpoint goes only with a step whose writes leave nothing to hold
        (`SubchunkStep.counts_only`) and a sub-chunk that holds nothing: one written
        before its held entries would let a crash in between lose them."""
        sent = time.monotonic()  # before the lease's new expiry is computed
        checkpoint, assumed = None, None
        if ahead is not None and not planned.held and self.step.counts_only:
            checkpoint, assumed = self.ahead_checkpoint(planned, ahead)
        docs: list[dict[str, Any]] = []
        if self.step.journals:
            db, batch = self.rt.db, self.batch
            journal.ensure_journal(db, self.rt.settings.journal_days)
            docs = journal.journal_docs(
                batch.job_id, batch.batch_no, self.lease.token, planned.before, store.now_utc()
            )
        counts, held = write_together(
            self.rt.db, checkpoint=checkpoint, journal_docs=docs, ops=planned.ops
        )
        if held is False:
            raise LeaseLost  # cannot happen under a proven lease; stop if it ever does
        if not held:
            return counts, False
        self.keeper.extended(sent)
        self._last_checkpoint = time.monotonic()
        # A document deleted or changed to the same values meanwhile: the write counted
        # otherwise, and a checkpoint after it records what it counted.
        return counts, counts == assumed

    def maybe_checkpoint(self, *, wrote: bool) -> None:
        """Record progress on the side thread, after the writes it covers.

        A crash in between only repeats a $set that changes nothing on the next attempt. A
        sub-chunk that wrote nothing needs no checkpoint (redoing it writes nothing either);
        progress still shows every CHECKPOINT_IDLE_SECONDS.
        """
        if not wrote and time.monotonic() - self._last_checkpoint < CHECKPOINT_IDLE_SECONDS:
            return
        self._last_checkpoint = time.monotonic()
        extra = self.chain.checkpoint_fields(self.batch, final=False)
        self.pipe.submit(
            self._checkpoint,
            **self.progress.as_doc(),
            lease_seconds=self.rt.settings.lease_seconds,
            source_inc=extra.get("source_inc"),
        )

    def _checkpoint(self, **fields: Any) -> bool:
        """store.checkpoint, which also extends the lease (on the pipe's thread)."""
        sent = time.monotonic()
        ok = store.checkpoint(self.meta, self.lease, **fields)
        if ok:
            self.keeper.extended(sent)
        return ok

    def finish(self) -> None:
        """One update for the last checkpoint and the finish instead of two."""
        p = self.progress
        last = None if p.last_id is NOTHING_PROCESSED else p.as_doc()
        with self.chain.phase(self.batch, "checkpoint"):
            self.pipe.settle()
            extra = self.chain.checkpoint_fields(self.batch, final=True)
            handoff = self.hand_on()
            done = store.finish_batch(
                self.meta,
                self.lease,
                progress=last,
                timings=extra.get("timings"),
                source_inc=extra.get("source_inc"),
            )
        if not done:
            if handoff is not None and handoff.claimed is not None:
                # Not our slot to hand on: the batch's new owner will.
                with contextlib.suppress(*TRANSIENT_ERRORS):
                    store.unqueue_batch(self.meta, handoff.claimed["_id"])
            raise LeaseLost
        self.batch.handoff = handoff

    def hand_on(self) -> Handoff | None:
        """Claim the next pending batch into this one's slot, before the finish frees it
        (backfill_engine.handoff); None when the counted dispatch must decide."""
        cap = handoff_cap(self.keeper.job_cap, self.doc, self.keeper.job_state)
        if cap is None:
            return None
        try:
            claimed = store.claim_pending(self.meta, self.batch.job_id, cap)
        except TRANSIENT_ERRORS:
            return None  # the after-batch dispatch counts and fills instead
        return Handoff(claimed, planned_total(self.job))
