"""After a batch is done: hand out the job's next batches, or close the job after its last."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_outcome import TRANSIENT_ERRORS, BatchOutcome
from backfill_engine.dispatch import TaskSender, fill_in_flight, send_batch
from backfill_engine.handoff import Handoff
from backfill_engine.hooks.base import BatchHook
from backfill_engine.states import METADATA, QUARANTINE
from backfill_engine.store import maybe_complete_job

if TYPE_CHECKING:
    from backfill_engine.runtime import Runtime


class NextBatches(BatchHook):
    """On DONE, dispatches on the process's after-batch thread: the slot is free already
    and starts its next task meanwhile (docs/benchmarks.md, fix 10)."""

    def __init__(self, rt: Runtime, sender: TaskSender) -> None:
        self.rt, self.sender = rt, sender

    def after_batch(self, batch: BatchContext, outcome: BatchOutcome) -> None:
        if outcome is BatchOutcome.DONE:
            counters = dict(batch.counters)
            self.rt.after_batch.submit(
                after_batch, self.rt, self.sender, batch.job_id, counters, batch.log, batch.handoff
            )


def after_batch(
    rt: Runtime,
    sender: TaskSender,
    job_id: str,
    counters: dict[str, int],
    blog: logging.LoggerAdapter,
    handoff: Handoff | None = None,
) -> None:
    """Queue the job's next batches, or close the job if this was its last one.

    `handoff` is what the batch's finish did about its slot (backfill_engine.handoff): the
    batch it queued in its place gets its message here; none pending means the job may be
    complete; None means the counted fill decides. Nothing here can lose work: the batch
    is recorded done before this runs, and if this process dies first, the sweeper (in
    every worker and every waiting command) dispatches pending batches and completes the job.
    """
    started = time.perf_counter()
    meta = rt.db[METADATA]
    try:
        if handoff is not None and handoff.claimed is not None:
            batch_no = int(handoff.claimed["batch_no"])
            send_batch(sender, rt.settings.queue, job_id, batch_no, total=handoff.total)
        # Nothing left to hand on, or nothing the counted fill could send: maybe the last.
        elif handoff is not None or not fill_in_flight(meta, sender, rt.settings.queue, job_id):
            maybe_complete_job(meta, rt.db[QUARANTINE], job_id)
    except TRANSIENT_ERRORS as exc:
        # The next finished batch or the sweeper dispatches.
        blog.warning("done, but dispatching next batches failed: %s: %s", type(exc).__name__, exc)
    except Exception:
        blog.exception("done, but dispatching next batches failed unexpectedly")
    # after_s: dispatching the next batches and the completion check, past `timings`.
    blog.info("done: %s after_s=%.4f", counters, time.perf_counter() - started)
