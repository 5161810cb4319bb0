"""Scenario 9, the soak: many products, 10 % catalog errors, two worker kills, a Redis restart.

Run with `make soak` (`pytest -m soak`). SOAK_PRODUCTS sets the size (default 200 000).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from bson.objectid import ObjectId
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from migrations.versions._catalog import PRODUCTS
from orchestrator.stack import ManagedProcess, start_redis
from tests.faults.reconcile import reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import FAST, System

pytestmark = [pytest.mark.soak, pytest.mark.e2e]

SOAK_PRODUCTS = int(os.environ.get("SOAK_PRODUCTS", "200000"))
SOAK_TIMEOUT = float(os.environ.get("SOAK_TIMEOUT", "5400"))
INSERT_CHUNK = 10_000


def seed_many(db: Database, n: int) -> list[Any]:
    ids = [ObjectId() for _ in range(n)]
    for start in range(0, n, INSERT_CHUNK):
        chunk = ids[start : start + INSERT_CHUNK]
        db[PRODUCTS].insert_many([{"_id": i, "sku": f"S{start + k}"} for k, i in enumerate(chunk)])
    return ids


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    procs = [start_redis(log_dir=tmp_path / "redis")]
    yield procs
    for p in procs:
        p.stop()


@pytest.mark.timeout(SOAK_TIMEOUT + 600)
def test_soak_reconciles_exactly_after_errors_kills_and_a_redis_restart(
    settings: Settings, db: Database, tmp_path: Path, own_redis: list[ManagedProcess]
) -> None:
    started = time.monotonic()
    first = own_redis[0]
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    fast = {**FAST, "batch_size": 500, "max_in_flight": 8, "lease_seconds": 10.0}
    system = System(
        settings=replace(settings, **fast, redis_url=first.url), db=db, log_dir=tmp_path / "logs"
    )
    try:
        system.start_catalog("--error-rate", "0.1")
        system.migrate()
        ids = seed_many(db, SOAK_PRODUCTS)
        system.start_workers(3, concurrency=2)
        job_id = system.launch()
        meta = db[METADATA]
        n_batches = -(-SOAK_PRODUCTS // 500)

        def done_fraction() -> float:
            return meta.count_documents({"job_id": job_id, "kind": "batch", "status": "done"}) / (
                n_batches
            )

        events: list[str] = []
        for at in (0.25, 0.5):
            wait_sweeping(system, job_id, lambda a=at: done_fraction() >= a, timeout=SOAK_TIMEOUT)
            system.kill_workers()
            events.append(f"all workers SIGKILLed at {done_fraction():.0%}")
            system.start_workers(3, concurrency=2)
        wait_sweeping(system, job_id, lambda: done_fraction() >= 0.7, timeout=SOAK_TIMEOUT)
        first.kill()
        own_redis.append(start_redis(port=port, log_dir=tmp_path / "redis"))
        events.append(f"Redis SIGKILLed and restarted empty at {done_fraction():.0%}")
        assert done_fraction() < 1.0, "the job ended before the Redis restart"

        system.wait(job_id, timeout=SOAK_TIMEOUT)
        rec = reconcile(system, job_id, ids)
        stats = system.stats()
        errors = sum(v for k, v in stats["by_status"].items() if k.startswith("5"))
        job = meta.find_one({"_id": job_id}) or {}
        elapsed = time.monotonic() - started
        record(
            "9",
            title="soak",
            fault=f"soak: {SOAK_PRODUCTS:,} products, 10 % catalog 5xx, all workers killed "
            "twice, Redis restarted once",
            how="3 workers x 2 processes; " + "; ".join(events),
            outcome=f"{errors:,} catalog 5xx retried; {job.get('times_interrupted', 0)} "
            f"expired leases and {job.get('messages_resent', 0)} lost messages recovered; "
            f"{SOAK_PRODUCTS / elapsed:,.0f} products/s overall",
            rec=rec,
            seconds=elapsed,
        )
    finally:
        system.close()
