"""The servers one bench run shares: SecantusDB in memory, a private Redis, the catalog stand-in."""

from __future__ import annotations

import contextlib
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pymongo
import redis
import requests

from bench.traffic import BENCH_PROBES, TrafficListener
from catalog_service.scenario import start_catalog
from orchestrator.stack import ManagedProcess, start_mongo, start_redis

HTTP_TIMEOUT_SECONDS = 10.0


@dataclass
class Servers:
    """Handles on the shared servers; `close()` stops what `start_servers` started."""

    log_dir: Path
    mongo: ManagedProcess
    redis_proc: ManagedProcess
    catalog: ManagedProcess
    client: pymongo.MongoClient = field(init=False)
    redis: redis.Redis = field(init=False)
    # The commands of this process's client (the orchestrator's while a job runs),
    # the bench's own serverStatus probes left out.
    traffic: TrafficListener = field(init=False)

    def __post_init__(self) -> None:
        self.traffic = TrafficListener(ignore=BENCH_PROBES)
        self.client = pymongo.MongoClient(
            self.mongo.url, serverSelectionTimeoutMS=10_000, event_listeners=[self.traffic]
        )
        self.redis = redis.Redis.from_url(self.redis_proc.url)

    def set_latency(self, latency_ms: float) -> None:
        """Make the catalog stand-in sleep `latency_ms` before every API answer."""
        url = f"{self.catalog.url}/_faults"
        requests.post(url, json={"latency_ms": latency_ms}, timeout=HTTP_TIMEOUT_SECONDS)

    def catalog_requests(self) -> int:
        """API requests the stand-in has answered so far."""
        stats = requests.get(
            f"{self.catalog.url}/_stats", params={"id_counts": "0"}, timeout=HTTP_TIMEOUT_SECONDS
        ).json()
        return int(stats.get("requests", 0))

    def redis_calls(self) -> dict[str, int]:
        """Calls per command since the Redis server started (INFO commandstats)."""
        info = self.redis.info("commandstats")
        return {
            name.removeprefix("cmdstat_"): int(v["calls"])
            for name, v in info.items()
            if isinstance(v, dict) and "calls" in v
        }

    def mongo_ops(self) -> dict[str, int]:
        """Commands the database has served so far, by kind (serverStatus `opcounters`).

        Server-side, so it counts the worker processes' commands too, not only this
        process's. SecantusDB counts one per command (a 100-update `bulk_write` is one
        `update`), where `mongod` counts inserts per document.
        """
        ops = self.client.admin.command("serverStatus").get("opcounters", {})
        return {str(k): int(v) for k, v in ops.items()}

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self.client.close()
        for proc in (self.catalog, self.redis_proc, self.mongo):
            proc.stop()
        shutil.rmtree(self.log_dir / MONGO_DATA, ignore_errors=True)


MONGO_DATA = "mongo-data"  # the server's files, beside the run's logs, removed at close


def start_servers(log_dir: Path) -> Servers:
    """Start SecantusDB (its data on disk), a Redis of our own and the catalog stand-in,
    on loopback.

    On disk, as the demo keeps it: in memory, everything a whole bench writes (every run's
    database, dropped after it, and the oplog) must fit in the 256 MB cache, and it did
    not (WT_CACHE_FULL three runs in). A private Redis keeps other users of the machine's
    Redis out of the command counts.
    """
    log_dir.mkdir(parents=True, exist_ok=True)
    started: list[ManagedProcess] = []
    try:
        mongo, _ = start_mongo(log_dir / MONGO_DATA, log_dir=log_dir)
        started.append(mongo)
        rds = start_redis(log_dir=log_dir)
        started.append(rds)
        catalog = start_catalog(log_dir=log_dir)
        started.append(catalog)
    except BaseException:
        for proc in reversed(started):
            proc.stop()
        raise
    return Servers(log_dir=log_dir, mongo=mongo, redis_proc=rds, catalog=catalog)


def wait_workers_ready(control: Any, expected: int, timeout: float, what: str = "workers") -> None:
    """Until `expected` workers answer a broadcast ping (`control`: a Celery app's).

    The ping returns once that many have answered; without a limit it would collect
    answers for its whole timeout, a second added to every configuration's start.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if len(control.ping(timeout=1.0, limit=expected) or []) >= expected:
            return
    raise RuntimeError(f"only some of {expected} {what} answered within {timeout:g}s")
