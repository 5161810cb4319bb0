"""Checkpoints written on a side thread, in order, while the next sub-chunk is read."""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

from backfill_engine.lease_keeper import LeaseLost


class CheckpointPipe:
    """Writes each checkpoint on a side thread while the next sub-chunk's documents are read.

    Order is kept: a checkpoint is submitted only after its sub-chunk's write returned,
    and `settle()` (before the next source call, the finish or a release) waits for it
    and raises LeaseLost if it found the lease gone. So nothing is fetched or written
    past a lost lease or an unrecorded checkpoint, a failed checkpoint costs the retry
    one sub-chunk of source calls as before, and progress records never overtake each
    other. What overlaps is the checkpoint round trip with the next status check and
    document reads (docs/benchmarks.md, fix 8, says what that saves).
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
