"""What one batch delivery carries: the job's values (rate, params), its ids and its lease.

Per batch, not per process: under `--pool threads` two jobs' batches in one process each
keep their own rate. The running batch is also the current one of its thread
(`current_batch`), which is how the process's pooled HTTP clients find the rate bucket of
the batch calling them.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from backfill_engine.definition import Backfill
    from backfill_engine.handoff import Handoff
    from backfill_engine.lease_keeper import LeaseKeeper
    from backfill_engine.sources import SourceContext
    from backfill_engine.store import Lease

_current: ContextVar[BatchContext | None] = ContextVar("backfill_batch", default=None)


class BatchLog(logging.LoggerAdapter):
    """Prefix every line with the job id and batch number."""

    def process(self, msg: Any, kwargs: Any) -> tuple[Any, Any]:
        extra = self.extra or {}
        kwargs.setdefault("extra", {}).update(extra)
        return f"[job {extra.get('job_id')} batch {extra.get('batch_no')}] {msg}", kwargs


@dataclass
class BatchContext:
    """One delivery of one batch, filled in as the core learns more (job, lease, source)."""

    job_id: str
    batch_no: int
    owner: str
    log: BatchLog
    rate: float = 0.0  # the job's requests per second (0: the settings' default)
    rate_auto: bool = False  # `--rate auto`: follow and feed the bucket's controller
    params: Mapping[str, Any] = field(default_factory=dict)
    backfill: Backfill | None = None
    lease: Lease | None = None
    attempts: int = 0  # leases taken so far, this one included
    keeper: LeaseKeeper | None = None  # while the batch runs: lease and job state
    source: SourceContext | None = None
    counters: dict[str, int] = field(default_factory=dict)  # as last counted
    handoff: Handoff | None = None  # a finished batch's slot, handed on (or not tried)

    @classmethod
    def new(cls, job_id: str, batch_no: int, owner: str, logger: logging.Logger) -> BatchContext:
        return cls(
            job_id, batch_no, owner, BatchLog(logger, {"job_id": job_id, "batch_no": batch_no})
        )

    @contextmanager
    def current(self) -> Iterator[BatchContext]:
        """Make this the calling thread's current batch while the block runs."""
        token = _current.set(self)
        try:
            yield self
        finally:
            _current.reset(token)


def current_batch() -> BatchContext | None:
    """The batch this thread runs right now, if any."""
    return _current.get()
