"""Self-healing without an orchestrator: each worker process group sweeps now and then.

Exactly one worker per queue sweeps per interval (a Redis lock with expiry), so a fleet of
workers left alone still re-sends batches whose lease expired or whose message Redis
lost, and closes finished jobs.
"""

from __future__ import annotations

import uuid

import redis
from pymongo.database import Database

from backfill_engine import notify
from backfill_engine.dispatch import TaskSender
from backfill_engine.planner import plan_job
from backfill_engine.settings import Settings
from backfill_engine.states import DISPATCHABLE_JOB_STATES, METADATA
from backfill_engine.sweeper import sweep_job
from workers.background import ServerLoop

MIN_INTERVAL_SECONDS = 1.0


def sweep_lock_key(queue: str) -> str:
    return f"backfill:sweep:{queue}"


def sweep_once(db: Database, rds: redis.Redis, sender: TaskSender, settings: Settings) -> int:
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


class AutoSweeper(ServerLoop):
    """The worker's sweeper thread: `sweep_once` every sweep interval."""

    def __init__(self, settings: Settings, sender: TaskSender) -> None:
        interval = max(settings.sweep_interval_seconds, MIN_INTERVAL_SECONDS)
        super().__init__(settings, name="backfill-autosweep", what="sweep", interval=interval)
        self.sender = sender

    def tick(self, db: Database, rds: redis.Redis) -> object:
        return sweep_once(db, rds, self.sender, self.settings)
