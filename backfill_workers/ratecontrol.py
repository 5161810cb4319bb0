"""The `--rate auto` controller as a daemon thread of each worker's main process."""

from __future__ import annotations

import redis
from pymongo.database import Database

from backfill_engine.rate_control import RateController
from backfill_engine.settings import Settings
from backfill_workers.background import ServerLoop

# While no `--rate auto` job is active, control ticks back off to this far apart: a new
# auto job starts at its starting rate and is steered from the next tick on.
IDLE_CONTROL_CAP_SECONDS = 10.0


class RateControlThread(ServerLoop):
    """Calls `RateController.tick` every interval; only the bucket's lock holder acts."""

    def __init__(self, settings: Settings) -> None:
        interval = settings.rate_control_interval_seconds
        super().__init__(
            settings,
            name="backfill-ratecontrol",
            what="rate control",
            interval=interval,
            idle_cap=max(interval, IDLE_CONTROL_CAP_SECONDS),
        )
        self._controller: RateController | None = None

    def tick(self, db: Database, rds: redis.Redis) -> object:
        if self._controller is None:
            s = self.settings
            self._controller = RateController(db, rds, s.queue, interval=self.interval)
        return self._controller.tick()  # the buckets acted on: none while idle
