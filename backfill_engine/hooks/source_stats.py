"""What the source calls cost (requests, 429s, 5xx, rate-limit wait), added to the batch's
`source` totals with each checkpoint, for the metrics."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from backfill_engine.batch_context import BatchContext
from backfill_engine.hooks.base import BatchHook


class SourceStats(BatchHook):
    """Hands each checkpoint the growth of `SourceContext.stats` since the last one."""

    def __init__(self) -> None:
        self._written: dict[str, float] = {}

    def before_batch(self, batch: BatchContext) -> None:
        self._written = {}

    def checkpoint_fields(self, batch: BatchContext, final: bool) -> Mapping[str, Any] | None:
        if batch.source is None:
            return None
        # Marked written when handed over: a checkpoint that then fails loses its counts,
        # which only the metrics see, never the data.
        now = dict(batch.source.stats)
        delta = {k: round(v - self._written.get(k, 0), 4) for k, v in now.items()}
        self._written = now
        return {"source_inc": delta}
