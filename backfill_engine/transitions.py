"""Which job and batch status changes exist, who makes each one and under which condition.

One table per kind, state -> {next state: what guards it}, as maintenance_tasks'
`VALID_STATUS_TRANSITIONS`. Every status write is one update in backfill_engine.store whose
filter comes from `job_guard`/`batch_guard` below, so a change this table does not list
cannot be written: the guard refuses to build, and a document in any other state matches
nothing. A state with no way out here is final (`FINAL_JOB_STATES`, `FINAL_BATCH_STATES`).

A job's `completed`, `completed_with_errors` and `failed` are ended (states.TERMINAL_JOB_STATES)
but not final: `backfill retry` reopens them for the batches it resets. `cancelled` is final.
A batch's `failed` likewise goes back to `pending` on a retry; `done` and `cancelled` are final.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backfill_engine.states import BatchStatus, JobStatus

J, B = JobStatus, BatchStatus

JOB_TRANSITIONS: Mapping[JobStatus, Mapping[JobStatus, str]] = {
    J.PLANNING: {
        J.RUNNING: "the planner, after its last cut (store.finish_planning)",
        J.PAUSED: "operator `pause`, or a worker on an answer only an operator can fix, such as "
        "a 401 (store.pause_job, store.pause_job_for)",
        J.CANCELLED: "operator `cancel` (store.cancel_job)",
        J.FAILED: "the planner, when the job can never be planned (store.fail_job)",
    },
    J.RUNNING: {
        J.PAUSED: "operator `pause`, or a worker on an answer only an operator can fix "
        "(store.pause_job, store.pause_job_for)",
        J.CANCELLED: "operator `cancel` (store.cancel_job)",
        J.COMPLETED: "whoever finishes the last batch or sweeps, once planning is done and every "
        "batch is finished, none failed and nothing quarantined (store.maybe_complete_job)",
        J.COMPLETED_WITH_ERRORS: "as `completed`, with failed batches or quarantined items "
        "(store.maybe_complete_job)",
        J.FAILED: "the planner, when the job can never be planned (store.fail_job)",
        # A retry reads the job, resets its failed batches, then reopens it: the job may have
        # completed in between, or still run, and either way it must run for those batches.
        J.RUNNING: "operator `retry`, holding the job's own active key (store.reopen_job)",
    },
    J.PAUSED: {
        J.RUNNING: "operator `resume`, planning done (store.resume_job)",
        J.PLANNING: "operator `resume`, planning not done (store.resume_job)",
        J.CANCELLED: "operator `cancel` (store.cancel_job)",
        J.FAILED: "the planner, when the job can never be planned (store.fail_job)",
    },
    J.COMPLETED: {
        J.RUNNING: "operator `retry` with failed batches, holding the job's own active key "
        "(store.reopen_job)",
    },
    J.COMPLETED_WITH_ERRORS: {
        J.RUNNING: "operator `retry` with failed batches (store.reopen_job)",
    },
    J.FAILED: {
        J.RUNNING: "operator `retry` with failed batches (store.reopen_job)",
    },
    J.CANCELLED: {},  # for good: `retry` refuses a cancelled job
}

BATCH_TRANSITIONS: Mapping[BatchStatus, Mapping[BatchStatus, str]] = {
    B.PENDING: {
        B.QUEUED: "a dispatcher under the job's dispatch lock, a slot free; or a batch "
        "finishing, handing its slot on (store.claim_pending)",
        B.RUNNING: "a worker with a delivered message, no live lease (store.lease_batch)",
        B.CANCELLED: "the job cancelled or failed (store.cancel_job, store.fail_job)",
        B.FAILED: "a retry that could not reopen its job puts back what it reset "
        "(store.refail_batches)",
    },
    B.QUEUED: {
        B.RUNNING: "a worker, no live lease (store.lease_batch)",
        B.PENDING: "a worker that finds the job paused or stopped (store.unqueue_batch)",
        B.QUEUED: "the sweeper, the message not taken for a while (store.requeue_stale)",
        B.CANCELLED: "the job cancelled or failed (store.cancel_job, store.fail_job)",
    },
    B.RUNNING: {
        B.DONE: "the lease holder, after its last checkpoint (store.finish_batch)",
        B.FAILED: "the lease holder, after the last attempt (store.fail_batch)",
        B.QUEUED: "the lease holder on a transient error, to retry later (store.release_batch); "
        "the sweeper, the lease expired with its worker (store.requeue_stale)",
        B.PENDING: "the lease holder, its job paused (store.release_batch)",
        B.CANCELLED: "the lease holder, its job cancelled or failed (store.release_batch)",
        # The lease expired (its worker died) and a redelivered message takes the batch over.
        B.RUNNING: "another worker once the lease expired (store.lease_batch)",
    },
    B.FAILED: {
        B.PENDING: "operator `retry`, before the job is reopened (store.reset_failed_batches)",
    },
    B.DONE: {},
    B.CANCELLED: {},
}

FINAL_JOB_STATES = tuple(s for s, out in JOB_TRANSITIONS.items() if not out)
FINAL_BATCH_STATES = tuple(s for s, out in BATCH_TRANSITIONS.items() if not out)


class TransitionError(ValueError):
    """A status change the transition table does not list (a programming error)."""


def _sources(
    table: Mapping[Any, Mapping[Any, str]], target: Any, only: tuple[Any, ...]
) -> list[str]:
    allowed = [s for s, out in table.items() if target in out]
    if not only:
        return [s.value for s in allowed]
    refused = [s for s in only if s not in allowed]
    if refused:
        raise TransitionError(
            f"no transition {', '.join(s.value for s in refused)} -> {target.value} in the table"
        )
    return [s.value for s in only]


def job_guard(target: JobStatus, *only: JobStatus) -> dict[str, Any]:
    """The `status` filter of an update moving a job to `target`: every state the table lets
    reach it, or just `only` (each of which it must let)."""
    return {"status": {"$in": _sources(JOB_TRANSITIONS, target, only)}}


def batch_guard(target: BatchStatus, *only: BatchStatus) -> dict[str, Any]:
    """The `status` filter of an update moving a batch to `target` (see `job_guard`)."""
    return {"status": {"$in": _sources(BATCH_TRANSITIONS, target, only)}}


def allowed(source: JobStatus | BatchStatus, target: JobStatus | BatchStatus) -> bool:
    """Whether the table lets `source` move to `target`."""
    if isinstance(source, JobStatus) and isinstance(target, JobStatus):
        return target in JOB_TRANSITIONS[source]
    if isinstance(source, BatchStatus) and isinstance(target, BatchStatus):
        return target in BATCH_TRANSITIONS[source]
    return False
