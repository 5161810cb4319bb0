"""A batch run: the one place that sequences I/O.

lease → while the lease holds and the job runs: one sub-chunk (read documents → ask the
source → decide each id → renew the lease → write → quarantine → checkpoint) → finish →
dispatch next. The decisions themselves are backfill_engine.decide's, shared with dry-run
and verify.
"""

from __future__ import annotations

import datetime as dt
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import kombu.exceptions
import pymongo.errors
import redis
from pymongo import UpdateOne
from pymongo.collection import Collection

from backfill_engine import journal, paths, store
from backfill_engine.decide import QUARANTINED, Outcome, decide
from backfill_engine.definition import Backfill
from backfill_engine.dispatch import SERVER_OUTAGES, TaskSender, fill_in_flight, send_batch
from backfill_engine.http_client import (
    FetchInterrupted,
    SourceAuthError,
    SourceProtocolError,
    SourceUnavailableError,
)
from backfill_engine.payload import (
    CHAIN_START,
    build_set,
    chain_hash,
    item_digest,
)
from backfill_engine.ratelimit import RateLimitError
from backfill_engine.runtime import Runtime
from backfill_engine.schema import SchemaMismatchError, write_quarantine
from backfill_engine.sources import SourceContext, SourceResult
from backfill_engine.states import BATCH_IDS, METADATA, QUARANTINE, BatchStatus, JobStatus
from backfill_engine.store import Lease, maybe_complete_job, now_utc, pause_job_for, read_job

log = logging.getLogger(__name__)

RETRY_BACKOFF_CAP_SECONDS = 60.0
_NOTHING_PROCESSED = object()  # no sub-chunk ran in this delivery (e.g. resumed at the end)
CHECKPOINT_IDLE_SECONDS = 2.0  # longest gap between checkpoints while nothing is written
UNLEASED_RETRY_SECONDS = 2.0  # a task that could not even take its lease is re-sent after this
UNKNOWN_RETRY_SECONDS = 5.0  # a batch of a backfill this worker does not know, sent on
# A running batch's LeaseKeeper re-reads the job's status this often, so a pause or cancel
# stops the batch within about this long plus one sub-chunk. Every task still reads the
# status itself before it takes its lease, so no batch starts after a pause.
STATUS_RECHECK_SECONDS = 1.0

STOPPING_JOB_STATES = (JobStatus.PAUSED, JobStatus.CANCELLED, JobStatus.FAILED)
MIN_WRITE_MARGIN_SECONDS = 10.0  # clock-offset error between hosts plus one write, with room


def write_margin(lease_seconds: float) -> float:
    """How much of the lease must be left for a write to go without re-proving the lease."""
    return max(MIN_WRITE_MARGIN_SECONDS, lease_seconds / 3)


# Errors after which the same batch may well succeed later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    SourceUnavailableError,
    pymongo.errors.ConnectionFailure,
    pymongo.errors.OperationFailure,
    pymongo.errors.BulkWriteError,
    redis.RedisError,
    kombu.exceptions.OperationalError,  # the broker is down while we re-send a batch
    RateLimitError,
    TimeoutError,
)


class BatchLog(logging.LoggerAdapter):
    """Prefix every line with the job id and batch number."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[job {extra.get('job_id')} batch {extra.get('batch_no')}] {msg}", kwargs


class LeaseKeeper:
    """Keeps a running batch informed without stopping it: renews its lease and re-reads
    its job's status in the background.

    `lost` is set if another worker took the batch over; `job_state` is the job's status
    as last read (at most STATUS_RECHECK_SECONDS old), so the batch checks pause and
    cancel between sub-chunks without a round trip of its own.
    """

    def __init__(
        self,
        coll: Collection,
        lease: Lease,
        lease_seconds: float,
        *,
        job_id: str,
        job_state: str,
        recheck_seconds: float = STATUS_RECHECK_SECONDS,
        leased_at: float | None = None,
    ) -> None:
        self.coll, self.lease, self.lease_seconds = coll, lease, lease_seconds
        self.job_id, self.job_state, self.recheck_seconds = job_id, job_state, recheck_seconds
        self.lost = threading.Event()
        # Until when (monotonic) the lease is surely ours: set from the send time of the last
        # update that extended it (lease, renewal, checkpoint), so it errs on the early side.
        self.valid_until = (time.monotonic() if leased_at is None else leased_at) + lease_seconds
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")

    def extended(self, sent: float) -> None:
        """An update sent at `sent` (monotonic) extended the lease by a full lease period."""
        self.valid_until = max(self.valid_until, sent + self.lease_seconds)

    def surely_ours(self, margin: float) -> bool:
        """True while the lease cannot have expired for at least `margin` more seconds.

        Nobody can take a batch before its lease expires, so within that window a write
        needs no round trip to prove the lease is still ours.
        """
        return not self.lost.is_set() and time.monotonic() + margin < self.valid_until

    def __enter__(self) -> LeaseKeeper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def _run(self) -> None:
        renew_every = self.lease_seconds / 3
        next_renew = time.monotonic() + renew_every
        next_status = time.monotonic() + self.recheck_seconds
        while not self._stop.wait(max(0.0, min(next_renew, next_status) - time.monotonic())):
            now = time.monotonic()
            try:
                if now >= next_status:
                    next_status = now + self.recheck_seconds
                    job = read_job(self.coll, self.job_id, ("status",))
                    self.job_state = job["status"] if job else JobStatus.CANCELLED.value
                if now >= next_renew:
                    next_renew = now + renew_every
                    sent = time.monotonic()
                    if not store.renew_lease(self.coll, self.lease, self.lease_seconds):
                        self.lost.set()
                        return
                    self.extended(sent)
            except pymongo.errors.PyMongoError:
                continue  # the next round, the checkpoint or the finish will tell


class Stopwatch:
    """Seconds one batch spends per phase; kept on the batch document as `timings`.

    Two clock reads per phase, a handful of phases per sub-chunk: cheap next to any I/O.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.spent: dict[str, float] = {}

    @contextmanager
    def phase(self, name: str) -> Iterator[None]:
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.spent[name] = self.spent.get(name, 0.0) + time.perf_counter() - t0

    def as_doc(self) -> dict[str, float]:
        """`{<phase>_s: seconds, ..., total_s: seconds since the task started}`."""
        doc = {f"{name}_s": round(v, 4) for name, v in self.spent.items()}
        doc["total_s"] = round(time.perf_counter() - self.started, 4)
        return doc


class LeaseLost(Exception):
    """Another worker owns the batch now; stop without writing anything more."""


class CheckpointPipe:
    """Writes each checkpoint on a side thread while the next sub-chunk's documents are read.

    Order is kept: a checkpoint is submitted only after its sub-chunk's write returned,
    and `settle()` (before the next source call, the finish or a release) waits for it
    and raises LeaseLost if it found the lease gone. So nothing is fetched or written
    past a lost lease or an unrecorded checkpoint, a failed checkpoint costs the retry
    one sub-chunk of source calls as before, and progress records never overtake each
    other. What overlaps is the checkpoint round trip with the next status check and
    document reads. Measured to pay for itself (docs/benchmarks.md, fix 8): checkpoint
    wait per batch 35-50 ms -> 0.1-4 ms at 20 ms of API latency.
    """

    def __init__(self) -> None:
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="checkpoint")
        self._pending: Future[bool] | None = None

    def __enter__(self) -> CheckpointPipe:
        return self

    def __exit__(self, *exc: object) -> None:
        self._pool.shutdown(wait=True)  # a checkpoint in flight lands before any release

    def submit(self, write: Callable[..., bool], *args: Any, **kwargs: Any) -> None:
        self.settle()
        self._pending = self._pool.submit(write, *args, **kwargs)

    def settle(self) -> None:
        """Wait for the checkpoint in flight; its error is raised here."""
        pending, self._pending = self._pending, None
        if pending is not None and not pending.result():
            raise LeaseLost


def _quarantine_ops(job_id: str, batch_no: int, entries: list[dict[str, Any]]) -> list[UpdateOne]:
    now = now_utc()
    return [
        UpdateOne(
            {"job_id": job_id, "item_id": e["item_id"]},
            {
                "$set": {**e, "job_id": job_id, "batch_no": batch_no, "updated_at": now},
                "$setOnInsert": {"created_at": now, "replayed": False},
            },
            upsert=True,
        )
        for e in entries
    ]


def process_batch(
    rt: Runtime,
    sender: TaskSender,
    job_id: str,
    batch_no: int,
    owner: str,
    report: dict[str, Any] | None = None,
) -> str:
    """Run one batch to completion (or to a pause/cancel/lease loss); return the outcome.

    `report`, when given, receives the batch's progress `before` and `after` this delivery
    ({"counters", "processed"}), so the task can say what it did without reading it back.
    """
    blog = BatchLog(log, {"job_id": job_id, "batch_no": batch_no})
    started = _take(rt, sender, job_id, batch_no, owner, blog)
    if isinstance(started, str):
        return started
    run = started
    if report is not None:
        report["before"] = {
            "counters": dict(run.doc["counters"]),
            "processed": int(run.doc.get("processed") or 0),
        }
        report["after"] = run.progress  # read when the task builds its report
    try:
        outcome = run.run()
    except LeaseLost:
        blog.warning("lease lost to another worker; stopping without further writes")
        return "lease-lost"
    except SchemaMismatchError as exc:
        # Another release's layout: writing on would collide or mix names. Hand it back.
        store.release_batch(run.meta, run.lease, BatchStatus.PENDING, error=str(exc))
        pause_job_for(run.meta, job_id, str(exc))
        blog.error("job paused: %s", exc)
        return "schema-paused"
    except SourceAuthError as exc:
        store.release_batch(run.meta, run.lease, BatchStatus.PENDING, error=str(exc))
        pause_job_for(run.meta, job_id, f"the source rejected our credentials: {exc}")
        blog.error("source auth failed; job paused: %s", exc)
        return "auth-paused"
    except TRANSIENT_ERRORS as exc:
        return _after_failure(rt, sender, run.meta, run.lease, run.doc, job_id, batch_no, exc, blog)
    except Exception as exc:
        # A bug or an input we did not foresee: count it as a failed attempt, so the batch
        # ends `failed` with its error after max attempts instead of looping via the sweeper.
        blog.exception("unexpected error")
        return _after_failure(rt, sender, run.meta, run.lease, run.doc, job_id, batch_no, exc, blog)
    if outcome == "done":
        # The slot is free now: the next batches are handed out on this process's after-batch
        # thread while the slot already runs the next task. Measured to pay for itself
        # (docs/benchmarks.md, fix 10): 30-75 ms per batch off the slot's critical path.
        counters = dict(run.progress.counters)
        rt.after_batch.submit(_after_batch, rt, sender, job_id, counters, blog)
    return outcome


def _take(
    rt: Runtime, sender: TaskSender, job_id: str, batch_no: int, owner: str, blog: BatchLog
) -> BatchRun | str:
    """Check the job, take the batch's lease and load its ids; or say why not (an outcome)."""
    s = rt.settings
    meta: Collection = rt.db[METADATA]
    watch = Stopwatch()
    try:
        job = read_job(
            meta, job_id, ("status", "rate_per_second", "rate_auto", "backfill", "params")
        )
        if job is None:
            blog.warning("job not found; dropping task")
            return "no-job"
        backfill = rt.definitions.get(str(job.get("backfill")))
        if backfill is None:
            name = str(job.get("backfill"))
            return _not_mine(rt, sender, meta, job_id, batch_no, name, blog, rt.lacking.get(name))
        if job["status"] not in (JobStatus.PLANNING, JobStatus.RUNNING):
            store.unqueue_batch(meta, store.batch_id(job_id, batch_no))
            blog.info("job is %s; batch left pending", job["status"])
            return "job-" + job["status"]
        rt.for_job(job.get("rate_per_second") or s.rate_per_second, bool(job.get("rate_auto")))

        leased_at = time.monotonic()  # the lease runs from no later than this
        with watch.phase("lease"):
            taken = store.lease_batch(
                meta, store.batch_id(job_id, batch_no), owner, s.lease_seconds
            )
        if taken is None:
            blog.info("already done or leased by a live worker; skipping duplicate delivery")
            return "skipped"
    except TRANSIENT_ERRORS as exc:
        # No lease yet, so no batch state to record: send the batch again later. Raising
        # instead would ack the message away and leave the batch to a sweeper.
        error = f"{type(exc).__name__}: {str(exc)[:300]}"
        blog.warning("could not start (%s); re-sent in %.0fs", error, UNLEASED_RETRY_SECONDS)
        try:
            send_batch(sender, s.queue, job_id, batch_no, countdown=UNLEASED_RETRY_SECONDS)
        except SERVER_OUTAGES as again:
            # The batch is still queued in MongoDB: the sweeper re-sends it when Redis is back.
            blog.warning("could not re-send either (%s); left to the sweeper", type(again).__name__)
        return "retry"
    lease, doc = taken
    if int(doc["attempts"]) > s.max_attempts:
        # Every lease counts as an attempt, so a batch whose processing kills its worker
        # (out of memory, a crash in a C extension) cannot loop through the sweeper for ever.
        return _give_up(rt, meta, lease, job_id, int(doc["attempts"]) - 1, blog)
    try:
        with watch.phase("lease"):
            ids, ambiguous = store.load_batch(rt.db[BATCH_IDS], lease.batch_id)
        ctx = SourceContext(
            rt.db, job.get("params") or {}, http_client=rt.source_client(backfill.source)
        )
    except TRANSIENT_ERRORS as exc:
        return _after_failure(rt, sender, meta, lease, doc, job_id, batch_no, exc, blog)
    run = BatchRun(rt, backfill, ctx, job, lease, doc, ids, set(ambiguous), blog, watch)
    run.keeper.valid_until = leased_at + s.lease_seconds
    return run


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
        ctx: SourceContext,
        job: dict[str, Any],
        lease: Lease,
        doc: dict[str, Any],
        ids: list[Any],
        ambiguous: set[Any],
        blog: BatchLog,
        watch: Stopwatch,
    ) -> None:
        self.rt, self.backfill, self.ctx = rt, backfill, ctx
        self.lease, self.doc, self.ids, self.ambiguous = lease, doc, ids, ambiguous
        self.blog, self.watch = blog, watch
        self.job_id, self.batch_no = str(job["_id"]), int(doc["batch_no"])
        self.meta: Collection = rt.db[METADATA]
        self.docs: Collection = rt.db[backfill.collection]
        self.quarantine: Collection = rt.db[QUARANTINE]
        self.progress = Progress(doc)
        self.subchunk = min(rt.settings.subchunk_size, backfill.subchunk_size)
        self.keeper = LeaseKeeper(
            self.meta, lease, rt.settings.lease_seconds, job_id=self.job_id, job_state=job["status"]
        )
        self.pipe = CheckpointPipe()
        self._last_checkpoint = time.monotonic()
        self._source_written: dict[str, float] = {}
        # A source call that retries for long (trickling answers, 5xx) stops retrying as
        # soon as the job is paused or the lease is lost; the loop then hands back.
        ctx.should_stop = self._stopping

    def _stopping(self) -> bool:
        return self.keeper.lost.is_set() or self.keeper.job_state in STOPPING_JOB_STATES

    def run(self) -> str:
        """Sub-chunks until the batch is done or must stop; "done", "paused" or "cancelled"."""
        if self.progress.processed:
            self.blog.info(
                "resuming after %d of %d ids (last id %s)",
                self.progress.processed,
                len(self.ids),
                self.doc["last_processed_id"],
            )
        with self.keeper, self.pipe:
            while self.progress.processed < len(self.ids):
                with self.watch.phase("throttle"):  # database strained: wait (health.py)
                    self.rt.health.hold(self.job_id, self.keeper)
                stop = self.should_stop()
                if stop is not None:
                    return self.hand_back(stop)
                self.each_subchunk()
            self.finish()
        return "done"

    def should_stop(self) -> JobStatus | None:
        """Between sub-chunks: LeaseLost if the lease moved on; the job's state if it stopped."""
        if self.keeper.lost.is_set():
            raise LeaseLost
        state = self.keeper.job_state
        if state in STOPPING_JOB_STATES:
            return JobStatus(state)
        return None

    def hand_back(self, state: JobStatus) -> str:
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
        return "paused" if paused else "cancelled"

    def each_subchunk(self) -> None:
        """Read, ask the source, decide, write (under a renewed lease), then checkpoint."""
        p, watch = self.progress, self.watch
        chunk = self.ids[p.processed : p.processed + self.subchunk]
        with watch.phase("read"):
            # The synced stamp too: the journal keeps its before-image like the fields'.
            fields = (*self.backfill.projection, self.backfill.synced_field)
            current = read_current(self.docs, chunk, fields, per_read=self.rt.settings.read_ids)
        present = [current[i] for i in chunk if i in current and i not in self.ambiguous]
        with watch.phase("checkpoint"):
            # The last checkpoint must stand before we ask the source again: if it
            # failed, the retry refetches only the sub-chunk it did not record.
            self.pipe.settle()
        with watch.phase("source"):
            try:
                answer = _fetch(self.backfill, self.ctx, present, self.blog)
            except FetchInterrupted:
                return  # nothing written for this sub-chunk; the loop sees why and stops
        ops, held, before = self.apply_decisions(chunk, current, answer)
        with watch.phase("write"):
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
                held.append(decision.quarantine_entry(pid, _status_of(outcome, answer)))
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
        """Write the sub-chunk, only while the lease is ours (renewed right before)."""
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
                self.rt.db, self.job_id, self.batch_no, self.lease.token, before, days=days
            )
            # Filter on _id, never upsert: a document deleted meanwhile stays deleted.
            with self.rt.health.timed_write():  # feeds the write-latency throttle
                res = self.docs.bulk_write(ops, ordered=False)
            c["written"] += res.modified_count
            c["unchanged"] += res.matched_count - res.modified_count
            c["deleted"] += len(ops) - res.matched_count
        if held:
            entries = _quarantine_ops(self.job_id, self.batch_no, held)
            write_quarantine(self.rt.db, self.job_id, [e["item_id"] for e in held], entries)

    def maybe_checkpoint(self, *, wrote: bool) -> None:
        """Record progress on the side thread, after the writes it covers.

        A crash in between only repeats a $set that changes nothing on the next attempt. A
        sub-chunk that wrote nothing needs no checkpoint (redoing it writes nothing either);
        progress still shows every CHECKPOINT_IDLE_SECONDS. Saves an update per sub-chunk
        on reruns.
        """
        if not wrote and time.monotonic() - self._last_checkpoint < CHECKPOINT_IDLE_SECONDS:
            return
        self._last_checkpoint = time.monotonic()
        self.pipe.submit(
            self._checkpoint,
            **self.progress.as_doc(),
            lease_seconds=self.rt.settings.lease_seconds,
            source_inc=self._source_delta(),
        )

    def _checkpoint(self, **fields: Any) -> bool:
        """store.checkpoint, which also extends the lease (on the pipe's thread)."""
        sent = time.monotonic()
        ok = store.checkpoint(self.meta, self.lease, **fields)
        if ok:
            self.keeper.extended(sent)
        return ok

    def _source_delta(self) -> dict[str, float]:
        """What the source calls cost since the last progress write (then marked written)."""
        now = dict(self.ctx.stats)
        delta = {k: round(v - self._source_written.get(k, 0), 4) for k, v in now.items()}
        self._source_written = now
        return delta

    def finish(self) -> None:
        """One update for the last checkpoint and the finish instead of two."""
        p = self.progress
        last = None if p.last_id is _NOTHING_PROCESSED else p.as_doc()
        with self.watch.phase("checkpoint"):
            self.pipe.settle()
            timings = self.watch.as_doc()
            delta = self._source_delta()
            done = store.finish_batch(
                self.meta, self.lease, progress=last, timings=timings, source_inc=delta
            )
        if not done:
            raise LeaseLost


def _after_batch(
    rt: Runtime, sender: TaskSender, job_id: str, counters: dict[str, int], blog: BatchLog
) -> None:
    """Queue the job's next batches, or close the job if this was its last one.

    Nothing here can lose work: the batch is recorded done before this runs, and if
    this process dies first, the sweeper (in every worker and every waiting command)
    dispatches pending batches and completes the job.
    """
    started = time.perf_counter()
    meta = rt.db[METADATA]
    try:
        # A batch just sent means the job is not complete: skip that check's count.
        if not fill_in_flight(meta, sender, rt.settings.queue, job_id):
            maybe_complete_job(meta, rt.db[QUARANTINE], job_id)
    except TRANSIENT_ERRORS as exc:
        # The next finished batch or the sweeper dispatches.
        blog.warning("done, but dispatching next batches failed: %s: %s", type(exc).__name__, exc)
    except Exception:
        blog.exception("done, but dispatching next batches failed unexpectedly")
    # after_s: dispatching the next batches and the completion check, past `timings`.
    blog.info("done: %s after_s=%.4f", counters, time.perf_counter() - started)


def read_current(
    coll: Collection, ids: list[Any], fields: Iterable[str], *, per_read: int = 0
) -> dict[Any, dict[str, Any]]:
    """The documents among `ids` that exist, with only `fields` (dotted paths read the
    nested value; a path under another one is covered by it), keyed by `_id`.

    One query, or one per `per_read` ids when that is set (BACKFILL_READ_IDS): some
    servers charge more than linearly for a long `$in` list.
    """
    projection = paths.projection(fields)
    step = per_read if per_read > 0 else max(len(ids), 1)
    found: dict[Any, dict[str, Any]] = {}
    for start in range(0, len(ids), step):
        piece = ids[start : start + step]
        # One more than can match: the first reply then holds every document and closes
        # the cursor; with exactly len(piece) the server cannot tell it is done, and a
        # getMore follows.
        for d in coll.find({"_id": {"$in": piece}}, projection, batch_size=len(piece) + 1):
            found[d["_id"]] = d
    return found


# Which batch counter a quarantined outcome counts under (ambiguous ids are refused input).
COUNTER_OF = {Outcome.MISSING: "missing", Outcome.INVALID: "invalid", Outcome.AMBIGUOUS: "invalid"}


def _status_of(outcome: Outcome, result: SourceResult) -> int | None:
    if outcome is Outcome.AMBIGUOUS:
        return None
    if outcome is Outcome.MISSING:
        return 200 if result.http_status is None else result.http_status
    return result.http_status


def _fetch(
    backfill: Backfill, ctx: SourceContext, docs: list[dict[str, Any]], blog: BatchLog
) -> SourceResult:
    """Ask the source for a sub-chunk; quarantine it whole only when no id got an answer.

    The HTTP client splits a request that fails for some ids' content and reports only
    those ids in error; SourceProtocolError means every part, each id alone too, came
    back broken or refused (or the API broke its contract: a redirect, an odd status).
    """
    if not docs:
        return SourceResult.empty()
    try:
        return backfill.source.fetch(docs, ctx)
    except SourceProtocolError as exc:
        ids = [d["_id"] for d in docs]
        blog.warning("source gave no usable answer for %d ids: %s", len(ids), exc)
        return SourceResult.all_invalid(ids, f"{type(exc).__name__}: {exc}", exc.status)


def _not_mine(
    rt: Runtime,
    sender: TaskSender,
    meta: Collection,
    job_id: str,
    batch_no: int,
    name: str,
    blog: BatchLog,
    unmet: list[str] | None = None,
) -> str:
    """A batch of a backfill this worker does not know, or knows but lacks settings for
    (`unmet`): leave it to a worker that can run it.

    Not leased, re-sent later; the job records which workers lack the definition or which
    setting, so `status` can say so instead of the job silently stalling.
    """
    host = socket.gethostname()
    if unmet:
        blog.error("backfill %r needs %s, not set on this worker; not taken", name, unmet)
        record = {"workers_lacking_settings": f"{host}: {', '.join(unmet)}"}
    else:
        blog.error("backfill %r is not known to this worker (BACKFILL_IMPORTS); not taken", name)
        record = {"unknown_to_workers": host}
    try:
        meta.update_one({"_id": job_id, "kind": "job"}, {"$addToSet": record})
        send_batch(sender, rt.settings.queue, job_id, batch_no, countdown=UNKNOWN_RETRY_SECONDS)
    except SERVER_OUTAGES as exc:
        blog.warning("could not re-send (%s); left to the sweeper", type(exc).__name__)
    return "unknown-backfill"


def _give_up(
    rt: Runtime, meta: Collection, lease: Lease, job_id: str, leases: int, blog: BatchLog
) -> str:
    """Fail a batch leased `leases` times without finishing; the job goes on without it."""
    error = (
        f"leased {leases} times without finishing "
        f"(BACKFILL_MAX_ATTEMPTS={rt.settings.max_attempts}); its worker may have died on it"
    )
    if store.fail_batch(meta, lease, error):
        blog.error("failed: %s", error)
        maybe_complete_job(meta, rt.db[QUARANTINE], job_id)
    return "failed"


def _after_failure(
    rt: Runtime,
    sender: TaskSender,
    meta: Collection,
    lease: Lease,
    doc: dict[str, Any],
    job_id: str,
    batch_no: int,
    exc: BaseException,
    blog: BatchLog,
) -> str:
    """Retry the batch later with backoff, or mark it failed after its last attempt."""
    error = f"{type(exc).__name__}: {str(exc)[:300]}"
    attempts = int(doc["attempts"])
    try:
        if attempts >= rt.settings.max_attempts:
            store.fail_batch(meta, lease, error)
            blog.error("failed after %d attempts: %s", attempts, error)
            maybe_complete_job(meta, rt.db[QUARANTINE], job_id)
            return "failed"
        delay = min(RETRY_BACKOFF_CAP_SECONDS, 2.0**attempts)
        retry_at = now_utc() + dt.timedelta(seconds=delay)
        if store.release_batch(meta, lease, BatchStatus.QUEUED, error=error, retry_at=retry_at):
            send_batch(sender, rt.settings.queue, job_id, batch_no, countdown=delay)
        blog.warning("attempt %d failed (%s); retrying in %.0fs", attempts, error, delay)
    except SERVER_OUTAGES as again:
        # Cannot even record the failure: the lease expires and the sweeper re-dispatches.
        blog.error("could not record failure (%s); leaving it to the sweeper", again)
    return "retry"
