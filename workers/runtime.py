"""Per-process connections for a worker, created lazily after fork."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import pymongo
import redis
from pymongo.database import Database

from backfill_engine import clock
from workers.catalog_client import CatalogClient, HttpCatalogClient
from workers.ratelimit import RateLimiter, limiter_name
from workers.settings import Settings

WORKER_MONGO_TIMEOUT_MS = 10_000


@dataclass
class Runtime:
    """What a worker process talks to; `rate` is set per job before each batch."""

    settings: Settings
    db: Database
    redis: redis.Redis
    catalog: CatalogClient = field(init=False)
    rate: float = 0.0
    _limiters: dict[float, RateLimiter] = field(default_factory=dict)
    # One thread that dispatches the next batches once a slot is free (workers/tasks.py);
    # per runtime, so a forked child gets its own with its own runtime.
    after_batch: ThreadPoolExecutor = field(
        default_factory=lambda: ThreadPoolExecutor(max_workers=1, thread_name_prefix="after-batch")
    )

    def limiter(self) -> RateLimiter:
        rate = self.rate or self.settings.rate_per_second
        if rate not in self._limiters:
            # Burst of one token: requests are spaced evenly, so no window of any length
            # sees more than the configured rate (plus the one request at its edge).
            self._limiters[rate] = RateLimiter(
                self.redis, name=limiter_name(self.settings.queue), rate=rate, burst=1
            )
        return self._limiters[rate]

    def acquire(self) -> None:
        self.limiter().acquire()

    def throttle(self, seconds: float) -> None:
        self.limiter().pause(seconds)


_runtime: Runtime | None = None
_runtime_pid: int | None = None


def build_runtime(settings: Settings) -> Runtime:
    """Connect to MongoDB, Redis and the catalog as the settings say."""
    if not settings.mongo_url:
        raise RuntimeError("MONGO_URL is not set for this worker")
    if not settings.catalog_url:
        raise RuntimeError("CATALOG_URL is not set for this worker")
    client: pymongo.MongoClient = pymongo.MongoClient(
        settings.mongo_url,
        serverSelectionTimeoutMS=WORKER_MONGO_TIMEOUT_MS,
        appname="mongo-backfill-worker",
    )
    clock.attach(client)  # leases follow the server's clock, not this host's
    rds = redis.Redis.from_url(settings.redis_url or "redis://127.0.0.1:6379/0")
    rt = Runtime(settings, client[settings.mongo_db], rds)
    rt.catalog = HttpCatalogClient.from_settings(
        settings, before_request=rt.acquire, on_throttle=rt.throttle
    )
    return rt


def get_runtime() -> Runtime:
    """This process's runtime; rebuilt in a forked child, where sockets cannot be shared."""
    global _runtime, _runtime_pid
    if _runtime is None or _runtime_pid != os.getpid():
        _runtime = build_runtime(Settings.from_env())
        _runtime_pid = os.getpid()
    return _runtime
