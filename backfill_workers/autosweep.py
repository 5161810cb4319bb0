"""Self-healing without an orchestrator: each worker process group sweeps now and then.

Exactly one worker per queue sweeps per interval (a Redis lock with expiry), so a fleet of
workers left alone still re-sends batches whose lease expired or whose message Redis
lost, and closes finished jobs.
"""

from __future__ import annotations

import uuid

import redis
from pymongo.database import Database

from backfill_engine.dispatch import TaskSender
from backfill_engine.settings import Settings
from backfill_engine.sweeper import SweepFailures, sweep_jobs, sweep_lock_key
from backfill_workers.background import ServerLoop

MIN_INTERVAL_SECONDS = 1.0
# While no job is active, sweeps back off to this far apart: a job that starts meanwhile is
# dispatched by whoever starts it, so the sweeper only recovers its lost work a bit later.
IDLE_SWEEP_CAP_SECONDS = 15.0


def sweep_once(
    db: Database,
    rds: redis.Redis,
    sender: TaskSender,
    settings: Settings,
    *,
    failures: SweepFailures | None = None,
) -> int | None:
    """If no other worker swept this interval, sweep every active job; return jobs swept
    (None when another worker had this interval's turn)."""
    interval_ms = int(max(settings.sweep_interval_seconds, MIN_INTERVAL_SECONDS) * 1000)
    # Expiring just before the next tick: whoever ticks first next time takes it.
    if not rds.set(sweep_lock_key(settings.queue), uuid.uuid4().hex, nx=True, px=interval_ms - 50):
        return None
    return sweep_jobs(
        db,
        sender,
        settings.queue,
        redispatch_seconds=settings.redispatch_seconds,
        broker=rds,
        notify_url=settings.notify_url,
        secrets=settings.secrets,
        failures=failures,
    )


class AutoSweeper(ServerLoop):
    """The worker's sweeper thread: `sweep_once` every sweep interval."""

    def __init__(self, settings: Settings, sender: TaskSender) -> None:
        interval = max(settings.sweep_interval_seconds, MIN_INTERVAL_SECONDS)
        super().__init__(
            settings,
            name="backfill-autosweep",
            what="sweep",
            interval=interval,
            idle_cap=max(interval, IDLE_SWEEP_CAP_SECONDS),
        )
        self.sender = sender
        self.failures = SweepFailures()  # one job failing sweep after sweep is logged once

    def tick(self, db: Database, rds: redis.Redis) -> object:
        """Busy while it swept a job or another worker holds this interval's turn (it may have)."""
        swept = sweep_once(db, rds, self.sender, self.settings, failures=self.failures)
        return swept is None or swept > 0
