"""The `--rate auto` controller as a daemon thread of each worker's main process."""

from __future__ import annotations

import logging
import threading

import pymongo
import redis

from backfill_engine import clock
from backfill_engine.dispatch import SERVER_OUTAGES
from backfill_engine.rate_control import RateController
from backfill_engine.settings import Settings

log = logging.getLogger(__name__)


class RateControlThread:
    """Calls `RateController.tick` every interval; only the bucket's lock holder acts."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="backfill-ratecontrol")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        s = self.settings
        client: pymongo.MongoClient = pymongo.MongoClient(
            s.mongo_url, serverSelectionTimeoutMS=5000, appname="mongo-backfill-ratecontrol"
        )
        clock.attach(client)
        rds = redis.Redis.from_url(s.redis_url or "redis://127.0.0.1:6379/0")
        interval = s.rate_control_interval_seconds
        controller = RateController(client[s.mongo_db], rds, s.queue, interval=interval)
        outage: str | None = None  # logged once per outage, not every tick
        while not self._stop.wait(interval):
            try:
                controller.tick()
            except SERVER_OUTAGES as exc:
                if outage != type(exc).__name__:
                    outage = type(exc).__name__
                    log.warning("rate control paused until the servers answer: %s", outage)
                continue
            except Exception:
                # Never let the thread die: the bucket would keep its last rate for good.
                log.exception("rate control failed unexpectedly; trying again next tick")
                continue
            outage = None
