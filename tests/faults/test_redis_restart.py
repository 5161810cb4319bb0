"""Scenario 4: Redis restarts empty mid-job (no persistence); the sweeper recovers every batch."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
import redis
from pymongo.database import Database

from backfill_engine.settings import Settings
from backfill_engine.states import METADATA
from orchestrator.stack import ManagedProcess, start_redis
from tests.faults.reconcile import reconcile, wait_sweeping
from tests.faults.report import record
from tests.harness import FAST, System, seed_products

pytestmark = pytest.mark.e2e


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[list[ManagedProcess]]:
    """A private Redis (no persistence) the test may kill; a list so a restart can replace it."""
    procs = [start_redis(log_dir=tmp_path / "redis")]
    yield procs
    for p in procs:
        p.stop()


def test_redis_restarted_empty_mid_job_loses_no_batch(
    settings: Settings, db: Database, tmp_path: Path, own_redis: list[ManagedProcess]
) -> None:
    started = time.monotonic()
    first = own_redis[0]
    port = int(first.url.rsplit(":", 1)[1].split("/")[0])
    system = System(
        settings=replace(settings, **FAST, redis_url=first.url), db=db, log_dir=tmp_path / "logs"
    )
    try:
        system.start_catalog("--latency-ms", "200")
        system.migrate()
        ids = seed_products(db, 2000)
        system.start_workers(2, concurrency=2)
        job_id = system.launch(batch_size=100, max_in_flight=6)
        meta = db[METADATA]

        def count(status: str) -> int:
            return meta.count_documents({"job_id": job_id, "kind": "batch", "status": status})

        broker = redis.Redis.from_url(first.url)

        def waiting() -> int:
            return int(broker.llen(system.settings.queue))  # type: ignore[arg-type]

        # Killed while messages wait in Redis, or the restart loses nothing to recover: the
        # 4 slots hold one prefetched message each, so with 6 in flight about 2 wait there.
        wait_sweeping(
            system,
            job_id,
            lambda: count("done") >= 3 and waiting() >= 1,
            what="3 done batches and a message waiting in Redis",
        )
        queued = waiting()
        in_flight = count("queued") + count("running")
        first.kill()  # SIGKILL, no persistence: every queued and unacked message is gone
        own_redis.append(start_redis(port=port, log_dir=tmp_path / "redis"))
        assert count("done") < 20, "the job ended before Redis died: nothing was tested"

        system.wait(job_id)
        rec = reconcile(system, job_id, ids)
        job = meta.find_one({"_id": job_id}) or {}
        recovered = int(job.get("messages_resent", 0)) + int(job.get("times_interrupted", 0))
        assert recovered >= 1, "nothing was re-sent: the restart lost nothing to recover"
        record(
            "4",
            title="Redis restarted empty",
            fault="Redis (broker + rate-limit bucket) SIGKILLed and restarted without data",
            how="private redis-server, no persistence; killed after 3 of 20 batches with "
            f"{in_flight} batches queued/running ({queued} messages waiting), restarted on "
            "the same port; workers reconnect, the sweeper re-sends from MongoDB's batch state",
            outcome=f"{job.get('messages_resent', 0)} lost messages re-sent, "
            f"{job.get('times_interrupted', 0)} expired leases re-queued; job completed",
            rec=rec,
            seconds=time.monotonic() - started,
        )
    finally:
        system.close()
