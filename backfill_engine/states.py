"""Named states of jobs and batches, and the collections they live in."""

from __future__ import annotations

from enum import StrEnum

METADATA = "backfill_metadata"
QUARANTINE = "backfill_quarantine"
# A batch's document ids live beside it, keyed by the batch id: status scans and progress
# aggregations over batch documents then never decode hundreds of ids per batch.
BATCH_IDS = "backfill_batch_ids"


class JobStatus(StrEnum):
    PLANNING = "planning"  # batches are still being cut; the first ones already run
    RUNNING = "running"  # every batch is planned
    PAUSED = "paused"
    CANCELLED = "cancelled"
    COMPLETED = "completed"
    COMPLETED_WITH_ERRORS = "completed_with_errors"  # failed batches or quarantined items
    FAILED = "failed"


ACTIVE_JOB_STATES = (JobStatus.PLANNING, JobStatus.RUNNING, JobStatus.PAUSED)
DISPATCHABLE_JOB_STATES = (JobStatus.PLANNING, JobStatus.RUNNING)
TERMINAL_JOB_STATES = (
    JobStatus.CANCELLED,
    JobStatus.COMPLETED,
    JobStatus.COMPLETED_WITH_ERRORS,
    JobStatus.FAILED,
)


class BatchStatus(StrEnum):
    PENDING = "pending"  # planned, not handed to the broker
    QUEUED = "queued"  # a task message was sent
    RUNNING = "running"  # leased by a worker
    DONE = "done"
    FAILED = "failed"  # gave up after max attempts; `backfill retry` resets it
    CANCELLED = "cancelled"


IN_FLIGHT_BATCH_STATES = (BatchStatus.QUEUED, BatchStatus.RUNNING)
LEASABLE_BATCH_STATES = (BatchStatus.PENDING, BatchStatus.QUEUED, BatchStatus.RUNNING)
FINISHED_BATCH_STATES = (BatchStatus.DONE, BatchStatus.FAILED, BatchStatus.CANCELLED)
UNFINISHED_BATCH_STATES = tuple(s for s in BatchStatus if s not in FINISHED_BATCH_STATES)

COUNTER_NAMES = ("written", "unchanged", "missing", "invalid", "deleted")


def zero_counters() -> dict[str, int]:
    """A fresh set of per-batch item counters."""
    return dict.fromkeys(COUNTER_NAMES, 0)
