"""What happens to a leased batch after an error: the failure policy's decision, carried out."""

from __future__ import annotations

import datetime as dt

from backfill_engine import store
from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_outcome import Action, BatchOutcome, retry_or_fail
from backfill_engine.dispatch import SERVER_OUTAGES, TaskSender, send_batch
from backfill_engine.hooks import HookChain
from backfill_engine.runtime import Runtime
from backfill_engine.states import METADATA, QUARANTINE, BatchStatus
from backfill_engine.store import maybe_complete_job, now_utc, pause_job_for


def after_error(
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
