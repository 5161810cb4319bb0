"""The batch core: the rules that make one batch delivery safe, and nothing else.

take (the job runs → lease → ids) → while the lease holds and the job runs, one sub-chunk
(read documents → ask the source → decide each id → prove the lease → journal the
before-images → write → quarantine → checkpoint, in order) → finish, or hand back at the
checkpoint. It returns a BatchOutcome. Everything that cuts across it (health throttle,
timings, source statistics, next dispatch, failure policy) is a hook in
backfill_engine/hooks/; the per-id decisions are backfill_engine.decide's, shared with
dry-run and verify.
"""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Sequence
from typing import Any

from pymongo import UpdateOne
from pymongo.collection import Collection

from backfill_engine import journal, store
from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_context import BatchLog as BatchLog
from backfill_engine.batch_io import COUNTER_OF, ask_source, quarantine_ops, status_of
from backfill_engine.batch_io import read_current as read_current
from backfill_engine.batch_outcome import (
    TRANSIENT_ERRORS,
    Action,
    BatchOutcome,
    LeasedTooOften,
    error_text,
    retry_or_fail,
)
from backfill_engine.checkpoint_pipe import CheckpointPipe
from backfill_engine.decide import QUARANTINED, Outcome, decide
from backfill_engine.definition import Backfill
from backfill_engine.dispatch import SERVER_OUTAGES, TaskSender, send_batch
from backfill_engine.hooks import BatchHook, HookChain, default_hooks
from backfill_engine.http_client import FetchInterrupted
from backfill_engine.lease_keeper import STOPPING_JOB_STATES, LeaseKeeper, LeaseLost, write_margin
from backfill_engine.payload import CHAIN_START, build_set, chain_hash, item_digest
from backfill_engine.runtime import Runtime
from backfill_engine.schema import write_quarantine
from backfill_engine.sources import SourceContext, SourceResult
from backfill_engine.states import BATCH_IDS, METADATA, QUARANTINE, BatchStatus, JobStatus
from backfill_engine.store import maybe_complete_job, now_utc, pause_job_for, read_job

log = logging.getLogger(__name__)

_NOTHING_PROCESSED = object()  # no sub-chunk ran in this delivery (e.g. resumed at the end)
CHECKPOINT_IDLE_SECONDS = 2.0  # longest gap between checkpoints while nothing is written
UNLEASED_RETRY_SECONDS = 2.0  # a task that could not even take its lease is re-sent after this


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
    started = _take(rt, sender, batch, chain)
    if isinstance(started, BatchOutcome):
        return started
    run = started
    if report is not None:
        report["before"] = {
            "counters": dict(run.doc["counters"]),
            "processed": int(run.doc.get("processed") or 0),
        }
        report["after"] = run.progress  # read when the task builds its report
    try:
        return run.run()
    except LeaseLost:
        batch.log.warning("lease lost to another worker; stopping without further writes")
        return BatchOutcome.LEASE_LOST
    except Exception as exc:
        return _after_error(rt, sender, batch, chain, exc)


def _take(
    rt: Runtime, sender: TaskSender, batch: BatchContext, chain: HookChain
) -> BatchRun | BatchOutcome:
    """Check the job, take the batch's lease and load its ids; or say why not (an outcome)."""
    s, blog = rt.settings, batch.log
    job_id, batch_no = batch.job_id, batch.batch_no
    meta: Collection = rt.db[METADATA]
    try:
        job = read_job(
            meta, job_id, ("status", "rate_per_second", "rate_auto", "backfill", "params")
        )
        if job is None:
            blog.warning("job not found; dropping task")
            return BatchOutcome.NO_JOB
        name = str(job.get("backfill"))
        backfill = rt.definitions.get(name)
        if backfill is None:
            chain.before("on_unknown_backfill", batch, name, rt.lacking.get(name))
            return BatchOutcome.UNKNOWN_BACKFILL
        if job["status"] not in (JobStatus.PLANNING, JobStatus.RUNNING):
            store.unqueue_batch(meta, store.batch_id(job_id, batch_no))
            blog.info("job is %s; batch left pending", job["status"])
            return BatchOutcome.JOB_NOT_RUNNABLE
        batch.backfill, batch.params = backfill, job.get("params") or {}
        batch.rate = float(job.get("rate_per_second") or s.rate_per_second)
        batch.rate_auto = bool(job.get("rate_auto"))

        leased_at = time.monotonic()  # the lease runs from no later than this
        with chain.phase(batch, "lease"):
            taken = store.lease_batch(
                meta, store.batch_id(job_id, batch_no), batch.owner, s.lease_seconds
            )
        if taken is None:
            blog.info("already done or leased by a live worker; skipping duplicate delivery")
            return BatchOutcome.SKIPPED
    except TRANSIENT_ERRORS as exc:
        # No lease yet, so no batch state to record: send the batch again later. Raising
        # instead would ack the message away and leave the batch to a sweeper.
        error = error_text(exc)
        blog.warning("could not start (%s); re-sent in %.0fs", error, UNLEASED_RETRY_SECONDS)
        try:
            send_batch(sender, s.queue, job_id, batch_no, countdown=UNLEASED_RETRY_SECONDS)
        except SERVER_OUTAGES as again:
            # The batch is still queued in MongoDB: the sweeper re-sends it when Redis is back.
            blog.warning("could not re-send either (%s); left to the sweeper", type(again).__name__)
        return BatchOutcome.RETRY
    batch.lease, doc = taken
    batch.attempts = int(doc["attempts"])
    if batch.attempts > s.max_attempts:
        # Every lease counts as an attempt, so a batch whose processing kills its worker
        # (out of memory, a crash in a C extension) cannot loop through the sweeper for ever.
        exhausted = LeasedTooOften(batch.attempts - 1, s.max_attempts)
        return _after_error(rt, sender, batch, chain, exhausted)
    try:
        with chain.phase(batch, "lease"):
            ids, ambiguous = store.load_batch(rt.db[BATCH_IDS], batch.lease.batch_id)
        ctx = SourceContext(
            rt.db, job.get("params") or {}, http_client=rt.source_client(backfill.source)
        )
    except TRANSIENT_ERRORS as exc:
        return _after_error(rt, sender, batch, chain, exc)
    batch.source = ctx
    run = BatchRun(rt, backfill, batch, chain, job["status"], doc, ids, set(ambiguous))
    run.keeper.valid_until = leased_at + s.lease_seconds
    return run


def _after_error(
    rt: Runtime, sender: TaskSender, batch: BatchContext, chain: HookChain, exc: BaseException
) -> BatchOutcome:
    """Carry out the failure policy's decision on a leased batch, or the safe default when
    the policy raised or had none."""
    s, blog, meta, lease = rt.settings, batch.log, rt.db[METADATA], batch.lease
    assert lease is not None
    decision = chain.decide(batch, exc) or retry_or_fail(exc, batch.attempts, s.max_attempts)
    try:
        if decision.action is Action.PAUSE:
            reason = decision.job_reason or decision.error
            store.release_batch(meta, lease, BatchStatus.PENDING, error=decision.error)
            pause_job_for(meta, batch.job_id, reason)
            blog.error("job paused: %s", reason)
            return decision.outcome
        if decision.action is Action.FAIL:
            store.fail_batch(meta, lease, decision.error)
            blog.error("failed after %d attempts: %s", batch.attempts, decision.error)
            maybe_complete_job(meta, rt.db[QUARANTINE], batch.job_id)
            return BatchOutcome.FAILED
        retry_at = now_utc() + dt.timedelta(seconds=decision.delay)
        error = decision.error
        if store.release_batch(meta, lease, BatchStatus.QUEUED, error=error, retry_at=retry_at):
            send_batch(sender, s.queue, batch.job_id, batch.batch_no, countdown=decision.delay)
        blog.warning(
            "attempt %d failed (%s); retrying in %.0fs", batch.attempts, error, decision.delay
        )
    except SERVER_OUTAGES as again:
        # Cannot even record the failure: the lease expires and the sweeper re-dispatches.
        blog.error("could not record failure (%s); leaving it to the sweeper", again)
    return BatchOutcome.RETRY


class Progress:
    """Where a batch stands: ids processed, last id, running payload hash, item counters."""

    def __init__(self, doc: dict[str, Any]) -> None:
        self.processed = int(doc.get("processed") or 0)
        self.last_id: Any = _NOTHING_PROCESSED
        self.payload_hash: str | None = doc.get("payload_hash")
        self.counters: dict[str, int] = dict(doc["counters"])

    def as_doc(self) -> dict[str, Any]:
        """The checkpoint fields, as store.checkpoint and store.finish_batch write them."""
        return {
            "processed": self.processed,
            "last_processed_id": self.last_id,
            "payload_hash": self.payload_hash,
            "counters": dict(self.counters),  # the loop goes on counting meanwhile
        }


class BatchRun:
    """One leased batch, shaped like job-iteration: while the lease holds and the job runs,
    do one sub-chunk. Cursor (`Progress`), interruption and resumption are the engine's."""

    def __init__(
        self,
        rt: Runtime,
        backfill: Backfill,
        batch: BatchContext,
        chain: HookChain,
        job_state: str,
        doc: dict[str, Any],
        ids: list[Any],
        ambiguous: set[Any],
    ) -> None:
        assert batch.lease is not None and batch.source is not None
        self.rt, self.backfill, self.batch, self.chain = rt, backfill, batch, chain
        self.lease, self.ctx, self.blog = batch.lease, batch.source, batch.log
        self.doc, self.ids, self.ambiguous = doc, ids, ambiguous
        self.meta: Collection = rt.db[METADATA]
        self.docs: Collection = rt.db[backfill.collection]
        self.progress = Progress(doc)
        batch.counters = self.progress.counters
        self.subchunk = min(rt.settings.subchunk_size, backfill.subchunk_size)
        self.keeper = batch.keeper = LeaseKeeper(
            self.meta,
            self.lease,
            rt.settings.lease_seconds,
            job_id=batch.job_id,
            job_state=job_state,
        )
        self.pipe = CheckpointPipe()
        self._last_checkpoint = time.monotonic()
        # A source call that retries for long (trickling answers, 5xx) stops retrying as
        # soon as the job is paused or the lease is lost; the loop then hands back.
        self.ctx.should_stop = self._stopping

    def _stopping(self) -> bool:
        return self.keeper.lost.is_set() or self.keeper.job_state in STOPPING_JOB_STATES

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
        """Read, ask the source, decide, write (under a proven lease), then checkpoint."""
        p, phase, batch = self.progress, self.chain.phase, self.batch
        chunk = self.ids[p.processed : p.processed + self.subchunk]
        with phase(batch, "read"):
            # The synced stamp too: the journal keeps its before-image like the fields'.
            fields = (*self.backfill.projection, self.backfill.synced_field)
            current = read_current(self.docs, chunk, fields, per_read=self.rt.settings.read_ids)
        present = [current[i] for i in chunk if i in current and i not in self.ambiguous]
        with phase(batch, "checkpoint"):
            # The last checkpoint must stand before we ask the source again: if it
            # failed, the retry refetches only the sub-chunk it did not record.
            self.pipe.settle()
        with phase(batch, "source"):
            self.chain.before("before_source", batch, present)
            try:
                answer = ask_source(self.backfill, self.ctx, present, self.blog)
            except FetchInterrupted:
                return  # nothing written for this sub-chunk; the loop sees why and stops
            self.chain.after("after_source", batch, answer)
        ops, held, before = self.apply_decisions(chunk, current, answer)
        with phase(batch, "write"):
            self.write(ops, held, before)
        p.processed += len(chunk)
        p.last_id = chunk[-1]
        if p.processed < len(self.ids):
            self.maybe_checkpoint(wrote=bool(ops or held))

    def apply_decisions(
        self, chunk: list[Any], current: dict[Any, dict[str, Any]], answer: SourceResult
    ) -> tuple[list[UpdateOne], list[dict[str, Any]], list[dict[str, Any]]]:
        """The sub-chunk's document updates, quarantine entries and the updates' before-images
        (backfill_engine.journal); counts and hashes the rest."""
        p = self.progress
        ops: list[UpdateOne] = []
        held: list[dict[str, Any]] = []
        before: list[dict[str, Any]] = []
        now = now_utc()
        for pid in chunk:
            decision = decide(
                self.backfill, pid, current.get(pid), answer, ambiguous=pid in self.ambiguous
            )
            outcome = decision.outcome
            if outcome in QUARANTINED:
                p.counters[COUNTER_OF[outcome]] += 1
                held.append(decision.quarantine_entry(pid, status_of(outcome, answer)))
            elif outcome is Outcome.DELETED:
                p.counters["deleted"] += 1
            else:
                digest = item_digest(pid, decision.fields)
                p.payload_hash = chain_hash(p.payload_hash or CHAIN_START, digest)
                if outcome is Outcome.WRITE:
                    written = build_set(decision.diff, now, self.backfill.synced_field)
                    ops.append(UpdateOne({"_id": pid}, {"$set": written}))
                    before.append(journal.before_image(pid, current[pid], written))
                else:
                    p.counters["unchanged"] += 1
        return ops, held, before

    def write(
        self, ops: list[UpdateOne], held: list[dict[str, Any]], before: list[dict[str, Any]]
    ) -> None:
        """Write the sub-chunk, only while the lease is surely ours (proven right before)."""
        if not (ops or held):
            return
        lease_seconds = self.rt.settings.lease_seconds
        if not self.keeper.surely_ours(write_margin(lease_seconds)):
            # The source call may have waited longer than the lease (rate-limit waits, 429
            # pauses, retries, a stalled link): prove the lease is still ours right before
            # writing, never over what the worker that took the batch over wrote.
            sent = time.monotonic()
            if not store.renew_lease(self.meta, self.lease, lease_seconds):
                raise LeaseLost
            self.keeper.extended(sent)
        c = self.progress.counters
        if ops:
            # Before-images first, under the same proven lease: a crash in between leaves a
            # journal entry for a write that never landed (undo compares, so harmless), never
            # a written document without its before-image.
            days = self.rt.settings.journal_days
            journal.record(
                self.rt.db,
                self.batch.job_id,
                self.batch.batch_no,
                self.lease.token,
                before,
                days=days,
            )
            # Filter on _id, never upsert: a document deleted meanwhile stays deleted.
            t0, ok = time.perf_counter(), False
            try:
                res = self.docs.bulk_write(ops, ordered=False)
                ok = True
            finally:
                self.chain.after("after_write", self.batch, time.perf_counter() - t0, ok)
            c["written"] += res.modified_count
            c["unchanged"] += res.matched_count - res.modified_count
            c["deleted"] += len(ops) - res.matched_count
        if held:
            entries = quarantine_ops(self.batch.job_id, self.batch.batch_no, held)
            write_quarantine(self.rt.db, self.batch.job_id, [e["item_id"] for e in held], entries)

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
        last = None if p.last_id is _NOTHING_PROCESSED else p.as_doc()
        with self.chain.phase(self.batch, "checkpoint"):
            self.pipe.settle()
            extra = self.chain.checkpoint_fields(self.batch, final=True)
            done = store.finish_batch(
                self.meta,
                self.lease,
                progress=last,
                timings=extra.get("timings"),
                source_inc=extra.get("source_inc"),
            )
        if not done:
            raise LeaseLost
