"""A whole system per test: own database and queue, the catalog stand-in, real workers."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from bson.objectid import ObjectId
from pymongo.database import Database

from backfill_engine.runtime import worker_definitions
from backfill_engine.settings import Settings
from backfill_migrations import runner
from catalog_service.scenario import start_catalog
from migrations.versions._catalog import PRODUCTS
from orchestrator.commands import Broker, RunOptions, launch, wait_for
from orchestrator.jobs import JobSummary, summarize
from orchestrator.stack import ManagedProcess, start_worker

METADATA_VERSION = "20240405_create_backfill_metadata"
DEFAULT_TIMEOUT = 180.0

# Short leases and sweeps so recovery happens within seconds in tests.
FAST: dict[str, Any] = {
    "lease_seconds": 3.0,
    "redispatch_seconds": 6.0,
    "sweep_interval_seconds": 0.5,
    "http_backoff_seconds": 0.05,
    "http_read_timeout": 2.0,
    "rate_per_second": 2000.0,
    "max_in_flight": 4,
    "batch_size": 200,
}


def seed_products(db: Database, n: int, *, start: int = 0) -> list[Any]:
    ids = [ObjectId() for _ in range(n)]
    db[PRODUCTS].insert_many([{"_id": i, "sku": f"S{start + k}"} for k, i in enumerate(ids)])
    return ids


@dataclass
class System:
    settings: Settings
    db: Database
    log_dir: Path
    catalog: ManagedProcess | None = None
    workers: list[ManagedProcess] = field(default_factory=list)
    _broker: Broker | None = None

    # --- servers -------------------------------------------------------------
    def start_catalog(self, *args: str, token: str | None = None) -> ManagedProcess:
        port = None
        if self.catalog:
            # Same port: running workers keep the CATALOG_URL they were started with.
            port = int(self.catalog.url.rsplit(":", 1)[1])
            self.catalog.stop()
        self.catalog = start_catalog(
            log_dir=self.log_dir, port=port, extra_args=list(args), token=token
        )
        self.settings = self.settings.with_source_env(CATALOG_URL=self.catalog.url)
        return self.catalog

    def start_workers(
        self,
        n: int = 2,
        *,
        concurrency: int = 2,
        pool: str = "prefork",
        extra_env: dict[str, str] | None = None,
    ) -> list[ManagedProcess]:
        start = len(self.workers)
        new = [
            start_worker(
                self.settings,
                log_dir=self.log_dir,
                name=f"worker-{start + i + 1}",
                concurrency=concurrency,
                pool=pool,
                extra_env=extra_env,
            )
            for i in range(n)
        ]
        self.workers += new
        return new

    def kill_workers(self) -> None:
        for w in self.workers:
            w.kill()
        self.workers = []

    def close(self) -> None:
        # The test has asserted what it needed: a worker's warm shutdown (the pool, the
        # broker channel's pending BRPOP, the driver's monitors, about 2 s) adds nothing.
        # Tests of shutdown itself call `stop()` on the worker.
        self.kill_workers()
        if self.catalog:
            self.catalog.stop()

    # --- the system's own verbs ---------------------------------------------
    @property
    def broker(self) -> Broker:
        if self._broker is None:
            self._broker = Broker.from_settings(self.settings)
        return self._broker

    def migrate(self, to: str | None = METADATA_VERSION) -> runner.RunResult:
        return runner.up(
            self.db, runner.RunnerConfig.from_settings(self.settings, log=lambda m: None), to=to
        )

    def launch(self, **opts: Any) -> str:
        base = {
            "backfill": "catalog",
            "batch_size": self.settings.batch_size,
            "max_in_flight": self.settings.max_in_flight,
            "rate_per_second": self.settings.rate_per_second,
        }
        definitions = worker_definitions(self.settings)
        job, _ = launch(
            self.db, self.broker, RunOptions(**{**base, **opts}), definitions=definitions
        )
        return str(job["_id"])

    def wait(self, job_id: str, timeout: float = DEFAULT_TIMEOUT, **kw: Any) -> JobSummary:
        summary = wait_for(self.db, self.broker, self.settings, job_id, timeout=timeout, **kw)
        if summary.job["status"] in ("planning", "running") and not kw.get("stop_when_paused"):
            raise AssertionError(
                f"job {job_id} still {summary.job['status']} after {timeout}s: "
                f"{summary.batches} {summary.items} logs in {self.log_dir}"
            )
        return summary

    def summary(self, job_id: str) -> JobSummary:
        return summarize(self.db, job_id)

    # --- the stand-in's view ---------------------------------------------------
    def stats(self) -> dict[str, Any]:
        assert self.catalog
        return requests.get(f"{self.catalog.url}/_stats", timeout=5).json()

    def reset_stats(self) -> None:
        assert self.catalog
        requests.post(f"{self.catalog.url}/_stats/reset", timeout=5).raise_for_status()

    def wait_until(self, predicate: Any, timeout: float = 60.0, what: str = "condition") -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.1)
        raise AssertionError(f"timed out waiting for {what}; logs in {self.log_dir}")
