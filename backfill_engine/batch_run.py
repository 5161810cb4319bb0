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

from backfill_engine import store
from backfill_engine.decide import QUARANTINED, Outcome, decide
from backfill_engine.definition import Backfill
from backfill_engine.dispatch import SERVER_OUTAGES, TaskSender, fill_in_flight, send_batch
from backfill_engine.http_client import (
    CatalogAuthError,
    CatalogProtocolError,
    CatalogUnavailableError,
)
from backfill_engine.payload import (
    CHAIN_START,
    build_set,
    chain_hash,
    item_digest,
)
from backfill_engine.ratelimit import RateLimitError
from backfill_engine.runtime import Runtime
from backfill_engine.sources import HttpSource, SourceContext, SourceResult
from backfill_engine.states import BATCH_IDS, METADATA, QUARANTINE, BatchStatus, JobStatus
from backfill_engine.store import Lease, maybe_complete_job, now_utc, pause_job_for, read_job

log = logging.getLogger(__name__)

RETRY_BACKOFF_CAP_SECONDS = 60.0
_NOTHING_PROCESSED = object()  # no sub-chunk ran in this delivery (e.g. resumed at the end)
CHECKPOINT_IDLE_SECONDS = 2.0  # longest gap between checkpoints while nothing is written
READ_PIECE_IDS = 25  # ids per `$in` when reading products (see read_current)
UNLEASED_RETRY_SECONDS = 2.0  # a task that could not even take its lease is re-sent after this
UNKNOWN_RETRY_SECONDS = 30.0  # a batch of a backfill this worker does not know, sent on
# A running batch's LeaseKeeper re-reads the job's status this often, so a pause or cancel
# stops the batch within about this long plus one sub-chunk. Every task still reads the
# status itself before it takes its lease, so no batch starts after a pause.
STATUS_RECHECK_SECONDS = 1.0

# Errors after which the same batch may well succeed later.
TRANSIENT_ERRORS: tuple[type[BaseException], ...] = (
    CatalogUnavailableError,
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
    ) -> None:
        self.coll, self.lease, self.lease_seconds = coll, lease, lease_seconds
        self.job_id, self.job_state, self.recheck_seconds = job_id, job_state, recheck_seconds
        self.lost = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="lease-keeper")

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
                    if not store.renew_lease(self.coll, self.lease, self.lease_seconds):
                        self.lost.set()
                        return
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
    """Writes each checkpoint on a side thread while the next sub-chunk's products are read.

    Order is kept: a checkpoint is submitted only after its sub-chunk's write returned,
    and `settle()` (before the next catalog call, the finish or a release) waits for it
    and raises LeaseLost if it found the lease gone. So nothing is fetched or written
    past a lost lease or an unrecorded checkpoint, a failed checkpoint costs the retry
    one sub-chunk of catalog calls as before, and progress records never overtake each
    other. What overlaps is the checkpoint round trip with the next status check and
    product reads.
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
            {"job_id": job_id, "product_id": e["product_id"]},
            {
                "$set": {**e, "job_id": job_id, "batch_no": batch_no, "updated_at": now},
                "$setOnInsert": {"created_at": now, "replayed": False},
            },
            upsert=True,
        )
        for e in entries
    ]


def process_batch(rt: Runtime, sender: TaskSender, job_id: str, batch_no: int, owner: str) -> str:
    """Run one batch to completion (or to a pause/cancel/lease loss); return the outcome."""
    s = rt.settings
    meta: Collection = rt.db[METADATA]
    quarantine: Collection = rt.db[QUARANTINE]
    blog = BatchLog(log, {"job_id": job_id, "batch_no": batch_no})
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
            return _not_mine(rt, sender, meta, job_id, batch_no, str(job.get("backfill")), blog)
        if job["status"] not in (JobStatus.PLANNING, JobStatus.RUNNING):
            meta.update_one(
                {"_id": store.batch_id(job_id, batch_no), "status": BatchStatus.QUEUED.value},
                {"$set": {"status": BatchStatus.PENDING.value}},
            )
            blog.info("job is %s; batch left pending", job["status"])
            return "job-" + job["status"]
        rt.rate = float(job.get("rate_per_second") or s.rate_per_second)
        rt.rate_auto = bool(job.get("rate_auto"))  # `--rate auto`: see rate_control.py

        with watch.phase("lease"):
            bid = store.batch_id(job_id, batch_no)
            taken = store.lease_batch(meta, bid, owner, s.lease_seconds)
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
    docs: Collection = rt.db[backfill.collection]
    ctx = SourceContext(rt.db, job.get("params") or {})
    if isinstance(backfill.source, HttpSource):
        ctx.http = rt.http_for(backfill.source)
    if int(doc["attempts"]) > s.max_attempts:
        # Every lease counts as an attempt, so a batch whose processing kills its worker
        # (out of memory, a crash in a C extension) cannot loop through the sweeper for ever.
        return _give_up(rt, meta, lease, job_id, int(doc["attempts"]) - 1, blog)
    try:
        with watch.phase("lease"):
            ids, ambiguous_ids = store.load_batch(rt.db[BATCH_IDS], lease.batch_id)
    except TRANSIENT_ERRORS as exc:
        return _after_failure(rt, sender, meta, lease, doc, job_id, batch_no, exc, blog)
    processed = int(doc.get("processed") or 0)
    if processed:
        blog.info(
            "resuming after %d of %d ids (last id %s)",
            processed,
            len(ids),
            doc["last_processed_id"],
        )
    ambiguous = set(ambiguous_ids)
    counters: dict[str, int] = dict(doc["counters"])
    payload_hash: str | None = doc.get("payload_hash")
    sub = min(s.subchunk_size, backfill.subchunk_size)
    last_id: Any = _NOTHING_PROCESSED
    last_checkpoint = time.monotonic()

    keeper = LeaseKeeper(meta, lease, s.lease_seconds, job_id=job_id, job_state=job["status"])
    try:
        with keeper, CheckpointPipe() as pipe:
            while processed < len(ids):
                # Between sub-chunks: honour pause/cancel and stop if the lease moved on.
                if keeper.lost.is_set():
                    raise LeaseLost
                state = keeper.job_state
                if state == JobStatus.PAUSED.value:
                    pipe.settle()
                    store.release_batch(meta, lease, BatchStatus.PENDING)
                    blog.info("job paused; batch released at %d/%d", processed, len(ids))
                    return "paused"
                if state in (JobStatus.CANCELLED.value, JobStatus.FAILED.value):
                    pipe.settle()
                    store.release_batch(meta, lease, BatchStatus.CANCELLED)
                    blog.info("job %s; batch stopped at %d/%d", state, processed, len(ids))
                    return "cancelled"

                chunk = ids[processed : processed + sub]
                with watch.phase("read"):
                    current = read_current(docs, chunk, backfill.projection)
                present = [current[i] for i in chunk if i in current and i not in ambiguous]
                with watch.phase("checkpoint"):
                    # The last checkpoint must stand before we ask the source again: if it
                    # failed, the retry refetches only the sub-chunk it did not record.
                    pipe.settle()
                with watch.phase("catalog"):
                    result = _fetch(backfill, ctx, present, blog)

                ops: list[UpdateOne] = []
                held: list[dict[str, Any]] = []
                now = now_utc()
                for pid in chunk:
                    decision = decide(
                        backfill, pid, current.get(pid), result, ambiguous=pid in ambiguous
                    )
                    outcome = decision.outcome
                    if outcome in QUARANTINED:
                        counters[COUNTER_OF[outcome]] += 1
                        held.append(decision.quarantine_entry(pid, _status_of(outcome, result)))
                        continue
                    if outcome is Outcome.DELETED:
                        counters["deleted"] += 1
                        continue
                    payload_hash = chain_hash(
                        payload_hash or CHAIN_START, item_digest(pid, decision.fields)
                    )
                    if outcome is Outcome.WRITE:
                        update = {"$set": build_set(decision.diff, now, backfill.synced_field)}
                        ops.append(UpdateOne({"_id": pid}, update))
                    else:
                        counters["unchanged"] += 1

                with watch.phase("write"):
                    if (ops or held) and not store.renew_lease(meta, lease, s.lease_seconds):
                        # The catalog call may have waited longer than the lease (rate-limit
                        # waits, 429 pauses, retries): write only while the lease is ours,
                        # never over what the worker that took the batch over wrote.
                        raise LeaseLost
                    if ops:
                        # Filter on _id, never upsert: a product deleted meanwhile stays deleted.
                        res = docs.bulk_write(ops, ordered=False)
                        counters["written"] += res.modified_count
                        counters["unchanged"] += res.matched_count - res.modified_count
                        counters["deleted"] += len(ops) - res.matched_count
                    if held:
                        quarantine.bulk_write(
                            _quarantine_ops(job_id, batch_no, held), ordered=False
                        )
                processed += len(chunk)
                last_id = chunk[-1]
                if processed >= len(ids):
                    break  # the finish below carries this last checkpoint
                # Checkpoint after the writes: a crash in between only repeats a $set that
                # changes nothing on the next attempt. A sub-chunk that wrote nothing needs
                # no checkpoint (redoing it writes nothing either); progress still shows
                # every CHECKPOINT_IDLE_SECONDS. Saves a metadata update per sub-chunk on reruns.
                wrote = bool(ops or held)
                if not wrote and time.monotonic() - last_checkpoint < CHECKPOINT_IDLE_SECONDS:
                    continue
                last_checkpoint = time.monotonic()
                pipe.submit(
                    store.checkpoint,
                    meta,
                    lease,
                    processed=processed,
                    last_processed_id=last_id,
                    payload_hash=payload_hash,
                    counters=dict(counters),  # the loop goes on counting meanwhile
                    lease_seconds=s.lease_seconds,
                )
            # One update for the last checkpoint and the finish instead of two.
            progress = None
            if last_id is not _NOTHING_PROCESSED:
                progress = {
                    "processed": processed,
                    "last_processed_id": last_id,
                    "payload_hash": payload_hash,
                    "counters": counters,
                }
            with watch.phase("checkpoint"):
                pipe.settle()
                finished = store.finish_batch(
                    meta, lease, progress=progress, timings=watch.as_doc()
                )
            if not finished:
                raise LeaseLost
    except LeaseLost:
        blog.warning("lease lost to another worker; stopping without further writes")
        return "lease-lost"
    except CatalogAuthError as exc:
        store.release_batch(meta, lease, BatchStatus.PENDING, error=str(exc))
        pause_job_for(meta, job_id, f"catalog rejected our credentials: {exc}")
        blog.error("catalog auth failed; job paused: %s", exc)
        return "auth-paused"
    except TRANSIENT_ERRORS as exc:
        return _after_failure(rt, sender, meta, lease, doc, job_id, batch_no, exc, blog)
    except Exception as exc:
        # A bug or an input we did not foresee: count it as a failed attempt, so the batch
        # ends `failed` with its error after max attempts instead of looping via the sweeper.
        blog.exception("unexpected error")
        return _after_failure(rt, sender, meta, lease, doc, job_id, batch_no, exc, blog)

    # The slot is free now: the next batches are handed out on this process's after-batch
    # thread while the slot already runs the next task (docs/benchmarks.md, fix 10).
    rt.after_batch.submit(_after_batch, rt, sender, job_id, dict(counters), blog)
    return "done"


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
    products: Collection, ids: list[Any], fields: Iterable[str]
) -> dict[Any, dict[str, Any]]:
    """The products among `ids` that exist, with only `fields`, keyed by `_id`.

    Asked in `$in` lists of READ_PIECE_IDS: SecantusDB re-checks every found document
    against the whole `$in` list, so a read costs ids x list length; at 25 a product
    costs ~40 % less than at 100 (docs/benchmarks.md). On mongod the extra round trips are noise.
    """
    projection = dict.fromkeys(fields, 1)
    current: dict[Any, dict[str, Any]] = {}
    for start in range(0, len(ids), READ_PIECE_IDS):
        piece = ids[start : start + READ_PIECE_IDS]
        for d in products.find({"_id": {"$in": piece}}, projection):
            current[d["_id"]] = d
    return current


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
    """Ask the source for a sub-chunk; an answer that is not valid JSON quarantines it."""
    if not docs:
        return SourceResult.empty()
    try:
        return backfill.source.fetch(docs, ctx)
    except CatalogProtocolError as exc:
        ids = [d["_id"] for d in docs]
        blog.warning("source answered garbage for %d ids: %s", len(ids), exc)
        return SourceResult.all_invalid(ids, f"{type(exc).__name__}: {exc}", exc.status)


def _not_mine(
    rt: Runtime,
    sender: TaskSender,
    meta: Collection,
    job_id: str,
    batch_no: int,
    name: str,
    blog: BatchLog,
) -> str:
    """A batch of a backfill this worker does not know: leave it to a worker that does.

    Not leased, re-sent later; the job records which workers lack the definition, so
    `status` can say so instead of the job silently stalling.
    """
    blog.error("backfill %r is not known to this worker (BACKFILL_IMPORTS); not taken", name)
    try:
        meta.update_one(
            {"_id": job_id, "kind": "job"},
            {"$addToSet": {"unknown_to_workers": socket.gethostname()}},
        )
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
