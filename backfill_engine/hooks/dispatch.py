"""After a batch is done: hand out the job's next batches, or close the job after its last."""

from __future__ import annotations

import logging
import time
from typing import TYPE_CHECKING

from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_outcome import TRANSIENT_ERRORS, BatchOutcome
from backfill_engine.dispatch import TaskSender, fill_in_flight
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
                after_batch, self.rt, self.sender, batch.job_id, counters, batch.log
            )


def after_batch(
    rt: Runtime,
    sender: TaskSender,
    job_id: str,
    counters: dict[str, int],
    blog: logging.LoggerAdapter,
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
