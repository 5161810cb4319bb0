"""Scenario 5f: the database slows down; the workers hold back, say why, and go on after.

SecantusDB's failCommand blocks every update and client bulkWrite (the engine's product
writes, where the server takes one) of the workers' connections (appName filter) for
BLOCK_MS while it is on, as a saturated primary would. With a write-latency limit
below that, the workers' recent write p95 crosses it: they hold new sub-chunks back,
record the reason on the job (shown by `status` and the metrics) and probe the database
until it is fast again; the job then completes with every product written once.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import pymongo
import pytest
from rich.console import Console

from backfill_engine.states import METADATA
from orchestrator.metrics import JobMetrics
from orchestrator.progress import summary_table
from tests.faults.reconcile import reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import System, seed_products

pytestmark = pytest.mark.e2e

WORKER_APP_NAME = "mongo-backfill-worker"
BLOCK_MS = 300
LIMIT_MS = 100  # BACKFILL_MAX_WRITE_LATENCY_MS for this test's workers


@pytest.fixture
def failpoints(mongo_client: pymongo.MongoClient) -> Iterator[pymongo.MongoClient]:
    """The session server's admin client; the failpoint is switched off afterwards."""
    try:
        yield mongo_client
    finally:
        mongo_client.admin.command({"configureFailPoint": "failCommand", "mode": "off"})


def _throttled(system: System, job_id: str) -> dict[str, float]:
    """backfill_job_throttled of this job, by reason, as a scrape would export it."""
    out: dict[str, float] = {}
    for family in JobMetrics(lambda: system.db).collect():
        for s in family.samples:
            if s.name == "backfill_job_throttled" and s.labels["job"] == job_id:
                out[s.labels["reason"]] = s.value
    return out


def _status_text(system: System, job_id: str) -> str:
    console = Console(width=100, record=True, file=None, force_terminal=False)
    with console.capture() as captured:
        console.print(summary_table(system.summary(job_id)))
    return captured.get()


def test_slow_writes_hold_the_job_back_then_it_recovers_and_completes(
    system: System, failpoints: pymongo.MongoClient
) -> None:
    started = time.monotonic()
    ids = seed_products(system.db, 800)
    # Sub-chunks of 10: each worker process writes often enough to fill its window.
    system.settings = replace(system.settings, max_write_latency_ms=LIMIT_MS, subchunk_size=10)
    system.start_workers(2, concurrency=2)
    job_id = system.launch(batch_size=200, max_in_flight=4)
    meta = system.db[METADATA]

    def job() -> dict[str, Any]:
        return meta.find_one({"_id": job_id}) or {}

    wait_sweeping(
        system,
        job_id,
        lambda: meta.count_documents({"job_id": job_id, "kind": "batch", "processed": {"$gt": 0}}),
        what="first checkpoint",
    )
    assert "throttle" not in job(), "held back before the database was slow"

    how = {
        "failCommands": ["update", "bulkWrite"],
        "blockConnection": True,
        "blockTimeMS": BLOCK_MS,
        "appName": WORKER_APP_NAME,
    }
    failpoints.admin.command({"configureFailPoint": "failCommand", "mode": "alwaysOn", "data": how})
    wait_sweeping(
        system,
        job_id,
        lambda: (job().get("throttle") or {}).get("until", "open") is None,
        what="a worker recording that it holds the job back",
    )
    held = job()["throttle"]
    assert held["kind"] == "write_latency"
    assert held["reason"].startswith("write p95 ") and held["reason"].endswith(f"> {LIMIT_MS} ms")
    assert "held back: write p95" in _status_text(system, job_id)
    assert _throttled(system, job_id) == {"write_latency": 1.0, "replication_lag": 0.0}
    processed_when_held = sum(
        int(b["processed"]) for b in meta.find({"job_id": job_id, "kind": "batch"})
    )

    def still_held_later() -> bool:
        rec = job().get("throttle") or {}
        return rec.get("until", "open") is None and rec["seen_at"] > rec["since"]

    # Probes go on finding slow writes: the hold lasts, refreshed on the job, not released.
    wait_sweeping(system, job_id, still_held_later, what="the hold refreshed while still slow")

    failpoints.admin.command({"configureFailPoint": "failCommand", "mode": "off"})
    system.wait(job_id, timeout=240)
    rec = reconcile(system, job_id, ids)  # every product written once, nothing lost

    # Released by the holder itself once its probes were fast again, not just outlived.
    wait_sweeping(
        system,
        job_id,
        lambda: (job().get("throttle") or {}).get("until") is not None,
        what="the throttle record closed",
    )
    assert "last held back: write p95" in _status_text(system, job_id)
    assert _throttled(system, job_id) == {"write_latency": 0.0, "replication_lag": 0.0}
    batches = list(meta.find({"job_id": job_id, "kind": "batch"}))
    held_back = [b for b in batches if b["timings"].get("throttle_s", 0) > 0]
    assert held_back, "no batch recorded time held back"
    record(
        "5f",
        title="slow database writes: the workers hold back",
        fault="MongoDB: every worker update blocked",
        how=f"failCommand ['update'] blockConnection {BLOCK_MS} ms, alwaysOn until a worker "
        f"has refreshed its hold on the job; BACKFILL_MAX_WRITE_LATENCY_MS={LIMIT_MS}",
        outcome=f"held back ({held['reason']}) after {processed_when_held} of {len(ids)} "
        f"products; {len(held_back)} of {len(batches)} batches waited "
        f"{sum(b['timings']['throttle_s'] for b in batches):.1f} s in all; released by "
        "probes once writes were fast again",
        rec=rec,
        seconds=time.monotonic() - started,
    )
