"""Self-healing without an orchestrator: each worker process group sweeps now and then.

Exactly one worker per queue sweeps per interval (a Redis lock with expiry), so a fleet of
workers left alone still re-sends batches whose lease expired or whose message Redis
lost, and closes finished jobs.
"""

from __future__ import annotations

import logging
import threading
import uuid

import pymongo
import pymongo.errors
import redis

from backfill_engine import clock, notify
from backfill_engine.dispatch import SERVER_OUTAGES, TaskSender
from backfill_engine.planner import plan_job
from backfill_engine.settings import Settings
from backfill_engine.states import DISPATCHABLE_JOB_STATES, METADATA
from backfill_engine.sweeper import sweep_job

log = logging.getLogger(__name__)

MIN_INTERVAL_SECONDS = 1.0


def sweep_lock_key(queue: str) -> str:
    return f"backfill:sweep:{queue}"


def sweep_once(
    db: pymongo.database.Database, rds: redis.Redis, sender: TaskSender, settings: Settings
) -> int:
    """If no other worker swept this interval, sweep every active job; return jobs swept."""
    interval_ms = int(max(settings.sweep_interval_seconds, MIN_INTERVAL_SECONDS) * 1000)
    # Expiring just before the next tick: whoever ticks first next time takes it.
    if not rds.set(sweep_lock_key(settings.queue), uuid.uuid4().hex, nx=True, px=interval_ms - 50):
        return 0
    swept = 0
    for job in db[METADATA].find(
        {"kind": "job", "status": {"$in": [s.value for s in DISPATCHABLE_JOB_STATES]}},
        {"_id": 1, "planning.done": 1},
    ):
        if not job.get("planning", {}).get("done"):
            # Its planner died or was interrupted (Ctrl-C on `backfill run`): carry on from
            # the planning cursor. A live planner keeps its lease and this returns at once.
            plan_job(db, sender, settings.queue, str(job["_id"]))
        sweep_job(
            db,
            sender,
            settings.queue,
            str(job["_id"]),
            redispatch_seconds=settings.redispatch_seconds,
            broker=rds,
        )
        swept += 1
    # Job notices go out from here, never from a batch: a slow or dead receiver delays
    # this thread by at most a few short timeouts and no batch at all.
    notify.deliver_due(db, settings.notify_url, settings.secrets)
    return swept


class AutoSweeper:
    """A daemon thread in the worker's main process that calls `sweep_once` every interval."""

    def __init__(self, settings: Settings, sender: TaskSender) -> None:
        self.settings, self.sender = settings, sender
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name="backfill-autosweep")

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self) -> None:
        s = self.settings
        client: pymongo.MongoClient = pymongo.MongoClient(
            s.mongo_url, serverSelectionTimeoutMS=5000, appname="mongo-backfill-sweeper"
        )
        clock.attach(client)
        rds = redis.Redis.from_url(s.redis_url or "redis://127.0.0.1:6379/0")
        interval = max(s.sweep_interval_seconds, MIN_INTERVAL_SECONDS)
        outage: str | None = None  # what is down, so an outage is logged once, not every tick
        while not self._stop.wait(interval):
            try:
                sweep_once(client[s.mongo_db], rds, self.sender, s)
            except SERVER_OUTAGES as exc:
                # The servers come back; the next tick tries again. Celery's send_task raises
                # kombu's OperationalError (not a RedisError) while the broker is down.
                if outage != type(exc).__name__:
                    outage = type(exc).__name__
                    log.warning("sweep skipped until the servers answer: %s", outage)
                continue
            except Exception:
                # Never let the thread die: it is what recovers lost work when nobody watches.
                log.exception("sweep failed unexpectedly; trying again next interval")
                continue
            if outage is not None:
                log.warning("sweeping again: servers answer")
                outage = None
