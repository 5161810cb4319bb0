"""A daemon thread of a worker's main process that does one thing every interval.

It opens its own MongoDB and Redis connections (leases follow the server's clock), and
it never dies: a server outage is logged once until the servers answer again, and an
unexpected error is logged and tried again next interval, since these threads are what
recover lost work and steer rates when nobody watches.

A tick that finds nothing to do (no active job to sweep, no auto-rate bucket to steer)
doubles the wait before the next, up to `idle_cap`; one that finds work returns to
`interval`. An idle fleet then asks the database a few times a minute, not every second.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable

import pymongo
import redis
from pymongo.database import Database

from backfill_engine import clock
from backfill_engine.dispatch import SERVER_OUTAGES
from backfill_engine.settings import MONGO_MAX_IDLE_MS, Settings

log = logging.getLogger(__name__)

Tick = Callable[[Database, redis.Redis], object]


class ServerLoop:
    """Calls `tick(db, redis)` every `interval` seconds on a daemon thread named `name`;
    while ticks find nothing to do (`tick` returns a falsy value), up to `idle_cap` apart."""

    def __init__(
        self,
        settings: Settings,
        *,
        name: str,
        what: str,
        interval: float,
        idle_cap: float | None = None,
    ) -> None:
        self.settings, self.name, self.what, self.interval = settings, name, what, interval
        self.idle_cap = max(interval, idle_cap if idle_cap is not None else interval)
        self.wait = interval  # before the next tick
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=name)

    def tick(self, db: Database, rds: redis.Redis) -> object:
        raise NotImplementedError

    def start(self) -> None:
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """No tick after this one; with `timeout`, wait that long for the current to end."""
        self._stop.set()
        if timeout is not None and self._thread.is_alive():
            self._thread.join(timeout)

    def _run(self) -> None:
        s = self.settings
        client: pymongo.MongoClient = pymongo.MongoClient(
            s.mongo_url,
            serverSelectionTimeoutMS=5000,
            maxIdleTimeMS=MONGO_MAX_IDLE_MS,
            appname=f"mongo-{self.name}",
        )
        clock.attach(client)
        rds = redis.Redis.from_url(s.redis_url or "redis://127.0.0.1:6379/0")
        outage: str | None = None  # what is down, so an outage is logged once, not every tick
        while not self._stop.wait(self.wait):
            try:
                found = self.tick(client[s.mongo_db], rds)
            except SERVER_OUTAGES as exc:
                # Celery's send_task raises kombu's OperationalError (not a RedisError)
                # while the broker is down; the next tick tries again.
                if outage != type(exc).__name__:
                    outage = type(exc).__name__
                    log.warning("%s skipped until the servers answer: %s", self.what, outage)
                continue
            except Exception:
                log.exception("%s failed unexpectedly; trying again next interval", self.what)
                continue
            # Errors keep the pace they had: an outage is no sign the fleet is idle.
            self.wait = self.interval if found else min(self.wait * 2, self.idle_cap)
            if outage is not None:
                log.warning("%s again: servers answer", self.what)
                outage = None
