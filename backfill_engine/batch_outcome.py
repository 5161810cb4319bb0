"""How a batch delivery ended (`BatchOutcome`) and what to do after an error (`Decision`)."""

from __future__ import annotations

import enum
from dataclasses import dataclass

import kombu.exceptions
import pymongo.errors
import redis

from backfill_engine.errors import BackfillError
from backfill_engine.http_client import SourceUnavailableError
from backfill_engine.ratelimit import RateLimitError

RETRY_BACKOFF_CAP_SECONDS = 60.0

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


class LeasedTooOften(BackfillError):
    """A batch leased more often than BACKFILL_MAX_ATTEMPTS allows without finishing."""

    def __init__(self, leases: int, max_attempts: int) -> None:
        self.leases, self.max_attempts = leases, max_attempts
        super().__init__(
            f"leased {leases} times without finishing "
            f"(BACKFILL_MAX_ATTEMPTS={max_attempts}); its worker may have died on it"
        )


class BatchOutcome(enum.Enum):
    """The end of one delivery of a batch task; the value is what Flower's report shows."""

    DONE = "done"
    PAUSED = "paused"  # the job was paused: the batch is pending again at its checkpoint
    CANCELLED = "cancelled"
    LEASE_LOST = "lease-lost"  # another worker owns the batch now
    AUTH_PAUSED = "auth-paused"  # the source refused our credentials: the job is paused
    SCHEMA_PAUSED = "schema-paused"  # another release's metadata layout: the job is paused
    SKIPPED = "skipped"  # a duplicate delivery: done already, or leased by a live worker
    RETRY = "retry"  # handed back and re-sent with backoff (or left to the sweeper)
    FAILED = "failed"  # given up after its last attempt
    UNKNOWN_BACKFILL = "unknown-backfill"  # this worker cannot run it: re-sent for another
    NO_JOB = "no-job"
    JOB_NOT_RUNNABLE = "job-not-runnable"  # the job is paused, cancelled or over: left pending
    BAD_ARGS = "bad-args"  # a malformed task message, dropped


class Action(enum.Enum):
    """What the core does with a batch after an error."""

    RETRY = "retry"  # release it queued and re-send it after `delay`
    FAIL = "fail"  # mark it failed; the job goes on without it
    PAUSE = "pause"  # release it pending and pause the job until an operator acts


@dataclass(frozen=True)
class Decision:
    """A failure policy's verdict on one error: the action, the error recorded on the batch,
    the retry delay, and for a pause the reason shown on the job and the outcome."""

    action: Action
    error: str
    delay: float = 0.0
    job_reason: str = ""
    outcome: BatchOutcome = BatchOutcome.RETRY

    @classmethod
    def retry(cls, error: str, delay: float) -> Decision:
        return cls(Action.RETRY, error, delay=delay, outcome=BatchOutcome.RETRY)

    @classmethod
    def fail(cls, error: str) -> Decision:
        return cls(Action.FAIL, error, outcome=BatchOutcome.FAILED)

    @classmethod
    def pause(cls, error: str, job_reason: str, outcome: BatchOutcome) -> Decision:
        return cls(Action.PAUSE, error, job_reason=job_reason, outcome=outcome)


def error_text(exc: BaseException) -> str:
    """How an error is recorded on the batch document: its class and the start of its text."""
    return f"{type(exc).__name__}: {str(exc)[:300]}"


def backoff_seconds(attempts: int) -> float:
    """The wait before attempt `attempts + 1`: doubling, capped."""
    return min(RETRY_BACKOFF_CAP_SECONDS, 2.0**attempts)


def retry_or_fail(exc: BaseException, attempts: int, max_attempts: int) -> Decision:
    """Retry later with backoff, or fail once the batch has used its attempts.

    Also the core's fallback when the failure policy itself raises: a batch that has used
    its attempts still ends failed, so a broken policy cannot loop a batch for ever.
    """
    error = error_text(exc)
    if attempts >= max_attempts:
        return Decision.fail(error)
    return Decision.retry(error, backoff_seconds(attempts))
