"""Hooks: everything that cuts across a batch run but is not one of its safety rules.

Shaped like dramatiq's middleware: a base class whose methods do nothing, one module per
concern, and one runner (`HookChain`) the batch core calls. Before-hooks run in list
order, after-hooks in reverse, so the first hook wraps all the others. A hook that raises
is logged with the job id and batch number and skipped: it never fails or changes a
batch. The one exception is `on_error`, whose answer decides what happens to the batch;
if every policy raises or has no answer, the core uses its safe default
(backfill_engine.batch_outcome.retry_or_fail).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

from backfill_engine.batch_context import BatchContext
from backfill_engine.batch_outcome import BatchOutcome, Decision
from backfill_engine.sources import SourceResult

# What checkpoint_fields may add to a checkpoint (and, with final=True, to the finish).
CHECKPOINT_KEYS = ("source_inc",)
FINISH_KEYS = ("source_inc", "timings")


class BatchHook:
    """Override what you need; every method does nothing by default.

    `batch` is the delivery's BatchContext: job id, batch number, params, rate, and once
    leased the lease, the LeaseKeeper (`batch.keeper`) and the source context.
    """

    def before_batch(self, batch: BatchContext) -> None:
        """A delivery starts; nothing is known of the job yet."""

    def after_batch(self, batch: BatchContext, outcome: BatchOutcome) -> None:
        """A delivery ended with `outcome` (every outcome, not only DONE)."""

    def before_subchunk(self, batch: BatchContext) -> None:
        """Before each sub-chunk; may wait (a throttle). Pause, cancel and a lost lease are
        checked after it returns, so a wait should end early on `batch.keeper`'s signals."""

    def before_source(self, batch: BatchContext, docs: Sequence[Mapping[str, Any]]) -> None:
        """The sub-chunk's documents are about to be sent to the source."""

    def after_source(self, batch: BatchContext, answer: SourceResult) -> None:
        """The source answered the sub-chunk."""

    def before_write(self, batch: BatchContext, n_ops: int) -> None:
        """`n_ops` document updates are about to be written: their before-images (when the
        job journals) are already recorded, the lease was proven right before. Not called
        for a sub-chunk with nothing to update. A hook that raises here (or dies, as the
        reliability tests' kill hook does) never writes or skips anything itself."""

    def after_write(self, batch: BatchContext, seconds: float, ok: bool) -> None:
        """A document write took `seconds` (`ok` False: it raised)."""

    def after_phase(self, batch: BatchContext, phase: str, seconds: float) -> None:
        """The core spent `seconds` in `phase` (lease, throttle, read, source, write, ...)."""

    def checkpoint_fields(self, batch: BatchContext, final: bool) -> Mapping[str, Any] | None:
        """Extra fields to record with the next checkpoint (`final`: with the finish):
        `source_inc` (counts to add to the batch's `source`), `timings` (final only)."""
        return None

    def on_error(self, batch: BatchContext, exc: BaseException) -> Decision | None:
        """What to do with a batch after `exc`: the first hook to answer decides."""
        return None

    def on_unknown_backfill(self, batch: BatchContext, name: str, unmet: list[str] | None) -> None:
        """A batch of a backfill this worker does not know (or lacks settings `unmet` for)."""


class HookChain:
    """Runs a list of hooks for the core; a hook's failure is logged and never propagates."""

    def __init__(self, hooks: Sequence[BatchHook]) -> None:
        self.hooks = tuple(hooks)

    def before(self, method: str, batch: BatchContext, *args: Any) -> None:
        for hook in self.hooks:
            self._call(hook, method, batch, *args)

    def after(self, method: str, batch: BatchContext, *args: Any) -> None:
        for hook in reversed(self.hooks):
            self._call(hook, method, batch, *args)

    @contextmanager
    def phase(self, batch: BatchContext, name: str) -> Iterator[None]:
        """Time the block and tell the hooks, even when it raises."""
        t0 = time.perf_counter()
        try:
            yield
        finally:
            self.after("after_phase", batch, name, time.perf_counter() - t0)

    def checkpoint_fields(self, batch: BatchContext, *, final: bool) -> dict[str, Any]:
        """The hooks' extra fields, limited to what the store accepts; later hooks add to
        earlier ones' `source_inc`."""
        allowed = FINISH_KEYS if final else CHECKPOINT_KEYS
        fields: dict[str, Any] = {}
        for hook in self.hooks:
            extra = self._call(hook, "checkpoint_fields", batch, final)
            if not isinstance(extra, Mapping):
                continue
            for key in allowed:
                value = extra.get(key)
                if not isinstance(value, Mapping):
                    continue
                numbers = {
                    str(k): v
                    for k, v in value.items()
                    if isinstance(v, int | float) and not isinstance(v, bool)
                }
                merged = fields.setdefault(key, {})
                for k, v in numbers.items():
                    # Counts from several hooks add up; a timing is one hook's to give.
                    merged[k] = merged.get(k, 0) + v if key == "source_inc" else v
        return fields

    def decide(self, batch: BatchContext, exc: BaseException) -> Decision | None:
        """The first answer to `on_error`; None when no hook answered (or all raised)."""
        for hook in self.hooks:
            decision = self._call(hook, "on_error", batch, exc)
            if isinstance(decision, Decision):
                return decision
        return None

    def _call(self, hook: BatchHook, method: str, batch: BatchContext, *args: Any) -> Any:
        try:
            return getattr(hook, method)(batch, *args)
        except Exception:
            batch.log.exception("hook %s.%s failed; ignored", type(hook).__name__, method)
            return None
