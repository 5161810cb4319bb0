"""Starting a batch delivery: read the job and the ids, take the lease, pick the step.

A backfill job's batches run the backfill step (backfill_engine.backfill_step); a revert
job's (`reverts: JOB`) the revert step, which needs no source and no definition: a
revert must work even where the backfill's settings are gone.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import time
from dataclasses import dataclass
from functools import partial
from typing import Any

from pymongo.collection import Collection

from backfill_engine import store
from backfill_engine.backfill_step import BackfillStep
from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_failure import after_error
from backfill_engine.batch_outcome import TRANSIENT_ERRORS, BatchOutcome, LeasedTooOften, error_text
from backfill_engine.dispatch import SERVER_OUTAGES, TaskSender, send_batch
from backfill_engine.hooks import HookChain
from backfill_engine.lease_keeper import STOPPING_JOB_STATES
from backfill_engine.revert_step import RevertStep
from backfill_engine.runtime import Runtime
from backfill_engine.schema import ensure_schema
from backfill_engine.sources import SourceContext
from backfill_engine.states import BATCH_IDS, DISPATCHABLE_JOB_STATES, METADATA
from backfill_engine.store import now_utc
from backfill_engine.subchunk_step import SubchunkStep

UNLEASED_RETRY_SECONDS = 2.0  # a task that could not even take its lease is re-sent after this
JOB_FIELDS = (
    "status",
    "rate_per_second",
    "rate_auto",
    "backfill",
    "params",
    "reverts",
    "journal",
    "collection",
    "workers_lacking_settings",
    "unknown_to_workers",
    "max_in_flight",  # for the finish's handoff (backfill_engine.handoff)
    "planning",
)


@dataclass
class Taken:
    """A leased batch, ready to run."""

    job_state: str
    job: dict[str, Any]  # the job document as read before the lease (JOB_FIELDS)
    doc: dict[str, Any]  # the batch document as leased
    ids: list[Any]
    step: SubchunkStep
    leased_at: float  # monotonic time the lease runs from, at the latest


def take(
    rt: Runtime, sender: TaskSender, batch: BatchContext, chain: HookChain
) -> Taken | BatchOutcome:
    """Check the job, take the batch's lease and load its ids; or say why not (an outcome)."""
    s, blog = rt.settings, batch.log
    job_id, batch_no = batch.job_id, batch.batch_no
    meta: Collection = rt.db[METADATA]
    try:
        ensure_schema(rt.db)  # once per process; refuses another release's layout
        bid = store.batch_id(job_id, batch_no)
        job, id_list = store.read_job_and_ids(meta, BATCH_IDS, job_id, bid, JOB_FIELDS)
        if job is None:
            blog.warning("job not found; dropping task")
            return BatchOutcome.NO_JOB
        name = str(job.get("backfill"))
        backfill = rt.definitions.get(name)
        if backfill is None and not job.get("reverts"):
            chain.before("on_unknown_backfill", batch, name, rt.lacking.get(name))
            return BatchOutcome.UNKNOWN_BACKFILL
        if job.get("workers_lacking_settings") or job.get("unknown_to_workers"):
            # This worker can run it now (restarted with the setting): status stops saying
            # it cannot. Other workers' entries stay until they can too.
            store.forget_lacking(meta, job_id, rt.worker_name)
        if job["status"] not in DISPATCHABLE_JOB_STATES:
            store.unqueue_batch(meta, bid)
            blog.info("job is %s; batch left pending", job["status"])
            return BatchOutcome.JOB_NOT_RUNNABLE
        batch.backfill, batch.params = backfill, job.get("params") or {}
        batch.rate = float(job.get("rate_per_second") or s.rate_per_second)
        batch.rate_auto = bool(job.get("rate_auto"))

        leased_at = time.monotonic()  # the lease runs from no later than this
        with chain.phase(batch, "lease"):
            taken = store.lease_batch(meta, bid, batch.owner, s.lease_seconds)
        if taken is None:
            blog.info("already done or leased by a live worker; skipping duplicate delivery")
            return BatchOutcome.SKIPPED
    except TRANSIENT_ERRORS as exc:
        # No lease yet, so no batch state to record: send the batch again later. Raising
        # instead would ack the message away and leave the batch to a sweeper.
        error = error_text(exc)
        blog.warning("could not start (%s); re-sent in %.0fs", error, UNLEASED_RETRY_SECONDS)
        resend_at = now_utc() + dt.timedelta(seconds=UNLEASED_RETRY_SECONDS)
        # First the batch says its message is fresh, so no sweeper takes it for lost (if
        # that fails too, at worst a sweeper re-sends it as well: the lease decides).
        with contextlib.suppress(*TRANSIENT_ERRORS):
            store.note_resent(meta, store.batch_id(job_id, batch_no), resend_at)
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
        return after_error(rt, sender, batch, chain, exhausted)
    try:
        if id_list is None:
            raise LookupError(f"batch {bid} has no id list")
        ids, ambiguous = id_list
        step: SubchunkStep
        if job.get("reverts"):
            step = RevertStep(
                rt.db,
                collection=str(job["collection"]),
                reverts=str(job["reverts"]),
                source_batch=int(doc["reverts_batch"]),
                job_id=job_id,
                batch_no=batch.batch_no,
                subchunk_size=s.subchunk_size,
                read_ids=s.read_ids,
            )
        else:
            assert backfill is not None
            ctx = SourceContext(
                rt.db, job.get("params") or {}, http_client=rt.source_client(backfill.source)
            )
            # A source call that retries for long (trickling answers, 5xx) stops retrying
            # as soon as the job is paused or the lease is lost; the loop then hands back.
            ctx.should_stop = partial(stopping, batch)
            batch.source = ctx
            step = BackfillStep(
                rt.db,
                backfill,
                batch,
                chain,
                ctx,
                ambiguous=set(ambiguous),
                subchunk_size=s.subchunk_size,
                read_ids=s.read_ids,
                journals=job.get("journal") is not False,
            )
    except TRANSIENT_ERRORS as exc:
        return after_error(rt, sender, batch, chain, exc)
    return Taken(job["status"], job, doc, ids, step, leased_at)


def stopping(batch: BatchContext) -> bool:
    """Whether the running batch must stop: its lease is lost, or its job paused or ended."""
    keeper = batch.keeper
    return keeper is not None and (keeper.lost.is_set() or keeper.job_state in STOPPING_JOB_STATES)
