"""The database-health throttle as a hook: hold sub-chunks while MongoDB is strained, and
time every document write into the window it judges by (backfill_engine.health)."""

from __future__ import annotations

from backfill_engine.batch_context import BatchContext
from backfill_engine.health import HealthGate
from backfill_engine.hooks.base import BatchHook


class HealthThrottle(BatchHook):
    """Feeds and consults the process's HealthGate."""

    def __init__(self, gate: HealthGate) -> None:
        self.gate = gate

    def before_subchunk(self, batch: BatchContext) -> None:
        if batch.keeper is not None:
            self.gate.hold(batch.job_id, batch.keeper)

    def after_write(self, batch: BatchContext, seconds: float, ok: bool) -> None:
        # A failed write's time counts too: a database that fails writes is no healthier.
        self.gate.record(seconds)
