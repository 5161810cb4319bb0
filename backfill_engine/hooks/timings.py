"""Seconds one batch spends per phase, kept on the batch document as `timings`."""

from __future__ import annotations

import time
from collections.abc import Mapping
from typing import Any

from backfill_engine.batch_context import BatchContext
from backfill_engine.hooks.base import BatchHook


class Stopwatch:
    """Seconds per phase, plus the total since the delivery started.

    Two clock reads per phase, a handful of phases per sub-chunk: cheap next to any I/O.
    """

    def __init__(self) -> None:
        self.started = time.perf_counter()
        self.spent: dict[str, float] = {}

    def add(self, name: str, seconds: float) -> None:
        self.spent[name] = self.spent.get(name, 0.0) + seconds

    def as_doc(self) -> dict[str, float]:
        """`{<phase>_s: seconds, ..., total_s: seconds since the task started}`."""
        doc = {f"{name}_s": round(v, 4) for name, v in self.spent.items()}
        doc["total_s"] = round(time.perf_counter() - self.started, 4)
        return doc


class Timings(BatchHook):
    """Adds up the core's phases and hands them to the finish (one per delivery)."""

    def __init__(self) -> None:
        self.watch = Stopwatch()

    def before_batch(self, batch: BatchContext) -> None:
        self.watch = Stopwatch()

    def after_phase(self, batch: BatchContext, phase: str, seconds: float) -> None:
        self.watch.add(phase, seconds)

    def checkpoint_fields(self, batch: BatchContext, final: bool) -> Mapping[str, Any] | None:
        return {"timings": self.watch.as_doc()} if final else None
